#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds the e2e node's test images as OCI archives (no registry serves the sealed node, whose
# containerd imports them with `ctr -n k8s.io images import FILE`):
#   e2e/node/images.sh OUT_DIR PAUSE_BINARY
#   localhost/e2e-pause:1  OUT_DIR/pause.tar  the pod sandbox: PAUSE_BINARY at /pause, as root
#   localhost/e2e-tools:1  OUT_DIR/tools.tar  busybox (sh and its applets) and openssl, for
#                                             s_server/s_client mTLS checks, openssl req and
#                                             shell one-liners
#   with BIN_DIR (e2e/build-infra.sh's), autocert's three images as its Dockerfiles describe them
#   (step CLI and the scripts instead of the step-cli base image):
#   localhost/autocert-controller:AUTOCERT  OUT_DIR/autocert-controller.tar  its controller
#   localhost/autocert-bootstrapper:AUTOCERT  OUT_DIR/autocert-bootstrapper.tar  bootstrapper.sh
#   localhost/autocert-renewer:AUTOCERT  OUT_DIR/autocert-renewer.tar  `step ca renew --daemon`
# Prints "NAME FILE" per image. Packed by image/oci.sh, the code that packs the step-operator
# image. Needs root, umoci, jq, busybox-static, bash and openssl.
set -euo pipefail
# Modes of the directories and files it creates must not depend on the caller's umask.
umask 022

here=$(cd "$(dirname "$0")" && pwd)
image_dir=$(cd "$here/../../image" && pwd)
# shellcheck source=../../image/libs.sh
. "$image_dir/libs.sh"
# shellcheck source=../../image/oci.sh
. "$image_dir/oci.sh"

if [ $# -ne 2 ] && [ $# -ne 3 ]; then
  echo "usage: ${0##*/} OUT_DIR PAUSE_BINARY [BIN_DIR]" >&2
  exit 2
fi
out_dir=$1 pause=$2 bin_dir=${3:-}
busybox=/bin/busybox openssl=/usr/bin/openssl

[ -f "$pause" ] || image_die "$pause: no such file (e2e/build-infra.sh builds the pause program)"
[ -x "$pause" ] || image_die "$pause: not executable"
[ -x "$busybox" ] || image_die "$busybox is missing: apt-get install -y busybox-static"
[ -x "$openssl" ] || image_die "$openssl is missing: apt-get install -y openssl"
[ -e /usr/lib/ssl/openssl.cnf ] || image_die "/usr/lib/ssl/openssl.cnf is missing: apt-get install -y openssl"
oci_require_tools

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)

# busybox_into ROOT: /bin/busybox with its libraries and a link per applet.
busybox_into() {
  local root=$1 applet
  install -D -m 0755 "$busybox" "$root/bin/busybox"
  image_copy_libs "$root" "$busybox"
  while IFS= read -r applet; do
    # --list includes busybox itself; relative links keep the image relocatable.
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done < <("$busybox" --list)
}

# pause: the program alone (it is static; copy_libs adds the libraries if it ever is not).
# Root, as kubelet's sandbox runs it; it only holds the namespaces and reaps orphans.
root=$tmp/pause
mkdir -m 0755 "$root"
install -m 0755 "$pause" "$root/pause"
image_copy_libs "$root" "$pause"
oci_pack "$root" 0:0 '["/pause"]' localhost/e2e-pause:1 "$out_dir/pause.tar"
printf '%s %s\n' localhost/e2e-pause:1 "$out_dir/pause.tar"

