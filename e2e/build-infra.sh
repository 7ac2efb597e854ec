#!/usr/bin/env bash
# Builds the real components of the e2e tier from their upstream Go modules:
# etcd, kube-apiserver, kubectl, step-ca, step, cert-manager's controllers (cm-lite) and helm;
# for the node: kubelet, kube-controller-manager, kube-scheduler, kube-proxy, containerd (with ctr
# and its runc shim), the CNI plugins, CoreDNS and the pause program (runc is Debian's package);
# the peers step-issuer (its Go module) and autocert (from $AUTOCERT_SRC, by default the released
# source in ../shared/peers/autocert-<version> next to the repository), which the migration tests
# and `make bench` run. Binaries go to
#   ${XDG_CACHE_HOME:-$HOME/.cache}/step-operator-e2e/bin/<key>
# where <key> hashes versions.env, this script and cm-lite. Prints the bin directory last.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

repo=$(cd "$here/.." && pwd)
# autocert's module proxy entry is not served; its released source is. Override for your own checkout.
AUTOCERT_SRC=${AUTOCERT_SRC:-$repo/../shared/peers/autocert-$AUTOCERT_VERSION}

E2E_CACHE=${E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/step-operator-e2e}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw
export GOMODCACHE=$E2E_CACHE/go/mod GOCACHE=$E2E_CACHE/go/build GOPATH=$E2E_CACHE/go/path
# autocert's source counts by the files the build reads.
autocert_files() {
  [ -d "$AUTOCERT_SRC" ] || return 0
  ls "$AUTOCERT_SRC"/go.mod "$AUTOCERT_SRC"/go.sum "$AUTOCERT_SRC"/controller/*.go \
    "$AUTOCERT_SRC"/bootstrapper/bootstrapper.sh "$AUTOCERT_SRC"/install/*.yaml 2>/dev/null
}
KEY=$(cat "$here/versions.env" "$here/build-infra.sh" "$here/cm-lite/main.go" \
  "$here/node/pause/main.go" "$here/node/coredns/main.go" \
  $(ls "$here"/cm-lite/go.mod "$here"/cm-lite/go.sum 2>/dev/null) $(autocert_files) |
  sha256sum | cut -c1-16)
BIN=$E2E_CACHE/bin/$KEY
# `--ready`: whether everything is built already (exit 0) or not (1); builds nothing.
if [ "${1:-}" = "--ready" ]; then [ -f "$BIN/.complete" ]; exit; fi
start=$(date +%s)

log() { printf '[build-infra %4ss] %s\n' "$(($(date +%s) - start))" "$*" >&2; }
die() { printf 'build-infra: %s\n' "$*" >&2; exit 1; }

preflight() {
  command -v go >/dev/null || die "go is not installed: install Go 1.26 (https://go.dev/dl) and re-run"
  local v; v=$(go env GOVERSION)
  case "$v" in
    go1.2[6-9]*|go1.[3-9]*) ;;
    *) die "go is $v; the pinned modules need Go >= 1.26: install it and re-run" ;;
  esac
  local free_kb; free_kb=$(df -Pk "$E2E_CACHE" | awk 'NR==2 {print $4}')
  if [ "$free_kb" -lt $((12 * 1024 * 1024)) ]; then
    die "only $((free_kb / 1024)) MiB free under $E2E_CACHE; a cold build needs 12 GiB: free space or set E2E_CACHE"
  fi
}

# Runs a go command; when the checksum database cannot be reached, retries once without it.
# The committed go.sum files (cm-lite) still pin what they cover.
gocmd() {
  local out
  if out=$("$@" 2>&1); then printf '%s\n' "$out"; return 0; fi
  if grep -qE 'sum.golang.org|checksum database|verifying .*: .*dial tcp' <<<"$out"; then
    log "checksum database unreachable; retrying with GOSUMDB=off"
    GOSUMDB=off "$@" 2>&1
    return
  fi
  printf '%s\n' "$out" >&2
  return 1
}

# A wrapper main module per component: their Kubernetes library versions differ.
wrapper() { local w=$E2E_CACHE/src/$1; mkdir -p "$w"; cd "$w"; [ -f go.mod ] || go mod init "e2e.invalid/$1" >/dev/null 2>&1; }

build_etcd() (
  wrapper "etcd-$ETCD_VERSION"
  # server/v3 is a main package but its go.mod has replaces, so `go install pkg@v` refuses it.
  gocmd go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
)

build_kube() (
  wrapper "kube-$K8S_VERSION"
  local v=$K8S_VERSION staging=v0.${K8S_VERSION#v1.} mod m
  mod=$(gocmd go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\([^"]*\)".*/\1/p')
  [ -f "$mod" ] || die "could not download k8s.io/kubernetes@$v"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging:
  # point each at its published version instead. The list comes from the served go.mod.
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$mod"); do
    go mod edit "-replace=$m=$m@$staging"
  done
  local cmds=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy) c pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  gocmd go get -tool "${pkgs[@]/%/@$v}" >/dev/null
  local minor=${v#v1.} ld="-s -w" p
  minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  # One build for all of them: they share most packages, so each is compiled once.
  go build -mod=mod -trimpath -ldflags "$ld" -o "$BIN/" "${pkgs[@]}"
)

