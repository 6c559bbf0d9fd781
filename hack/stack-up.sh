#!/usr/bin/env bash
# Everything after "a cluster exists, KubeRay runs in it and the modeleval images are in it",
# shared by `make kind-up` (hack/kind-up.sh) and the test bed (tests/e2e/test_kind_up.py):
# MinIO and FerretDB as pods, the Secrets the operator and the example's namespace need, the
# chart, the examples' data published from inside the cluster, one example applied and followed
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
step() {
  local what=$1 started=$SECONDS
  shift
  printf '[stack] %s ...\n' "$what"
  if ! "$@"; then
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

# The examples' model and data, written to MinIO by a Job that runs the Ray image's modeleval
# CLI with the namespace's S3 Secret (so no port of the cluster needs to reach this machine).
publish_examples() {
  local image
  image=$(helm get values modeleval -n "$system" --all -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["ray"]["image"])')
  kubectl -n "$namespace" delete job publish-examples --ignore-not-found --wait=true >/dev/null
  kubectl -n "$namespace" apply -f - <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: publish-examples}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: publish
          image: $image
          command: [python, -m, modeleval.cli, publish-examples]
          env: [{name: AWS_ENDPOINT_URL_S3, value: "$s3_endpoint"}]
          envFrom: [{secretRef: {name: modeleval-s3}}]
          resources: {requests: {cpu: 100m, memory: 256Mi}}
EOF
  if ! kubectl -n "$namespace" wait --for=condition=Complete job/publish-examples --timeout=300s; then
    kubectl -n "$namespace" logs job/publish-examples --tail=20 >&2 || true
    return 1
  fi
  kubectl -n "$namespace" logs job/publish-examples
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
step "the examples' data published to MinIO (a Job in $namespace)" publish_examples
step "$(basename "$example") applied in $namespace" apply_example
step "waiting for the evaluation to succeed (at most $timeout s)" wait_for_success
kubectl -n "$namespace" get evaluations
printf '[stack] ready in %d s: kubectl -n %s get evaluations\n' $((SECONDS - total)) "$namespace"
