#!/usr/bin/env bash
# Builds the project's images with no Docker engine (buildah, daemonless) into archives that
# `ctr -n k8s.io images import` loads, in a cache outside the checkout:
#
#   hack/build-images.sh                build what changed, then write $CACHE/index.json
#   hack/build-images.sh --print-keys   print each image's key and stop (needs no root, no buildah)
#
#   base      modeleval.local/python:3.11-bookworm-KEY: Debian bookworm made by debootstrap, with
#             /usr/local a Python venv, in place of python:3.11-slim (no registry is reachable)
#   pause     modeleval.local/pause:1.0: hack/pause, the sandbox image for containerd
#   operator  modeleval/operator:0.1.0 and ray  modeleval/ray:0.1.0: images/*/Dockerfile built
#             by `buildah bud --build-arg BASE_IMAGE=<base>`; the tags are the Dockerfiles' own
#   minio     modeleval.local/minio:VERSION and ferretdb  modeleval.local/ferretdb:VERSION: the
#             static binaries `make tools` built, alone in an image, for hack/stack-up.sh's
#             in-cluster dependencies on the real node; skipped (with a line) until make tools ran
#
# CACHE is ${MODELEVAL_IMAGES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modeleval/images}. Each image
# is keyed on a sha256 of its inputs (Dockerfile, lock, pyproject.toml, README.md, the sources
# under operator/ and the base's key; the base on the Debian suite, packages and mirror; pause on
# hack/pause) and on the recipe below. An image whose archive for its key exists is skipped, so an
# unchanged rebuild takes seconds; `buildah bud --layers` reuses the dependency layers when only
# sources change. $CACHE/index.json lists {name, ref, archive, key, image_id} per image.
# Each step logs to $CACHE/logs/STEP.log; a failing step prints its log's last 20 lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${MODELEVAL_IMAGES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modeleval/images}
logs=$cache/logs
work=$cache/work

SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
BASE_REPO=modeleval.local/python
PAUSE_REF=modeleval.local/pause:1.0
PYTHON_PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
tools=${MODELEVAL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modeleval/tools}
DEPENDENCY_IMAGES=(minio ferretdb)

say() { printf '[images] %s\n' "$*" >&2; }

# --- inputs and keys (no root needed) --------------------------------------------------------