# tools: /bin/busybox with a link per applet, /usr/bin/openssl with its libraries.
root=$tmp/tools
mkdir -m 0755 "$root"
mkdir -p "$root/etc"
busybox_into "$root"
install -D -m 0755 "$openssl" "$root/usr/bin/openssl"
image_copy_libs "$root" "$openssl"
# Its default config (a link to /etc/ssl/openssl.cnf): without it `openssl req` refuses to run.
image_copy_path "$root" /usr/lib/ssl/openssl.cnf
# root and an unprivileged app user (1000) for runAsUser tests; busybox reads these directly.
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'app:x:1000:1000:app:/home/app:/bin/sh' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'app:x:1000:' >"$root/etc/group"
# openssl s_client resolves names through glibc: files first, then cluster DNS.
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
install -d -m 0700 "$root/root"
install -d -m 0755 -o 1000 -g 1000 "$root/home/app"
install -d -m 1777 "$root/tmp"
chmod 1777 "$root/tmp"
oci_pack "$root" 0:0 '["/bin/sh"]' localhost/e2e-tools:1 "$out_dir/tools.tar"
printf '%s %s\n' localhost/e2e-tools:1 "$out_dir/tools.tar"

[ -n "$bin_dir" ] || exit 0
# shellcheck source=../versions.env
. "$here/../versions.env"
tag=${AUTOCERT_VERSION#v}
for f in autocert-controller step autocert/bootstrapper.sh; do
  [ -f "$bin_dir/$f" ] || image_die "$bin_dir/$f is missing: run e2e/build-infra.sh"
done
[ -x /bin/bash ] || image_die "/bin/bash is missing: apt-get install -y bash"

# The step-cli base image: busybox, the step CLI and a `step` user (1000) whose home is STEPPATH.
step_base() {
  local root=$1
  mkdir -m 0755 "$root"
  busybox_into "$root"
  install -D -m 0755 "$bin_dir/step" "$root/usr/local/bin/step"
  image_copy_libs "$root" "$bin_dir/step"
  mkdir -p "$root/etc"
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'step:x:1000:1000:step:/home/step:/bin/sh' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'step:x:1000:' >"$root/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$root/etc/nsswitch.conf"
  chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
  install -d -m 0755 -o 1000 -g 1000 "$root/home/step"
  install -d -m 1777 "$root/tmp"
  chmod 1777 "$root/tmp"
}
certs_env=(CRT=/var/run/autocert.step.sm/site.crt KEY=/var/run/autocert.step.sm/site.key
  STEP_ROOT=/var/run/autocert.step.sm/root.crt STEPPATH=/home/step)

# controller: its Dockerfile runs ./server (WORKDIR /home/step) with the config path.
root=$tmp/autocert-controller
step_base "$root"
install -m 0755 -o 1000 -g 1000 "$bin_dir/autocert-controller" "$root/home/step/server"
image_copy_libs "$root" "$bin_dir/autocert-controller"
oci_pack "$root" 1000:1000 '["/home/step/server","/home/step/autocert/config.yaml"]' \
  "localhost/autocert-controller:$tag" "$out_dir/autocert-controller.tar" \
  STEPPATH=/home/step PWDPATH=/home/step/password/password CONFIGPATH=/home/step/autocert/config.yaml
printf '%s %s\n' "localhost/autocert-controller:$tag" "$out_dir/autocert-controller.tar"

# bootstrapper: as root, its script as CMD.
root=$tmp/autocert-bootstrapper
step_base "$root"
install -m 0755 "$bin_dir/autocert/bootstrapper.sh" "$root/home/step/bootstrapper.sh"
oci_pack "$root" 0:0 '["/home/step/bootstrapper.sh"]' \
  "localhost/autocert-bootstrapper:$tag" "$out_dir/autocert-bootstrapper.tar" "${certs_env[@]}"
printf '%s %s\n' "localhost/autocert-bootstrapper:$tag" "$out_dir/autocert-bootstrapper.tar"

# renewer: bash -c "step ca renew --daemon $CRT $KEY", as root (expanded by that bash).
root=$tmp/autocert-renewer
step_base "$root"
install -m 0755 /bin/bash "$root/bin/bash"
image_copy_libs "$root" /bin/bash
# shellcheck disable=SC2016
oci_pack "$root" 0:0 '["/bin/bash","-c","step ca renew --daemon $CRT $KEY"]' \
  "localhost/autocert-renewer:$tag" "$out_dir/autocert-renewer.tar" "${certs_env[@]}"
printf '%s %s\n' "localhost/autocert-renewer:$tag" "$out_dir/autocert-renewer.tar"
