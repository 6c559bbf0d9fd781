#!/usr/bin/env bash
# Builds the local test bed's tools from the Go module proxy into a cache directory outside the
# checkout, one directory per tool and version, so a fresh clone reuses what is already built.
#
#   hack/build-tools.sh [TOOL ...]     TOOL: packages kubernetes kubernetes-node etcd kwok helm
#                                            kuberay minio ferretdb coredns kube-network-policies
#                                            runc-wrapper kafka kueue
#
# Nothing prebuilt is downloaded and no third-party source is kept in the repository: modules
# whose go.mod uses local replace directives (Kubernetes, etcd) are built through a wrapper
# module generated here that names the published versions of those sibling modules.
#
# The real node of the test bed also needs Debian packages (containerd, runc, the CNI plugins,
# iptables, conntrack, iproute2): `packages` installs those that are missing with apt-get.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${MODELEVAL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modeleval/tools}

if ! command -v go >/dev/null 2>&1; then
  echo "make tools: 'go' is not on PATH. Install Go 1.25 or newer (https://go.dev/doc/install) and retry." >&2
  exit 1
fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[tools] %s\n' "$*" >&2; }

# out_dir TOOL VERSION: where a tool is built; is_built: whether that build completed.
out_dir() { printf '%s/%s-%s' "$cache" "$1" "$2"; }
is_built() { [ -f "$(out_dir "$1" "$2")/.complete" ]; }
mark_built() { date -u +%FT%TZ > "$(out_dir "$1" "$2")/.complete"; }

