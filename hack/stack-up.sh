#!/usr/bin/env bash
# Everything after "a cluster exists, KubeRay runs in it and the modeleval images are in it",
# shared by `make kind-up` (hack/kind-up.sh) and the test bed (tests/e2e/test_kind_up.py):
# MinIO and FerretDB as pods, the Secrets the operator and the example's namespace need, the
# chart, the examples' data published through a port-forward, one example applied and followed
# until it Succeeded, then `kubectl get evaluations`. Each step says what it does and how long
# it took. Uses kubectl and helm on PATH, against the current context.
#
#   MINIO_IMAGE, FERRETDB_IMAGE   the dependencies' images (default: the upstream ones)
#   STACK_NAMESPACE               the example's namespace (default: demo)
#   STACK_EXAMPLE                 the manifest applied (default: examples/mslr-ranker.yaml)
#   STACK_TIMEOUT                 seconds the example may take (default: 900)
#
# Namespaces that already exist are used as they are (the bed's carry the annotations that put
# their pods on its real node). Run it again to repeat the example: the rest is idempotent.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
MINIO_IMAGE=${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-10-15T17-29-55Z}
FERRETDB_IMAGE=${FERRETDB_IMAGE:-ghcr.io/ferretdb/ferretdb:1.24.2}
namespace=${STACK_NAMESPACE:-demo}
example=${STACK_EXAMPLE:-$root/examples/mslr-ranker.yaml}
timeout=${STACK_TIMEOUT:-900}
system=modeleval-system
deps=modeleval-deps
s3_endpoint=http://minio.$deps.svc.cluster.local:9000
mongodb_uri=mongodb://ferretdb.$deps.svc.cluster.local:27017/

# step 'WHAT' COMMAND...: announces WHAT, runs COMMAND, says how long it took (or that it failed).
# COMMAND runs in a subshell with errexit, which bash ignores inside an `if` or `||` test.
step() {
  local what=$1 started=$SECONDS rc
  shift
  printf '[stack] %s ...\n' "$what"
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    printf '[stack] %s: failed after %d s\n' "$what" $((SECONDS - started)) >&2
    exit 1
  fi
  printf '[stack] %s: done in %d s\n' "$what" $((SECONDS - started))
}

ensure_namespace() {
  kubectl get namespace "$1" >/dev/null 2>&1 || kubectl create namespace "$1"
}

# apply_secret NAMESPACE NAME KEY=VALUE...: creates or updates a generic Secret.
apply_secret() {
  local ns=$1 name=$2 pair
  shift 2
  local -a literals=()
  for pair in "$@"; do literals+=("--from-literal=$pair"); done
  kubectl -n "$ns" create secret generic "$name" "${literals[@]}" --dry-run=client -o yaml \
    | kubectl apply -f - >/dev/null
  echo "secret/$name in $ns"
}

secret_value() {
  kubectl -n "$1" get secret "$2" -o "jsonpath={.data.$3}" | base64 -d
}

dependencies() {
  ensure_namespace "$deps"
  if ! kubectl -n "$deps" get secret minio-root >/dev/null 2>&1; then  # keep it on a rerun
    apply_secret "$deps" minio-root MINIO_ROOT_USER=modeleval \
      "MINIO_ROOT_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  fi
  sed -e "s#@MINIO_IMAGE@#$MINIO_IMAGE#" -e "s#@FERRETDB_IMAGE@#$FERRETDB_IMAGE#" \
    "$here/stack/dependencies.yaml" | kubectl apply -f -
  kubectl -n "$deps" rollout status deploy/minio deploy/ferretdb --timeout=300s
}

