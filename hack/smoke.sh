#!/usr/bin/env bash
# The newcomer's path on the local test bed (make smoke): the bed with its real node, the chart
# installed with the images `make images` built, the examples published, one evaluation applied
# and followed to the end. Prints each command as a user would type it, then its output.
# Exits 0 only when the evaluation Succeeded; the bed is left running (make cluster-down stops it).
set -euo pipefail
cd "$(dirname "$0")/.."

BED_DIR=${BED_DIR:-/tmp/modeleval-bed}
NAMESPACE=${SMOKE_NAMESPACE:-demo}
EXAMPLE=${SMOKE_EXAMPLE:-examples/mslr-ranker.yaml}
TIMEOUT=${SMOKE_TIMEOUT:-900}
VENV=${VENV:-.venv}

# run 'COMMAND': prints the command unexpanded (no secret reaches the terminal), then runs it.
run() { printf '$ %s\n' "$1"; eval "$1"; }
fail() { printf 'make smoke: %s\n' "$*" >&2; exit 1; }

if [ ! -f "$BED_DIR/state.json" ]; then
  run "make cluster-up BED_DIR=$BED_DIR"
fi
# shellcheck disable=SC1091
source "$BED_DIR/bed.env"
export PATH="$PWD/$VENV/bin:$PATH"
name=$(awk '/^metadata:/{m=1} m && /^  name:/{print $2; exit}' "$EXAMPLE")

# Namespaces on the real node: the bed's admission plugins add its node selector and toleration
# to every pod created in a namespace with these annotations (kwok nodes take everything else).
real_node_namespace() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $1
  annotations:
    scheduler.alpha.kubernetes.io/node-selector: modeleval.dev/node=real
    scheduler.alpha.kubernetes.io/defaultTolerations: '[{"key":"modeleval.dev/real-node","operator":"Exists","effect":"NoSchedule"}]'
EOF
  echo "namespace/$1 on the real node"
}

run 'real_node_namespace modeleval-system'
run 'kubectl -n modeleval-system create secret generic modeleval-mongodb --from-literal=MONGODB_URI="$MODELEVAL_MONGODB_URI" --dry-run=client -o yaml | kubectl apply -f -'
run "real_node_namespace $NAMESPACE"
run "helm upgrade --install modeleval charts/modeleval -n modeleval-system --set s3.endpoint=\"\$AWS_ENDPOINT_URL_S3\" --set 'watchNamespaces={$NAMESPACE}' --wait --timeout 5m"
run "kubectl -n $NAMESPACE create secret generic modeleval-s3 --from-literal=AWS_ACCESS_KEY_ID=\"\$AWS_ACCESS_KEY_ID\" --from-literal=AWS_SECRET_ACCESS_KEY=\"\$AWS_SECRET_ACCESS_KEY\" --dry-run=client -o yaml | kubectl apply -f -"
run "kubectl -n $NAMESPACE create secret generic modeleval-mongodb --from-literal=MONGODB_URI=\"\$MODELEVAL_MONGODB_URI\" --dry-run=client -o yaml | kubectl apply -f -"
run 'modeleval publish-examples'
run "kubectl delete -n $NAMESPACE -f $EXAMPLE --ignore-not-found --wait=true >/dev/null"
run "kubectl apply -n $NAMESPACE -f $EXAMPLE"

pods="kubectl get pods -A --field-selector spec.nodeName=real-node-1 -o custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,STATUS:.status.phase,CONTAINER:.status.containerStatuses[0].containerID"
deadline=$((SECONDS + TIMEOUT))
phase="" shown=""
while [ $SECONDS -lt $deadline ]; do
  phase=$(kubectl get evaluation "$name" -n "$NAMESPACE" -o 'jsonpath={.status.phase}' 2>/dev/null || true)
  case $phase in Succeeded|Failed) break ;; esac
  if [ "$phase" = Running ] && [ -z "$shown" ]; then  # the Ray pods, while they run
    run "kubectl get evaluations -n $NAMESPACE"
    run "$pods"
    shown=1
  fi
  sleep 3
done

run "kubectl get evaluations -n $NAMESPACE"
run "$pods"
run "kubectl describe evaluation $name -n $NAMESPACE | tail -8"
case $phase in
  Succeeded) echo "make smoke: $name Succeeded on the real node (the bed keeps running: make cluster-down stops it)" ;;
  Failed) fail "$name Failed: $(kubectl get evaluation "$name" -n "$NAMESPACE" -o 'jsonpath={.status.reason}: {.status.message}')" ;;
  *) fail "$name did not finish within ${TIMEOUT}s (phase: ${phase:-none}); logs: $BED_DIR/logs" ;;
esac
