#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Assembles the step-operator image's root filesystem in DEST_DIR from this host's Debian files:
#   image/rootfs.sh BINARY DEST_DIR
# /step-operator, exactly the shared libraries it loads (and the dynamic loader), the CA bundle,
# passwd/group (root, nobody, nonroot 65532), nsswitch.conf, /home/nonroot and /tmp. No shell,
# nothing else.
#
# One script for both images: image/build-oci.sh packs its output for the e2e node and the
# Dockerfile's rootfs stage copies its output into the published image, so the two cannot differ.
# It therefore runs on the host and in debian:bookworm-slim: bash, coreutils, ldd (libc-bin),
# grep and sed only. Run it as root (the files are root's, /home/nonroot is 65532's).
set -euo pipefail
# Modes of the directories and files it creates must not depend on the caller's umask.
umask 022

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=libs.sh
. "$here/libs.sh"

if [ $# -ne 2 ]; then
  echo "usage: ${0##*/} BINARY DEST_DIR" >&2
  exit 2
fi
bin=$1 dest=$2
ca=/etc/ssl/certs/ca-certificates.crt

[ -e "$bin" ] || image_die "$bin: no such file (build it first: make release)"
[ -f "$bin" ] || image_die "$bin: not a regular file"
[ -x "$bin" ] || image_die "$bin: not executable"
[ "$(id -u)" -eq 0 ] || image_die "run as root: the image's files must be owned by root and /home/nonroot by 65532"
# The controller and the bootstrapper verify the step-ca and API server chains against it.
[ -s "$ca" ] \
  || image_die "$ca is missing: install it (apt-get install -y --no-install-recommends ca-certificates) and re-run"
# A non-empty DEST_DIR would leak stale files into the image.
if [ -e "$dest" ] && [ -n "$(ls -A "$dest")" ]; then
  image_die "$dest is not empty: give a new or empty directory"
fi
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
chmod 0755 "$dest"

install -m 0755 "$bin" "$dest/step-operator"
# The image has no package manager: ldd decides which libraries (glibc, libgcc) go in.
image_copy_libs "$dest" "$bin"
install -D -m 0644 "$ca" "$dest/etc/ssl/certs/ca-certificates.crt"

# nonroot (65532) is the user the image runs as; the same ids as distroless, which the image
# used before, so volumes and securityContexts written for it keep working.
printf '%s\n' \
  'root:x:0:0:root:/root:/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$dest/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$dest/etc/group"
# glibc (>= 2.34) has the files and dns services built in, so no libnss_* module is needed;
# hosts keeps dns, or the operator could not resolve Service names.
printf '%s\n' \
  'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' \
  'networks: files' 'protocols: files' 'services: files' >"$dest/etc/nsswitch.conf"
chmod 0644 "$dest/etc/passwd" "$dest/etc/group" "$dest/etc/nsswitch.conf"

# HOME of the image's user; private to it.
install -d -m 0700 -o 65532 -g 65532 "$dest/home/nonroot"
# Anyone may create temporary files, only the owner may remove them (sticky).
install -d -m 1777 "$dest/tmp"
chmod 1777 "$dest/tmp"

printf '%s: %s: %s KiB\n' "${0##*/}" "$dest" "$(du -sk "$dest" | cut -f1)" >&2
