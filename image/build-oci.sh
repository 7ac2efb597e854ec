#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds the step-operator image as an OCI archive, without a container runtime or registry:
#   image/build-oci.sh [--name NAME] BINARY OUT.tar
# The files come from image/rootfs.sh (the Dockerfile uses the same script), the config from
# image/image.env. NAME defaults to localhost/step-operator:<Cargo.toml version>. Import with
#   ctr -n k8s.io images import OUT.tar
# (the archive carries NAME). Prints "NAME OUT.tar". Needs root, umoci and jq.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=libs.sh
. "$here/libs.sh"
# shellcheck source=oci.sh
. "$here/oci.sh"
# shellcheck source=image.env
. "$here/image.env"

usage() {
  echo "usage: ${0##*/} [--name NAME] BINARY OUT.tar" >&2
  exit 2
}

name=
while [ $# -gt 0 ]; do
  case $1 in
    --name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
    --name=*) name=${1#--name=}; shift ;;
    -h | --help) usage ;;
    --) shift; break ;;
    -*) echo "${0##*/}: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || usage
bin=$1 out=$2

if [ -z "$name" ]; then
  # The [package] version, as the release is tagged.
  version=$(sed -n '/^\[package\]/,/^\[/s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' \
    "$here/../Cargo.toml" | head -n 1)
  [ -n "$version" ] || image_die "no [package] version in $here/../Cargo.toml: pass --name"
  name=localhost/step-operator:$version
fi

# Before the rootfs work, so a missing tool fails fast.
oci_require_tools
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$here/rootfs.sh" "$bin" "$tmp/rootfs"
oci_pack "$tmp/rootfs" "$IMAGE_USER" "$IMAGE_ENTRYPOINT" "$name" "$out"
printf '%s %s\n' "$name" "$out"
