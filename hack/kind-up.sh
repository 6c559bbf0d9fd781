#!/usr/bin/env bash
# The same stack as the local test bed, for a user who has Docker: a kind cluster, KubeRay from
# its Helm chart, MinIO and FerretDB as in-cluster services, the modeleval images built and
# loaded, and the modeleval chart installed.
#
# It needs Docker, kind, kubectl and helm on PATH. It cannot run on machines without a Docker
# engine (such as the project's CI); `make test` uses the process-based bed instead.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cluster=${KIND_CLUSTER:-modeleval}
kuberay_chart_version=${KUBERAY_VERSION#v}
k8s_image="kindest/node:${KUBERNETES_VERSION}"

need() { command -v "$1" >/dev/null 2>&1 || { echo "kind-up: '$1' is required but not on PATH" >&2; exit 1; }; }
for tool in docker kind kubectl helm; do need "$tool"; done
docker info >/dev/null 2>&1 || { echo "kind-up: no Docker engine is reachable (docker info failed)" >&2; exit 1; }

if ! kind get clusters | grep -qx "$cluster"; then
  echo "[kind-up] creating kind cluster $cluster ($k8s_image)"
  kind create cluster --name "$cluster" --image "$k8s_image" --wait 120s
fi
kubectl config use-context "kind-$cluster"

echo "[kind-up] installing KubeRay $KUBERAY_VERSION from its Helm chart"
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ >/dev/null
helm repo update kuberay >/dev/null
helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "$kuberay_chart_version" \
  --namespace kuberay-system --create-namespace --wait

echo "[kind-up] building and loading the modeleval images"
docker build -t modeleval/operator:dev -f "$root/images/operator/Dockerfile" "$root"
docker build -t modeleval/ray:dev -f "$root/images/ray/Dockerfile" "$root"
kind load docker-image --name "$cluster" modeleval/operator:dev modeleval/ray:dev

echo "[kind-up] starting MinIO and FerretDB in namespace modeleval-deps"
kubectl apply -f "$here/kind/dependencies.yaml"
kubectl -n modeleval-deps rollout status deploy/minio deploy/ferretdb --timeout=180s

echo "[kind-up] installing the modeleval chart"
helm upgrade --install modeleval "$root/charts/modeleval" --namespace modeleval-system \
  --create-namespace --wait \
  --set image.repository=modeleval/operator --set image.tag=dev \
  --set ray.image=modeleval/ray:dev \
  --set s3.endpoint=http://minio.modeleval-deps:9000 \
  --set mongodb.uriSecret.name=modeleval-mongodb

echo "[kind-up] ready: kubectl apply -f examples/ && kubectl get evaluations -w"
