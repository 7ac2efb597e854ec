# shellcheck shell=bash
# oci_pack: turns a root filesystem directory into an OCI image archive (a tar of an OCI image
# layout) with umoci, no container runtime or registry needed. Shared by image/build-oci.sh and
# e2e/node/images.sh; source image/libs.sh first. Needs root, umoci, jq and GNU tar.

# oci_require_tools: fails early, naming the Debian package, when a tool is missing.
oci_require_tools() {
  command -v umoci >/dev/null || image_die "umoci is not installed: apt-get install -y umoci"
  command -v jq >/dev/null || image_die "jq is not installed: apt-get install -y jq"
  command -v tar >/dev/null || image_die "tar is not installed: apt-get install -y tar"
  # cp -a and umoci repack keep owners only for root (/home/nonroot must stay 65532's).
  [ "$(id -u)" -eq 0 ] || image_die "run as root: the layer must keep the files' owners"
}

# oci_pack ROOTFS USER ENTRYPOINT_JSON NAME OUT.tar [ENV...]
#   ROOTFS: the image's files (owners and modes as they must be in the image);
#   USER: the config's user, e.g. 65532:65532; ENTRYPOINT_JSON: e.g. '["/step-operator"]';
#   NAME: the full image name with its tag, e.g. localhost/step-operator:0.1.0;
#   ENV: extra environment of the image's config, each as K=V.
# One layer; no Cmd; working dir /; file mtimes and "created" are SOURCE_DATE_EPOCH (default 0),
# so the same files give the same digests.
oci_pack() (
  set -euo pipefail
  local rootfs=$1 user=$2 entrypoint=$3 name=$4 out=$5
  shift 5
  local tag=${name##*:} epoch=${SOURCE_DATE_EPOCH:-0} arch created work e
  local -a ep_args=() env_args=()
  for e in "$@"; do env_args+=(--config.env "$e"); done

  oci_require_tools
  [ -d "$rootfs" ] || image_die "$rootfs: not a directory"
  # A tag is required: umoci stores it as the index's org.opencontainers.image.ref.name.
  case $tag in "$name" | */*) image_die "image name $name has no tag (e.g. localhost/foo:1)" ;; esac
  [[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || image_die "invalid tag in $name"
  jq -e 'type == "array" and length > 0 and all(type == "string")' <<<"$entrypoint" >/dev/null \
    || image_die "entrypoint must be a JSON array of strings: $entrypoint"
  while IFS= read -r e; do ep_args+=(--config.entrypoint "$e"); done < <(jq -r '.[]' <<<"$entrypoint")
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) image_die "unsupported machine $(uname -m): the image holds this host's binaries" ;;
  esac
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

  work=$(mktemp -d)
  # This function body is a subshell: the trap cleans up on success and on error.
  trap 'rm -rf "$work"' EXIT
  local layout=$work/oci bundle=$work/bundle
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  # unpack + copy + repack rather than `umoci insert ROOTFS /`: insert writes the root
  # directory as an entry named "/", repack as "./" like any other image.
  umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
  cp -a "$rootfs/." "$bundle/rootfs/"
  chmod 0755 "$bundle/rootfs"
  find "$bundle/rootfs" -exec touch -h -d "@$epoch" {} +
  umoci repack --image "$layout:$tag" \
    --history.created "$created" --history.created_by "oci_pack (image/oci.sh)" "$bundle"
  # PATH as docker build sets it for a FROM scratch image, so both images have the same env.
  umoci config --image "$layout:$tag" \
    --config.user "$user" "${ep_args[@]}" --config.workingdir / \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${env_args[@]}" \
    --architecture "$arch" --os linux --created "$created" --history.created "$created"
  umoci gc --layout "$layout"

  # containerd names an imported image after the index entry's io.containerd.image.name; with
  # only ref.name (a bare tag) `ctr images import` would call it import-<date>:<tag> unless
  # every caller passed --base-name. ref.name stays: other OCI tools (skopeo, umoci) read it.
  jq --arg name "$name" \
    '.manifests[0].annotations["io.containerd.image.name"] = $name' \
    "$layout/index.json" >"$work/index.json"
  mv "$work/index.json" "$layout/index.json"
  [ "$(jq '.manifests | length' "$layout/index.json")" -eq 1 ] \
    || image_die "the layout has more than one manifest"

  mkdir -p "$(dirname "$out")"
  # Entries named without "./", owned by root, sorted, one mtime: same files, same archive.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" --format=ustar \
    -C "$layout" -cf "$work/image.tar" oci-layout index.json blobs
  mv "$work/image.tar" "$out"
)