secrets() {
  local user password
  user=$(secret_value "$deps" minio-root MINIO_ROOT_USER)
  password=$(secret_value "$deps" minio-root MINIO_ROOT_PASSWORD)
  ensure_namespace "$system"
  ensure_namespace "$namespace"
  # The operator's own results database, and the example namespace's S3 and MongoDB credentials
  # (a tenant's work runs with the Secrets in its own namespace).
  apply_secret "$system" modeleval-mongodb "MONGODB_URI=$mongodb_uri"
  apply_secret "$namespace" modeleval-s3 "AWS_ACCESS_KEY_ID=$user" "AWS_SECRET_ACCESS_KEY=$password"
  apply_secret "$namespace" modeleval-mongodb "MONGODB_URI=$mongodb_uri"
}

chart() {
  helm upgrade --install modeleval "$root/charts/modeleval" --namespace "$system" \
    --set "s3.endpoint=$s3_endpoint" --set "watchNamespaces={$namespace}" --wait --timeout 5m
}

# The examples' model and data, written to MinIO through a port-forward by the modeleval CLI
# (`make venv` installs it): training the example ranker needs scikit-learn, which the images
# leave out.
publish_examples() {
  local cli log port="" pf
  cli=$(command -v modeleval || true)
  if [ -x "$root/.venv/bin/modeleval" ]; then cli=$root/.venv/bin/modeleval; fi
  [ -n "$cli" ] || { echo "no modeleval CLI on PATH or in .venv: run make venv" >&2; return 1; }
  log=$(mktemp)
  kubectl -n "$deps" port-forward svc/minio :9000 >"$log" 2>&1 &
  pf=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && break
    sleep 0.2
  done
  local rc=0
  if [ -z "$port" ]; then
    echo "kubectl port-forward to MinIO did not start:" >&2
    cat "$log" >&2
    rc=1
  else
    AWS_ENDPOINT_URL_S3=http://127.0.0.1:$port AWS_DEFAULT_REGION=us-east-1 \
      AWS_ACCESS_KEY_ID=$(secret_value "$deps" minio-root MINIO_ROOT_USER) \
      AWS_SECRET_ACCESS_KEY=$(secret_value "$deps" minio-root MINIO_ROOT_PASSWORD) \
      "$cli" publish-examples || rc=$?
  fi
  kill "$pf" 2>/dev/null || true
  wait "$pf" 2>/dev/null || true
  rm -f "$log"
  return "$rc"
}

apply_example() {
  kubectl -n "$namespace" delete -f "$example" --ignore-not-found --wait=true >/dev/null
  kubectl -n "$namespace" apply -f "$example"
}

wait_for_success() {
  local name phase="" deadline=$((SECONDS + timeout))
  name=$(kubectl create --dry-run=client -o 'jsonpath={.metadata.name}' -f "$example")
  while [ $SECONDS -lt "$deadline" ]; do
    phase=$(kubectl -n "$namespace" get evaluation "$name" -o 'jsonpath={.status.phase}' 2>/dev/null || true)
    case $phase in
      Succeeded) echo "evaluation/$name Succeeded"; return 0 ;;
      Failed)
        echo "evaluation/$name Failed: $(kubectl -n "$namespace" get evaluation "$name" \
          -o 'jsonpath={.status.conditions[-1].reason}: {.status.conditions[-1].message}')" >&2
        return 1 ;;
    esac
    sleep 3
  done
  echo "evaluation/$name did not finish within ${timeout} s (phase: ${phase:-none})" >&2
  return 1
}

total=$SECONDS
step "MinIO and FerretDB as pods in $deps" dependencies
step "Secrets for the operator ($system) and the example's namespace ($namespace)" secrets
step "the modeleval chart (release modeleval in $system, watching $namespace)" chart
step "the examples' data published to MinIO (modeleval publish-examples, through a port-forward)" publish_examples
step "$(basename "$example") applied in $namespace" apply_example
step "waiting for the evaluation to succeed (at most $timeout s)" wait_for_success
kubectl -n "$namespace" get evaluations
printf '[stack] ready in %d s: kubectl -n %s get evaluations\n' $((SECONDS - total)) "$namespace"
