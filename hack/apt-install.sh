#!/usr/bin/env bash
# Installs the Debian packages named that are not installed yet: one `apt-get update`, then
# `apt-get install -y --no-install-recommends` of the missing ones. Nothing is done (and nothing
# is fetched) when every package is already installed.
#
#   hack/apt-install.sh PKG...
#
# apt's output goes to $APT_INSTALL_LOG (default: the modeleval cache's logs/apt.log). On failure
# it prints one line naming the package(s) and that log, and exits 1. Needs root (or sudo -n).
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: hack/apt-install.sh PKG..." >&2
  exit 2
fi

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

missing=()
for pkg in "$@"; do
  installed "$pkg" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

log=${APT_INSTALL_LOG:-${XDG_CACHE_HOME:-$HOME/.cache}/modeleval/logs/apt.log}
mkdir -p "$(dirname "$log")"
: >"$log"

if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-install: ${missing[*]} missing and this is not a Debian-based system (no apt-get); install them by hand" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "apt-install: ${missing[*]} missing; installing needs root (run as root or with passwordless sudo)" >&2
    exit 1
  fi
fi

echo "[apt] installing ${missing[*]} (log: $log)" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel build) holds the dpkg lock for a while: wait for it.
apt_opts=(-o DPkg::Lock::Timeout=300)
if ! "${sudo[@]}" apt-get "${apt_opts[@]}" update >>"$log" 2>&1; then
  echo "apt-install: apt-get update failed, so ${missing[*]} could not be installed; log: $log" >&2
  exit 1
fi
if ! "${sudo[@]}" apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
  unavailable=()
  for pkg in "${missing[@]}"; do
    candidate=$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then unavailable+=("$pkg"); fi
  done
  if [ ${#unavailable[@]} -gt 0 ]; then
    echo "apt-install: no Debian package ${unavailable[*]} in the configured apt sources; log: $log" >&2
  else
    echo "apt-install: apt-get install ${missing[*]} failed; log: $log" >&2
  fi
  exit 1
fi
still=()
for pkg in "${missing[@]}"; do installed "$pkg" || still+=("$pkg"); done
if [ ${#still[@]} -gt 0 ]; then
  echo "apt-install: ${still[*]} still not installed after apt-get install; log: $log" >&2
  exit 1
fi
