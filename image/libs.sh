# shellcheck shell=bash
# Shell functions shared by the image scripts (image/rootfs.sh, image/build-oci.sh,
# e2e/node/images.sh): copy a program's shared libraries into an image root. Uses only bash,
# coreutils and ldd (libc-bin), because rootfs.sh also runs in the Dockerfile's
# debian:bookworm-slim stage.

# image_die MESSAGE: prints "SCRIPT: MESSAGE" on stderr and exits 1.
image_die() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

# image_copy_path ROOT PATH: copies the host file PATH to ROOT/PATH. A symlink stays a symlink
# (same link text) and its target is copied the same way, down to a regular file, whose content
# is copied (cp -L: host directory links such as /lib -> usr/lib become plain directories).
image_copy_path() {
  local root=$1 path=$2 link hops=0
  while [ -L "$path" ]; do
    hops=$((hops + 1))
    [ "$hops" -le 40 ] || image_die "$2: too many levels of symbolic links"
    link=$(readlink "$path")
    mkdir -p "$root$(dirname "$path")"
    ln -sfn "$link" "$root$path"
    case $link in
      /*) path=$link ;;
      # Relative to the link's directory; realpath -ms only normalises the text (no lookups).
      *) path=$(realpath -ms "$(dirname "$path")/$link") ;;
    esac
  done
  [ -f "$path" ] || image_die "$path: not a regular file (needed by the image)"
  mkdir -p "$root$(dirname "$path")"
  cp -L --preserve=mode "$path" "$root$path"
}

# image_copy_libs ROOT PROGRAM: copies the shared libraries PROGRAM loads, as ldd resolves them
# on this host, to the same paths under ROOT, the dynamic loader included. A static program
# needs none.
image_copy_libs() {
  local root=$1 prog=$2 out lib loader="" dir libs=()
  if ! out=$(LC_ALL=C ldd "$prog" 2>&1); then
    # ldd exits 1 for a static program (a Go binary, busybox-static): nothing to copy.
    case $out in *"not a dynamic executable"*) return 0 ;; esac
    image_die "ldd $prog failed: $out"
  fi
  case $out in
    *"not found"*) image_die "$prog needs libraries this host lacks:"$'\n'"$out" ;;
  esac
  # Lines are "name => /path (0x...)", "/path (0x...)" for the loader, or the vdso (no path).
  while read -r lib; do
    case $lib in
      *" => "*) libs+=("${lib#* => }") ;;
      *) loader=$lib ;;
    esac
  done < <(sed -n 's/^[[:space:]]*\([^[:space:]]* => \)\{0,1\}\(\/[^[:space:]]*\) (0x[0-9a-f]*)$/\1\2/p' <<<"$out")
  if [ -z "$loader" ] && [ "${#libs[@]}" -eq 0 ]; then
    return 0 # "statically linked" (static-pie): nothing to copy
  fi
  [ -n "$loader" ] || image_die "ldd $prog names libraries but no dynamic loader: $out"
  # The image has no /etc/ld.so.cache, so the loader finds a library only in its system
  # directories: refuse one that ld.so.conf alone made visible (the program would not start).
  local sysdirs
  sysdirs=$("$loader" --help | sed -n 's/^[[:space:]]*\(\/[^[:space:]]*\) (system search path)$/\1/p')
  [ -n "$sysdirs" ] || image_die "$loader --help lists no system search path"
  for lib in "${libs[@]}"; do
    dir=$(dirname "$lib")
    grep -qxF -- "$dir" <<<"$sysdirs" \
      || image_die "$prog loads $lib from $dir, which the loader searches only through ld.so.cache (not in the image)"
  done
  for lib in "$loader" "${libs[@]}"; do
    image_copy_path "$root" "$lib"
  done
}