# wrapper_module DIR MODULE VERSION SIBLING_VERSION: a module of our own requiring MODULE@VERSION,
# with every local `=> ./staging/...` or `=> ../x` replace of MODULE's go.mod turned into the
# published sibling module at SIBLING_VERSION (replace directives of a dependency are ignored).
wrapper_module() {
  local dir=$1 module=$2 version=$3 sibling=$4 gomod
  mkdir -p "$dir"
  gomod=$(go mod download -json "$module@$version" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  {
    echo "module modeleval.local/tools/$(basename "$dir")"
    echo
    echo "go 1.25"
    echo
    echo "require $module $version"
    echo
    echo "replace ("
    awk -v v="$sibling" '
      /=>/ && $3 ~ /^\.\.?\// && $3 !~ /FORBIDDEN/ { print "\t" $1 " => " $1 " " v }
      /^replace .*=>/ && $4 ~ /^\.\.?\// && $4 !~ /FORBIDDEN/ { print "\t" $2 " => " $2 " " v }
    ' "$gomod"
    echo ")"
  } > "$dir/go.mod"
}

# kubernetes_binaries TOOL PACKAGE...: commands of k8s.io/kubernetes, built through the wrapper
# module with real version strings, into TOOL's directory (the control plane and the node share
# the wrapper module and the Go caches).
kubernetes_binaries() {
  local tool=$1 v=$KUBERNETES_VERSION out; shift; out=$(out_dir "$tool" "$v")
  is_built "$tool" "$v" && { log "$tool $v: cached in $out"; return; }
  log "$tool $v: building ${*##*/} (tens of minutes cold)"
  local w="$cache/src/kubernetes-$v"
  [ -f "$w/go.mod" ] || wrapper_module "$w" k8s.io/kubernetes "$v" "v0.${v#v1.}"
  local major minor; major=${v#v}; major=${major%%.*}; minor=${v#v*.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$out"
  (cd "$w" && go mod download k8s.io/kubernetes && go build -trimpath -ldflags "$ld" -o "$out/" "$@")
  mark_built "$tool" "$v"
}

build_kubernetes() {
  kubernetes_binaries kubernetes k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
}

build_kubernetes_node() {
  kubernetes_binaries kubernetes-node k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}

build_etcd() {
  local v=$ETCD_VERSION out; out=$(out_dir etcd "$v")
  is_built etcd "$v" && { log "etcd $v: cached in $out"; return; }
  log "etcd $v: building"
  local w="$cache/src/etcd-$v"
  wrapper_module "$w" go.etcd.io/etcd/server/v3 "$v" "$v"
  mkdir -p "$out"
  (cd "$w" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
  mark_built etcd "$v"
}

# go_install TOOL VERSION MODULE PACKAGE...: builds packages of MODULE@VERSION from a module of
# our own that requires it (plain `go install pkg@version` also asks the proxy for the module's
# version list, which it refuses for some modules).
go_install() {
  local tool=$1 v=$2 module=$3 out w; shift 3; out=$(out_dir "$tool" "$v")
  is_built "$tool" "$v" && { log "$tool $v: cached in $out"; return; }
  log "$tool $v: building $*"
  w="$cache/src/$tool-$v"
  mkdir -p "$out" "$w"
  printf 'module modeleval.local/tools/%s\n\ngo 1.25\n\nrequire %s %s\n' "$tool" "$module" "$v" > "$w/go.mod"
  (cd "$w" && go mod download "$module" && go build -trimpath -ldflags "-s -w" -o "$out/" "$@")
}

build_kwok() {
  go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
  mark_built kwok "$KWOK_VERSION"
}

build_helm() {
  go_install helm "$HELM_VERSION" helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm
  mark_built helm "$HELM_VERSION"
}

build_kuberay() {
  local v=$KUBERAY_VERSION out; out=$(out_dir kuberay "$v")
  is_built kuberay "$v" && { log "kuberay $v: cached in $out"; return; }
  go_install kuberay "$v" github.com/ray-project/kuberay/ray-operator github.com/ray-project/kuberay/ray-operator
  mv "$out/ray-operator" "$out/kuberay-operator"
  # The CRDs ship inside the module: copy them beside the binary.
  local src; src=$(go mod download -json "github.com/ray-project/kuberay/ray-operator@$v" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$out/crds"
  cp "$src"/config/crd/bases/ray.io_*.yaml "$out/crds/"
  chmod u+w "$out"/crds/*.yaml
  mark_built kuberay "$v"
}

build_minio() {
  go_install minio "$MINIO_VERSION" github.com/minio/minio github.com/minio/minio
  mark_built minio "$MINIO_VERSION"
}

build_ferretdb() {
  # FerretDB's own command panics when built from the module proxy (it wants a version file its
  # release tooling generates); hack/ferretdb/main.go runs its embeddable package instead.
  local v=$FERRETDB_VERSION out w; out=$(out_dir ferretdb "$v")
  is_built ferretdb "$v" && { log "ferretdb $v: cached in $out"; return; }
  log "ferretdb $v: building (embedded package, hack/ferretdb/main.go)"
  w="$cache/src/ferretdb-$v"
  mkdir -p "$out" "$w"
  printf 'module modeleval.local/tools/ferretdb\n\ngo 1.25\n\nrequire github.com/FerretDB/FerretDB %s\n' "$v" > "$w/go.mod"
  cp "$here/ferretdb/main.go" "$w/main.go"
  (cd "$w" && go mod download github.com/FerretDB/FerretDB && go build -trimpath -ldflags "-s -w" -o "$out/ferretdb" .)
  mark_built ferretdb "$v"
}

build_coredns() {
  go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns github.com/coredns/coredns
  mark_built coredns "$COREDNS_VERSION"
}

build_kube_network_policies() {
  # The NetworkPolicy enforcer kind ships (nfqueue): the real node enforces the policies the
  # operator and the chart create. Its command is the module's package `cmd`.
  local v=$KUBE_NETWORK_POLICIES_VERSION out; out=$(out_dir kube-network-policies "$v")
  is_built kube-network-policies "$v" && { log "kube-network-policies $v: cached in $out"; return; }
  go_install kube-network-policies "$v" sigs.k8s.io/kube-network-policies sigs.k8s.io/kube-network-policies/cmd
  mv "$out/cmd" "$out/kube-network-policies"
  mark_built kube-network-policies "$v"
}

build_runc_wrapper() {
  # Our own program (hack/runc-wrapper): rebuilt when its source changes.
  local out="$cache/runc-wrapper" sum
  sum=$(cat "$here"/runc-wrapper/go.mod "$here"/runc-wrapper/*.go | sha256sum | cut -c1-16)
  if [ -x "$out/runc-wrapper" ] && [ "$(cat "$out/.source" 2>/dev/null)" = "$sum" ]; then
    log "runc-wrapper: cached in $out"; return
  fi
  log "runc-wrapper: building (hack/runc-wrapper)"
  mkdir -p "$out"
  (cd "$here/runc-wrapper" && go build -trimpath -ldflags "-s -w" -o "$out/runc-wrapper" .)
  echo "$sum" > "$out/.source"
}

build_kafka() {
  # Apache Kafka's broker (KRaft) from its jars on Maven Central: a generated pom names
  # org.apache.kafka:kafka_2.13 and Maven (Debian's) copies it and its runtime dependencies.
  # It runs on Debian's JRE 17; only the e2e tests of event sinks start it.
  local v=$KAFKA_VERSION out w; out=$(out_dir kafka "$v")
  is_built kafka "$v" && { log "kafka $v: cached in $out"; return; }
  # shellcheck disable=SC2086  # a list of package names
  "$here/apt-install.sh" $KAFKA_PACKAGES
  log "kafka $v: resolving org.apache.kafka:kafka_2.13 and its runtime dependencies (Maven Central)"
  w="$cache/src/kafka-$v"
  mkdir -p "$out" "$w"
  cat > "$w/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>modeleval.local</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$v</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$out/libs"
  (cd "$w" && mvn -B -q -Dmaven.repo.local="$cache/src/m2" dependency:copy-dependencies \
     -DincludeScope=runtime -DoutputDirectory="$out/libs")
  mark_built kafka "$v"
}

build_kueue() {
  # Kueue's controller manager and its CRDs (config/components/crd/bases in the module), for the
  # e2e test of queued evaluations; the bed starts it only when that test asks for it.
  local v=$KUEUE_VERSION out; out=$(out_dir kueue "$v")
  is_built kueue "$v" && { log "kueue $v: cached in $out"; return; }
  go_install kueue "$v" sigs.k8s.io/kueue sigs.k8s.io/kueue/cmd/kueue
  local src; src=$(go mod download -json "sigs.k8s.io/kueue@$v" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$out/crds"
  cp "$src"/config/components/crd/bases/kueue.x-k8s.io_*.yaml "$out/crds/"
  chmod u+w "$out"/crds/*.yaml
  mark_built kueue "$v"
}

build_packages() {
  # Debian packages of the real node; installed only when missing.
  # shellcheck disable=SC2086  # a list of package names
  "$here/apt-install.sh" $NODE_PACKAGES
}

all=(packages kubernetes kubernetes-node etcd kwok helm kuberay minio ferretdb coredns kube-network-policies runc-wrapper kafka kueue)
[ $# -gt 0 ] || set -- "${all[@]}"
mkdir -p "$cache"
for t in "$@"; do
  case $t in
    packages|kubernetes|kubernetes-node|etcd|kwok|helm|kuberay|minio|ferretdb|coredns|kube-network-policies|runc-wrapper|kafka|kueue)
      "build_${t//-/_}" ;;
    *) echo "make tools: unknown tool '$t' (known: ${all[*]})" >&2; exit 2 ;;
  esac
done
log "all tools ready in $cache"
