#!/usr/bin/env bash
# `make kind-up`: the kind-specific part of the stack for a user with Docker: a kind cluster,
# KubeRay from its Helm chart (unless the cluster already runs it), the modeleval images built
# with Docker and loaded into the cluster. The rest (dependencies, Secrets, the chart, the
# examples, one evaluation followed until it Succeeded) is hack/stack-up.sh, which the test bed
# runs too. Needs docker, kind, kubectl and helm on PATH. `make kind-down` deletes the cluster.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
cluster=${KIND_CLUSTER:-modeleval}
node_image=${KIND_NODE_IMAGE:-kindest/node:$KUBERNETES_VERSION}

# step 'WHAT' COMMAND...: as in stack-up.sh (COMMAND in a subshell with errexit).
step() {
  local what=$1 started=$SECONDS rc
  shift
  printf '[kind-up] %s ...\n' "$what"
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  [ "$rc" -eq 0 ] || { printf '[kind-up] %s: failed after %d s\n' "$what" $((SECONDS - started)) >&2; exit 1; }
  printf '[kind-up] %s: done in %d s\n' "$what" $((SECONDS - started))
}

# The tag an image's Dockerfile gives itself (its `-t NAME` comment): the chart's default.
image_tag() { sed -n 's/^#.* -t \([^ ]*\) .*$/\1/p' "$root/images/$1/Dockerfile" | head -n 1; }

check_tools() {
  local tool
  for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "kind-up: '$tool' is required but not on PATH" >&2; return 1; }
  done
  docker info >/dev/null 2>&1 || { echo "kind-up: no Docker engine is reachable (docker info failed)" >&2; return 1; }
}

create_cluster() {
  if kind get clusters | grep -qx "$cluster"; then
    echo "kind cluster $cluster exists"
  else
    kind create cluster --name "$cluster" --image "$node_image" --wait 120s
  fi
  kubectl config use-context "kind-$cluster"
}

install_kuberay() {
  if kubectl get crd rayclusters.ray.io >/dev/null 2>&1; then
    echo "KubeRay's CRDs are installed already: left as they are"
    return
  fi
  helm repo add kuberay https://ray-project.github.io/kuberay-helm/ >/dev/null
  helm repo update kuberay >/dev/null
  helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "${KUBERAY_VERSION#v}" \
    --namespace kuberay-system --create-namespace --wait
}

build_and_load_images() {
  local name tags=()
  for name in operator ray; do
    tags+=("$(image_tag "$name")")
    docker build -t "${tags[-1]}" -f "$root/images/$name/Dockerfile" "$root"
  done
  kind load docker-image --name "$cluster" "${tags[@]}"
}

total=$SECONDS
step "checking docker, kind, kubectl and helm" check_tools
step "kind cluster $cluster ($node_image)" create_cluster
step "KubeRay $KUBERAY_VERSION" install_kuberay
step "building the operator and Ray images and loading them into $cluster" build_and_load_images
"$here/stack-up.sh"
printf '[kind-up] done in %d s; remove it all with: make kind-down\n' $((SECONDS - total))
