#!/usr/bin/env bash
# What the test bed needs, as fast as a cold machine allows: the Debian packages first (one apt at
# a time), then `make tools` (Go builds: CPU) and `make images` (downloads and disk) side by side.
# Each keeps its own cache, so a second run takes seconds.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

# shellcheck disable=SC2086  # lists of package names
"$here/apt-install.sh" $NODE_PACKAGES $IMAGE_PACKAGES $TEST_PACKAGES || exit 1
"$here/build-tools.sh" & tools=$!
"$here/build-images.sh" & images=$!
wait "$tools"; tools_rc=$?
wait "$images"; images_rc=$?
failed=()
[ "$tools_rc" -eq 0 ] || failed+=("make tools (exit $tools_rc)")
[ "$images_rc" -eq 0 ] || failed+=("make images (exit $images_rc)")
if [ ${#failed[@]} -gt 0 ]; then
  echo "make: ${failed[*]} failed; the step and its log are named above" >&2
  exit 1
fi
# The MinIO and FerretDB images hold binaries `make tools` builds: made now that those exist
# (the rest of the images is cached, so this takes seconds).
"$here/build-images.sh" || { echo "make: make images (dependency images) failed" >&2; exit 1; }