build_containerd() (
  wrapper "containerd-$CONTAINERD_VERSION"
  local m=github.com/containerd/containerd/v2/cmd
  gocmd go get -tool "$m/containerd@$CONTAINERD_VERSION" "$m/ctr@$CONTAINERD_VERSION" \
    "$m/containerd-shim-runc-v2@$CONTAINERD_VERSION" >/dev/null
  # The snapshotters the node does not use need C libraries (btrfs) or kernel features it lacks.
  go build -mod=mod -trimpath -tags no_btrfs,no_devmapper,no_zfs \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION#v}" \
    -o "$BIN/" "$m/containerd" "$m/ctr" "$m/containerd-shim-runc-v2"
)

build_cni() (
  wrapper "cni-$CNI_PLUGINS_VERSION"
  local m=github.com/containernetworking/plugins/plugins
  gocmd go get -tool "$m/main/bridge@$CNI_PLUGINS_VERSION" "$m/main/loopback@$CNI_PLUGINS_VERSION" \
    "$m/ipam/host-local@$CNI_PLUGINS_VERSION" >/dev/null
  mkdir -p "$BIN/cni"
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/cni/" "$m/main/bridge" "$m/main/loopback" "$m/ipam/host-local"
)

# CoreDNS from its module with our own main (node/coredns/main.go: only the plugins the node uses).
build_coredns() (
  local w=$E2E_CACHE/src/coredns-$COREDNS_VERSION
  mkdir -p "$w"
  cp "$here/node/coredns/main.go" "$w/main.go"
  cd "$w"
  [ -f go.mod ] || go mod init e2e.invalid/coredns >/dev/null 2>&1
  gocmd go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null
  gocmd go mod tidy >/dev/null
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/coredns" .
)

build_pause() (
  local w=$E2E_CACHE/src/pause
  mkdir -p "$w"
  cp "$here/node/pause/main.go" "$w/main.go"
  cd "$w"
  [ -f go.mod ] || go mod init e2e.invalid/pause >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "$BIN/pause" .
)

build_step_ca() (
  wrapper "step-ca-$STEP_CA_VERSION"
  gocmd go get -tool "github.com/smallstep/certificates/cmd/step-ca@$STEP_CA_VERSION" >/dev/null
  # No build tags: the no*kms tags break v0.30.2 (authority.go needs sshagentkms, and
  # go.step.sm/crypto's cloud KMS packages are imported unconditionally).
  go build -mod=mod -trimpath \
    -ldflags "-s -w -X main.Version=${STEP_CA_VERSION#v}" -o "$BIN/step-ca" \
    github.com/smallstep/certificates/cmd/step-ca
)

build_step() (
  wrapper "step-cli-$STEP_CLI_VERSION"
  gocmd go get -tool "github.com/smallstep/cli/cmd/step@$STEP_CLI_VERSION" >/dev/null
  go build -mod=mod -trimpath -ldflags "-s -w -X main.Version=${STEP_CLI_VERSION#v}" -o "$BIN/step" \
    github.com/smallstep/cli/cmd/step
)