# The Debian mirror apt uses here (deb822 .sources or one-line .list), for the suite; else
# deb.debian.org. MODELEVAL_DEBIAN_MIRROR overrides.
debian_mirror() {
  if [ -n "${MODELEVAL_DEBIAN_MIRROR:-}" ]; then echo "$MODELEVAL_DEBIAN_MIRROR"; return; fi
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    uri=$(awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" } {
        types = uris = suites = ""
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^Types:/)  { sub(/^Types:[ \t]*/, "", line);  types = " " line " " }
          if (line ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", line);   uris = line }
          if (line ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", line); suites = " " line " " }
        }
        if (types ~ / deb / && suites ~ (" " suite " ") && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo http://deb.debian.org/debian
}

sha() { sha256sum | cut -c1-16; }

# hash_files: NUL-separated paths relative to the checkout on stdin -> "sha256  path" lines, sorted.
hash_files() {
  local f
  while IFS= read -r -d '' f; do [ -f "$root/$f" ] && printf '%s\0' "$f"; done \
    | LC_ALL=C sort -z | (cd "$root" && xargs -0 -r sha256sum --)
}

# The sources the images copy: operator/ as git sees the working tree (tracked and untracked,
# not ignored), or every file but bytecode outside a git checkout.
source_files() {
  if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$root" ls-files -z --cached --others --exclude-standard -- operator
  else
    (cd "$root" && find operator -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
       ! -path '*.egg-info/*' -print0)
  fi
}

# The reference the Dockerfile's own `-t NAME` comment gives, as containerd names it.
dockerfile_ref() {
  local name
  name=$(sed -n 's/^#.* -t \([^ ]*\) .*$/\1/p' "$root/images/$1/Dockerfile" | head -n 1)
  [ -n "$name" ] || { echo "make images: no '-t NAME' comment in images/$1/Dockerfile" >&2; exit 1; }
  normalize_ref "$name"
}

# docker.io/library/x, docker.io/org/x: the names containerd (and the kubelet) give short names.
normalize_ref() {
  local ref=$1 first=${1%%/*}
  if [[ $ref != */* ]]; then ref=docker.io/library/$ref
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then ref=docker.io/$ref
  fi
  [[ ${ref##*/} == *:* || $ref == *@* ]] || ref=$ref:latest
  echo "$ref"
}

# app_key NAME: the key of images/NAME/Dockerfile's image.
app_key() {
  {
    echo "base=$base_key"
    printf '%s\0' "images/$1/Dockerfile" requirements.lock pyproject.toml setup.py README.md .dockerignore | hash_files
    source_files | hash_files
    declare -f build_app
  } | sha
}

# Sets mirror, base_key, base_ref and NAME_key, NAME_ref for pause, operator and ray (the last
# two pairs are read through key_of and ref_of).
# shellcheck disable=SC2034
compute_keys() {
  mirror=$(debian_mirror)
  base_key=$({ printf 'suite=%s\npackages=%s\nmirror=%s\narch=%s\n' "$SUITE" "$PACKAGES" "$mirror" "$(uname -m)"
               declare -f make_rootfs build_base; } | sha)
  base_ref=$BASE_REPO:3.11-$SUITE-$base_key
  pause_key=$({ (cd "$root" && find hack/pause -type f -print0) | hash_files; declare -f build_pause; } | sha)
  pause_ref=$PAUSE_REF
  operator_key=$(app_key operator)
  operator_ref=$(dockerfile_ref operator)
  ray_key=$(app_key ray)
  ray_ref=$(dockerfile_ref ray)
  minio_ref=modeleval.local/minio:$MINIO_VERSION
  minio_key=$(binary_key minio)
  ferretdb_ref=modeleval.local/ferretdb:$FERRETDB_VERSION
  ferretdb_key=$(binary_key ferretdb)
}

binary_of() { local v="${1^^}_VERSION"; echo "$tools/$1-${!v}/$1"; }

# binary_key NAME: the key of an image holding only `make tools`' NAME binary ("" when not built).
binary_key() {
  local binary; binary=$(binary_of "$1")
  [ -f "$binary" ] || return 0
  { sha256sum <"$binary"; declare -f build_binary_image; } | sha
}

key_of() { local v="${1}_key"; echo "${!v}"; }
ref_of() { local v="${1}_ref"; echo "${!v}"; }
archive_of() { echo "$cache/$1-$(key_of "$1").tar"; }

# --- build steps (each runs in a subshell with its output in logs/STEP.log) -------------------

# umount whatever debootstrap left mounted under a root file system, then delete it (root-owned).
remove_rootfs() {
  local dir=$1 m
  [ -e "$dir" ] || return 0
  findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1' | sort -r | while read -r m; do
    umount -l "$m" || true
  done
  rm -rf --one-file-system "$dir"
}

make_rootfs() {
  local rootfs=$1
  remove_rootfs "$rootfs"
  mkdir -p "$(dirname "$rootfs")"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror"
}

# /usr/local becomes a venv, so `python` and `pip` on PATH are the venv's (Debian's own Python is
# externally managed) and `pip install --prefix=/install` copied into /usr/local works as on
# python:3.11-slim.
build_base() {
  local rootfs=$1 ref=$2 ctr mnt
  local -a inroot=(chroot "$rootfs" /usr/bin/env -i PATH="$PYTHON_PATH" LANG=C.UTF-8 HOME=/root)
  "${inroot[@]}" /usr/bin/python3 -m venv /usr/local
  "${inroot[@]}" python -c 'import sys, ssl, venv; assert sys.prefix == "/usr/local", sys.prefix'
  "${inroot[@]}" pip --version
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/apt/* "$rootfs"/var/log/dpkg.log \
    "$rootfs"/var/log/bootstrap.log
  : >"$rootfs/etc/resolv.conf"; : >"$rootfs/etc/hostname"
  ctr=$(buildah from --name "modeleval-base-$$" scratch)
  mnt=$(buildah mount "$ctr")
  cp -a "$rootfs"/. "$mnt"/
  buildah umount "$ctr"
  buildah config --env PATH="$PYTHON_PATH" --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="Debian $SUITE ($PACKAGES), /usr/local a venv" "$ctr"
  buildah commit --format docker --rm "$ctr" "$ref"
  # Older bases are no longer referenced by any key: untag them (layers in use stay).
  buildah images --noheading --format '{{.Name}}:{{.Tag}}' \
    | grep -F "$BASE_REPO:" | grep -vxF "$ref" | xargs -r -n 1 buildah rmi || true
}

build_pause() {
  local out=$1 ref=$2 ctr
  mkdir -p "$out"
  (cd "$root/hack/pause" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS='' \
     go build -trimpath -ldflags '-s -w' -o "$out/pause" .)
  ctr=$(buildah from --name "modeleval-pause-$$" scratch)
  buildah copy --chmod 0755 "$ctr" "$out/pause" /pause
  buildah config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 "$ctr"
  buildah commit --format docker --rm "$ctr" "$ref"
  rm -f "$out/pause"
}

build_binary_image() {
  local name=$1 ref=$2 ctr
  ctr=$(buildah from --name "modeleval-$name-$$" scratch)
  buildah copy --chmod 0755 "$ctr" "$(binary_of "$name")" "/$name"
  buildah config --entrypoint "[\"/$name\"]" --cmd '' "$ctr"
  buildah commit --format docker --rm "$ctr" "$ref"
}

# Chroot isolation needs no OCI runtime (buildah only recommends runc); RUN steps use the host's
# network for pip, and trust the host's CA bundle while they run (where HTTPS goes through a
# proxy with its own CA, that CA is in the host's bundle only): the bundle and a pip.conf naming
# it are mounted for the build, never written into an image.
build_app() {
  local name=$1 tag=$2 base=$3 bundle=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  local -a mounts=()
  if [ -r "$bundle" ]; then
    mkdir -p "$work"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/pip.conf"
    mounts=(--volume "$bundle:/etc/ssl/certs/ca-certificates.crt:ro"
            --volume "$work/pip.conf:/etc/pip.conf:ro")
  fi
  buildah bud --format docker --pull-never --layers --force-rm --isolation chroot --network host \
    "${mounts[@]}" --build-arg BASE_IMAGE="$base" -f "$root/images/$name/Dockerfile" -t "$tag" "$root"
}

# Writes each image to $CACHE/NAME-KEY.tar (docker-archive named with its containerd reference)
# and NAME-KEY.json (its index entry); removes that image's archives of other keys.
export_images() {
  local name ref tag archive id old
  for name in "$@"; do
    ref=$(ref_of "$name"); archive=$(archive_of "$name")
    tag=$(local_tag "$name")
    id=$(buildah images --noheading --no-trunc --format '{{.ID}}' "$tag" | head -n 1)
    id=sha256:${id#sha256:}
    rm -f "$archive.tmp"
    # By image ID, so that the archive names the image by $ref alone (not also localhost/...).
    echo "$name: buildah push $id ($tag) docker-archive:$archive:$ref"
    buildah push "$id" "docker-archive:$archive.tmp:$ref"
    mv "$archive.tmp" "$archive"
    python3 -c 'import json, sys; print(json.dumps(dict(zip(["name", "ref", "archive", "key", "image_id"], sys.argv[1:]))))' \
      "$name" "$ref" "$archive" "$(key_of "$name")" "$id" >"${archive%.tar}.json"
    for old in "$cache/$name"-*.tar "$cache/$name"-*.json; do
      [ "$old" = "$archive" ] || [ "$old" = "${archive%.tar}.json" ] || rm -f "$old"
    done
    ls -l "$archive"
  done
}

# The tag buildah knows an image by: the Dockerfile's -t name (buildah adds localhost/).
local_tag() {
  case $1 in
    pause) echo "$PAUSE_REF" ;;
    minio|ferretdb) ref_of "$1" ;;
    *) sed -n 's/^#.* -t \([^ ]*\) .*$/\1/p' "$root/images/$1/Dockerfile" | head -n 1 ;;
  esac
}

write_index() {
  python3 - "$cache" pause operator ray "${DEPENDENCY_IMAGES[@]}" <<'EOF'
import json, sys
from pathlib import Path
cache = Path(sys.argv[1])
entries = []
for name in sys.argv[2:]:
    for sidecar in sorted(cache.glob(f"{name}-*.json")):
        entry = json.loads(sidecar.read_text())
        if Path(entry["archive"]).is_file():
            entries.append(entry)
tmp = cache / "index.json.tmp"
tmp.write_text(json.dumps(entries, indent=2) + "\n")
tmp.replace(cache / "index.json")
EOF
}

# run_step STEP COMMAND...: runs COMMAND with its output in logs/STEP.log; on failure ends the
# script with the log's tail. Sets step_time (seconds).
run_step() {
  local name=$1 log=$logs/$1.log start=$SECONDS rc
  shift
  set +e
  ( set -euo pipefail; "$@" ) >"$log" 2>&1
  rc=$?
  set -e
  step_time=$((SECONDS - start))
  if [ $rc -ne 0 ]; then
    echo "make images: $name failed; log: $log" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
}

cleanup() {
  local c
  for c in "modeleval-base-$$" "modeleval-pause-$$" "modeleval-minio-$$" "modeleval-ferretdb-$$"; do
    buildah rm "$c" >/dev/null 2>&1 || true
  done
  if [ -d "$work" ]; then
    remove_rootfs "$work/rootfs-$$"
    rm -rf "$work/pause-$$" "$work/pip.conf"
    rmdir "$work" 2>/dev/null || true
  fi
}

main() {
  case ${1:-} in
    --print-keys)
      compute_keys
      printf '%s %s\n' base "$base_key" pause "$pause_key" operator "$operator_key" ray "$ray_key" \
        minio "${minio_key:-none}" ferretdb "${ferretdb_key:-none}"
      return ;;
    "") ;;
    *) echo "usage: hack/build-images.sh [--print-keys]" >&2; exit 2 ;;
  esac
  compute_keys
  mkdir -p "$cache" "$logs"
  exec 9>"$cache/.lock"
  flock -n 9 || { say "waiting for another build-images run to finish"; flock 9; }

  local name todo=() total=$SECONDS
  for name in pause operator ray; do
    if [ -f "$(archive_of "$name")" ]; then
      say "$name: cached (key $(key_of "$name"))"
    else
      todo+=("$name")
    fi
  done
  for name in "${DEPENDENCY_IMAGES[@]}"; do
    if [ -z "$(key_of "$name")" ]; then
      say "$name: no binary at $(binary_of "$name") yet (make tools): skipped"
    elif [ -f "$(archive_of "$name")" ]; then
      say "$name: cached (key $(key_of "$name"))"
    else
      todo+=("$name")
    fi
  done
  if [ ${#todo[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "make images: building ${todo[*]} needs root (debootstrap, chroot, buildah's storage)" >&2
      exit 1
    fi
    trap cleanup EXIT
    local pkgs; read -ra pkgs <<<"$IMAGE_PACKAGES"
    [ -x /usr/local/go/bin/go ] && PATH=$PATH:/usr/local/go/bin
    if [[ " ${todo[*]} " == *" pause "* ]] && ! command -v go >/dev/null 2>&1; then pkgs+=(golang-go); fi
    run_step apt env APT_INSTALL_LOG="$logs/apt-get.log" "$here/apt-install.sh" "${pkgs[@]}"
    say "apt: ${pkgs[*]} present ($step_time s)"

    if [[ " ${todo[*]} " == *" operator "* || " ${todo[*]} " == *" ray "* ]]; then
      if buildah inspect --type image "$base_ref" >/dev/null 2>&1; then
        say "base: cached ($base_ref)"
      else
        run_step debootstrap make_rootfs "$work/rootfs-$$"
        say "debootstrap: $SUITE from $mirror in $step_time s"
        run_step base build_base "$work/rootfs-$$" "$base_ref"
        remove_rootfs "$work/rootfs-$$"
        say "base: built $base_ref in $step_time s"
      fi
    fi
    for name in "${todo[@]}"; do
      case $name in
        pause) run_step pause build_pause "$work/pause-$$" "$PAUSE_REF" ;;
        minio|ferretdb) run_step "$name" build_binary_image "$name" "$(ref_of "$name")" ;;
        *) run_step "$name" build_app "$name" "$(local_tag "$name")" "$base_ref" ;;
      esac
      say "$name: built in $step_time s (key $(key_of "$name"))"
    done
    run_step export export_images "${todo[@]}"
    say "export: ${todo[*]} written in $step_time s"
    # The keys were taken before the builds read the tree: say so if it changed meanwhile.
    local -A before=([pause]=$pause_key [operator]=$operator_key [ray]=$ray_key
                     [minio]=$minio_key [ferretdb]=$ferretdb_key)
    compute_keys
    for name in "${todo[@]}"; do
      [ "${before[$name]}" = "$(key_of "$name")" ] ||
        say "$name: its inputs changed during the build; run make images again"
    done
  fi
  write_index
  say "index: $cache/index.json (${#todo[@]} built, $((SECONDS - total)) s)"
}

main "$@"