build_cm_lite() (
  local w=$E2E_CACHE/src/cm-lite-$CERT_MANAGER_VERSION
  mkdir -p "$w"
  cp "$here/cm-lite/main.go" "$w/main.go"
  if [ -f "$here/cm-lite/go.mod" ]; then
    cp "$here/cm-lite/go.mod" "$here/cm-lite/go.sum" "$w/"
  else
    rm -f "$w/go.mod" "$w/go.sum"
    (cd "$w" && go mod init e2e.invalid/cmlite >/dev/null 2>&1 &&
      gocmd go get "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" >/dev/null && gocmd go mod tidy >/dev/null)
  fi
  cd "$w"
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/cert-manager-controller" .
  # The CRDs are plain controller-gen YAML in the root module zip.
  local dir
  dir=$(gocmd go mod download -json "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" |
    sed -n 's/.*"Dir": "\([^"]*\)".*/\1/p')
  rm -rf "$BIN/cert-manager-crds"
  mkdir -p "$BIN/cert-manager-crds"
  cp "$dir"/deploy/crds/*.yaml "$BIN/cert-manager-crds/"
  chmod -R u+w "$BIN/cert-manager-crds"
)

build_helm() (
  wrapper "helm-$HELM_VERSION"
  gocmd go get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >/dev/null
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/helm" helm.sh/helm/v3/cmd/helm
)

build_step_issuer() (
  wrapper "step-issuer-$STEP_ISSUER_VERSION"
  gocmd go get -tool "github.com/smallstep/step-issuer@$STEP_ISSUER_VERSION" >/dev/null
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/step-issuer" github.com/smallstep/step-issuer
  local dir
  dir=$(go mod download -json "github.com/smallstep/step-issuer@$STEP_ISSUER_VERSION" |
    sed -n 's/.*"Dir": "\([^"]*\)".*/\1/p')
  rm -rf "$BIN/step-issuer-crds"; mkdir -p "$BIN/step-issuer-crds"
  cp "$dir"/config/crd/bases/*.yaml "$BIN/step-issuer-crds/"; chmod -R u+w "$BIN/step-issuer-crds"
)

# autocert's controller, built from its released source with its own go.mod/go.sum, and what the
# tests need of the rest: the bootstrapper script and the install manifests.
build_autocert() (
  [ -f "$AUTOCERT_SRC/go.mod" ] && [ -d "$AUTOCERT_SRC/controller" ] ||
    die "autocert $AUTOCERT_VERSION source not found at $AUTOCERT_SRC: set AUTOCERT_SRC to a checkout of github.com/smallstep/autocert at $AUTOCERT_VERSION"
  local w=$E2E_CACHE/src/autocert-$AUTOCERT_VERSION
  rm -rf "$w"; mkdir -p "$w"
  cp -R "$AUTOCERT_SRC"/. "$w"/; chmod -R u+w "$w"
  cd "$w"
  gocmd go mod download >/dev/null
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/autocert-controller" ./controller
  rm -rf "$BIN/autocert"; mkdir -p "$BIN/autocert"
  cp bootstrapper/bootstrapper.sh "$BIN/autocert/"
  cp -R install "$BIN/autocert/install"
)

# component name, the file it produces, the function that builds it
component() {
  local name=$1 out=$2 fn=$3
  if [ -e "$BIN/$out" ]; then return 0; fi
  log "building $name (cumulative time shown on the left)"
  local t0; t0=$(date +%s)
  if ! "$fn"; then die "building $name failed (output above); cache: $E2E_CACHE"; fi
  log "built $name in $(($(date +%s) - t0))s"
}

main() {
  mkdir -p "$BIN"
  exec 9>"$E2E_CACHE/.lock"
  if ! flock -n 9; then log "another build holds $E2E_CACHE/.lock; waiting"; flock 9; fi
  # Go and the disk space are checked only when something is to be built: a complete cache needs
  # neither (and a full cache leaves less than a cold build's worth free).
  if [ ! -f "$BIN/.complete" ]; then
    preflight
    # The longest build first: kubelet and the other Kubernetes binaries.
    component "kube-apiserver, kubectl, kubelet, kube-controller-manager, kube-scheduler, kube-proxy" \
      kube-proxy build_kube
    component containerd containerd-shim-runc-v2 build_containerd
    component "CNI plugins" cni/host-local build_cni
    component coredns coredns build_coredns
    component pause pause build_pause
    component etcd etcd build_etcd
    component step-ca step-ca build_step_ca
    component step step build_step
    component cert-manager-controller cert-manager-controller build_cm_lite
    component helm helm build_helm
    component step-issuer step-issuer build_step_issuer
    component autocert autocert-controller build_autocert
    touch "$BIN/.complete"
    log "required components ready in $BIN"
    # Old keys are dead weight of several hundred MB each.
    find "$E2E_CACHE/bin" -mindepth 1 -maxdepth 1 -type d ! -name "$KEY" -exec rm -rf {} +
  fi
  printf '%s\n' "$BIN"
}

main
