# The e2e node, sourced by cluster.sh: kube-controller-manager, kube-scheduler, containerd with
# Debian's runc, the kubelet, kube-proxy (nftables) and CoreDNS, all inside the cluster's network
# namespace. See e2e/README.md ("The node") for the picture.
#
# Why one node per machine: the kubelet and containerd write fixed host paths (/var/lib/kubelet,
# /run/containerd/s, /var/lib/cni, /var/log/containers) and the kubelet rewrites global sysctls.
# `up` takes the machine's node lock ($NODE_LOCK) and records what it changed; `down` restores it.

NODE_NAME=e2e-node
# Documentation ranges (RFC 5737): nothing outside this namespace uses them, and they are not routed.
NODE_IP=198.51.100.10
NODE_PEER_IP=198.51.100.1
POD_CIDR=203.0.113.0/24
POD_GATEWAY=203.0.113.1
SERVICE_CIDR=10.0.0.0/24
CLUSTER_DNS_IP=$NODE_IP
NODE_LOCK=/run/step-operator-e2e-node.lock
NODE_OWNER=/run/step-operator-e2e-node.owner
# Host paths the kubelet, containerd and libcni write whatever their configuration says; removed
# on `down` unless they existed before `up`.
NODE_HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd)
# Global (not per-namespace) sysctls the kubelet sets at start; restored on `down`.
NODE_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
# All the node's cgroups live under this one, in every v1 hierarchy.
NODE_CGROUP=step-operator-e2e
NODE_COMPONENTS=(controller-manager scheduler containerd kubelet kube-proxy coredns)
# Images the node runs; imported into containerd by `up` (pause, tools) and `image` (ours).
PAUSE_IMAGE=localhost/e2e-pause:1
TOOLS_IMAGE=localhost/e2e-tools:1

# Whether this cluster has a node: decided by E2E_NODE at `up` and remembered.
node_wanted() {
  if [ -f "$D/node-wanted" ]; then [ "$(cat "$D/node-wanted")" = 1 ]; else [ "${E2E_NODE:-1}" != 0 ]; fi
}

# Refuses to start a second node on this machine; a stale claim (its state gone or its kubelet
# dead) is taken over after cleaning what it left.
claim_node() {
  exec 8>"$NODE_LOCK"
  flock -n 8 || { echo "cluster.sh: another cluster.sh is starting a node right now; retry when it is done" >&2; exit 1; }
  if [ -f "$NODE_OWNER" ]; then
    local owner kubelet_pid
    owner=$(cat "$NODE_OWNER")
    if [ "$owner" != "$D" ]; then
      kubelet_pid=$(cat "$owner/kubelet.pid" 2>/dev/null || true)
      if [ -n "$kubelet_pid" ] && pid_alive "$kubelet_pid"; then
        echo "cluster.sh: this machine's e2e node belongs to the cluster in $owner (kubelet pid $kubelet_pid)." >&2
        echo "cluster.sh: one node per machine (the kubelet uses fixed host paths): run its 'e2e/cluster.sh down' first." >&2
        exit 1
      fi
      log "taking over the node left by $owner (its kubelet is gone)"
    fi
  fi
  printf '%s\n' "$D" >"$NODE_OWNER"
  flock -u 8
}

release_node() {
  [ -f "$NODE_OWNER" ] && [ "$(cat "$NODE_OWNER")" = "$D" ] && rm -f "$NODE_OWNER"
  return 0
}

record_host_state() {
  local p s
  : >"$D/host-paths-existing"
  for p in "${NODE_HOST_PATHS[@]}"; do [ -e "$p" ] && echo "$p" >>"$D/host-paths-existing"; done
  : >"$D/sysctls-saved"
  for s in "${NODE_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")" >>"$D/sysctls-saved"; done
}

restore_host_state() {
  local line p
  if [ -f "$D/sysctls-saved" ]; then
    while IFS= read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || log "could not restore $line"; done <"$D/sysctls-saved"
  fi
  if [ -f "$D/host-paths-existing" ]; then
    for p in "${NODE_HOST_PATHS[@]}"; do
      grep -qxF "$p" "$D/host-paths-existing" && continue
      [ -e "$p" ] || continue
      unmount_under "$p"
      rm -rf "$p"
    done
  fi
}

# Unmounts every mount at or below DIR, deepest first (pod volumes, the kubelet's bind mount of its
# root directory, pod network namespaces).
unmount_under() {
  local dir=$1 m
  [ -e "$dir" ] || return 0
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
}

remove_node_cgroups() {
  local root
  for root in /sys/fs/cgroup/*/; do
    [ -d "$root$NODE_CGROUP" ] || continue
    # Deepest first: a cgroup directory can only be removed once it has no children.
    find "$root$NODE_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$root$NODE_CGROUP" ] && log "cgroup $root$NODE_CGROUP still has processes or children"
  done
  return 0
}

make_node_cgroups() {
  local root
  for root in /sys/fs/cgroup/*/; do
    [ -w "$root" ] || continue
    mkdir -p "$root$NODE_CGROUP"
  done
}

start_controller_manager() {
  KCMP=$(free_port)
  echo "KCMP=$KCMP" >>"$D/ports"
  start controller-manager "$BIN/kube-controller-manager" --kubeconfig="$D/kubeconfig" \
    --authentication-kubeconfig="$D/kubeconfig" --authorization-kubeconfig="$D/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCMP" --leader-elect=false \
    --root-ca-file="$P/ca.crt" --service-account-private-key-file="$P/sa.key" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
    --allocate-node-cidrs=false --cluster-cidr="$POD_CIDR" --service-cluster-ip-range="$SERVICE_CIDR" \
    --controllers='*' --use-service-account-credentials=false --v=1
  wait_until controller-manager 60 curl -fsSk "https://127.0.0.1:$KCMP/healthz"
}

start_scheduler() {
  SCHP=$(free_port)
  echo "SCHP=$SCHP" >>"$D/ports"
  start scheduler "$BIN/kube-scheduler" --kubeconfig="$D/kubeconfig" \
    --authentication-kubeconfig="$D/kubeconfig" --authorization-kubeconfig="$D/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHP" --leader-elect=false --v=1
  wait_until scheduler 60 curl -fsSk "https://127.0.0.1:$SCHP/healthz"
}

containerd_config() {
  local n=$D/node
  mkdir -p "$n/etc/cni/net.d" "$n/containerd" "$n/run" "$n/cni-ipam"
  cat >"$n/containerd.toml" <<EOF
version = 3
root = "$n/containerd/root"
state = "$n/containerd/state"

[grpc]
  address = "$n/run/containerd.sock"
[ttrpc]
  address = "$n/run/containerd.sock.ttrpc"

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "$PAUSE_IMAGE"
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    # This machine's processes lack CAP_SYS_RESOURCE, so none may lower its oom_score_adj; without
    # this the sandbox (-998) fails to start ("can't get final child's PID from pipe: EOF").
    restrict_oom_score_adj = true
    # Pod network namespaces under our state, not /run/netns.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$RUNC"
          Root = "$n/run/runc"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["$BIN/cni"]
      conf_dir = "$n/etc/cni/net.d"
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
EOF
  # The pods' network: one bridge in the cluster namespace; its gateway is the namespace itself,
  # which has no route out (see seal_netns).
  cat >"$n/etc/cni/net.d/10-e2e-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "e2e-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "e2e-pods0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$n/cni-ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

ctr_() { "$BIN/ctr" --address "$D/node/run/containerd.sock" -n k8s.io "$@"; }

start_containerd() {
  RUNC=$(command -v runc || true)
  [ -n "$RUNC" ] || { echo "cluster.sh: runc is not installed: apt-get install runc" >&2; exit 1; }
  containerd_config
  # containerd finds its shim on PATH.
  start containerd env PATH="$BIN:$PATH" "$BIN/containerd" --config "$D/node/containerd.toml"
  wait_until containerd 60 ctr_ version
}

import_image() {
  local name=$1 archive=$2 comp=${3:-containerd}
  ctr_ images import "$archive" >>"$D/$comp.log" 2>&1 || fail "$comp" "importing $archive failed"
  # Read the whole list first: `ctr ... | grep -q` under pipefail fails at random when grep exits
  # on its match and ctr's next line meets a closed pipe.
  local listed
  listed=$(ctr_ images ls -q 2>/dev/null) || fail "$comp" "listing containerd's images failed"
  grep -qxF "$name" <<<"$listed" || fail "$comp" "$archive imported, but containerd has no image $name"
}

import_test_images() {
  local out=$D/node/images line name file
  mkdir -p "$out"
  "$repo/e2e/node/images.sh" "$out" "$BIN/pause" "$BIN" >"$out/list" 2>>"$D/containerd.log" ||
    fail containerd "building the test images (e2e/node/images.sh) failed"
  while read -r name file; do import_image "$name" "$file"; done <"$out/list"
}

start_kubelet() {
  local k=$D/node/kubelet
  mkdir -p "$k"
  cat >"$D/node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1, which the kubelet refuses since 1.35 unless told otherwise.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
cgroupsPerQOS: true
containerRuntimeEndpoint: unix://$D/node/run/containerd.sock
address: $NODE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: $KHP
readOnlyPort: 0
podLogsDir: $D/node/pod-logs
staticPodPath: ""
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS_IP]
# No host resolv.conf: pods get cluster DNS only, and it forwards nowhere.
resolvConf: ""
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
enforceNodeAllocatable: []
protectKernelDefaults: false
makeIPTablesUtilChains: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# Not lowered anyway: this machine lacks CAP_SYS_RESOURCE (see containerd.toml).
oomScoreAdj: 0
EOF
  start kubelet "$BIN/kubelet" --config="$D/node/kubelet.yaml" --kubeconfig="$D/kubeconfig-node" \
    --root-dir="$k" --cert-dir="$k/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  wait_until kubelet 90 node_ready
}

node_ready() {
  [ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

start_kube_proxy() {
  KPHP=$(free_port) KPMP=$(free_port)
  printf 'KPHP=%s\nKPMP=%s\n' "$KPHP" "$KPMP" >>"$D/ports"
  cat >"$D/node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $D/kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$KPHP
metricsBindAddress: 127.0.0.1:$KPMP
nodePortAddresses: [$NODE_IP/32]
# Service traffic between two pods on the one bridge must come back through the namespace to be
# un-NATed: masquerade all of it rather than depend on br_netfilter.
nftables: {masqueradeAll: true}
# Zero: leave the (partly global) conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
EOF
  start kube-proxy "$BIN/kube-proxy" --config="$D/node/kube-proxy.yaml" --v=1
  wait_until kube-proxy 60 curl -fsS "http://127.0.0.1:$KPHP/healthz"
}

start_coredns() {
  DNSHP=$(free_port) DNSRP=$(free_port)
  printf 'DNSHP=%s\nDNSRP=%s\n' "$DNSHP" "$DNSRP" >>"$D/ports"
  cat >"$D/node/Corefile" <<EOF
.:53 {
    errors
    health 127.0.0.1:$DNSHP
    ready 127.0.0.1:$DNSRP
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $D/kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    loadbalance
}
EOF
  start coredns "$BIN/coredns" -conf "$D/node/Corefile"
  wait_until coredns 60 curl -fsS "http://127.0.0.1:$DNSRP/ready"
}

# Builds our image from a step-operator binary the way users do without docker
# (image/build-oci.sh) and imports it. Prints the image name.
cmd_image() {
  local binary=${1:-}
  [ -x "$binary" ] || { echo "usage: $0 image PATH/TO/step-operator (a release build: make release)" >&2; exit 2; }
  [ -f "$D/ports" ] || { echo "cluster.sh: not running" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$D/ports"
  alive kubelet || { echo "cluster.sh: this cluster has no node (E2E_NODE=0, or its kubelet is gone)" >&2; exit 1; }
  local name out=$D/node/images/step-operator.tar
  mkdir -p "$D/node/images"
  # build-oci.sh prints "NAME FILE" last.
  name=$("$repo/image/build-oci.sh" "$binary" "$out" 2>>"$D/containerd.log" | awk 'END {print $1}') ||
    fail containerd "image/build-oci.sh $binary failed"
  import_image "$name" "$out"
  echo "$name"
}

start_node() {
  record_host_state
  make_node_cgroups
  log "starting kube-controller-manager and kube-scheduler"
  start_controller_manager
  start_scheduler
  log "starting containerd (runc: $(command -v runc)) and importing the test images"
  start_containerd
  import_test_images
  log "starting the kubelet ($NODE_NAME at $NODE_IP)"
  write_kubeconfig "$D/kubeconfig-node" node
  KHP=$(free_port)
  echo "KHP=$KHP" >>"$D/ports"
  start_kubelet
  log "starting kube-proxy (nftables) and CoreDNS"
  start_kube_proxy
  start_coredns
}

# Stops the pods first (so that their sandboxes and network namespaces are torn down by the
# runtime), then the node's processes, then removes what they left on the host.
stop_node() {
  local p c
  # The controllers first, or the pods deleted below would be replaced.
  for c in scheduler controller-manager; do p=$(pid_of "$c" 2>/dev/null) && stop_pid "$p" "$c"; done
  if alive kubelet && [ -f "$D/kubeconfig" ]; then
    kubectl_ delete pods --all-namespaces --all --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    wait_no_containers 30 || log "containers still running 30s after deleting every pod; killing them"
  fi
  for c in coredns kube-proxy kubelet; do p=$(pid_of "$c" 2>/dev/null) && stop_pid "$p" "$c"; done
  if alive containerd; then
    kill_all_tasks
    p=$(pid_of containerd) && stop_pid "$p" containerd
  fi
  stop_shims
  # kube-proxy's tables live in the namespace, which `down` deletes.
  unmount_under "$D/node"
  remove_node_cgroups
  restore_host_state
  release_node
}

running_tasks() { ctr_ tasks ls -q 2>/dev/null; }
no_running_tasks() { [ -z "$(running_tasks)" ]; }
wait_no_containers() { poll_until "$1" no_running_tasks; }

kill_all_tasks() {
  local t
  for t in $(running_tasks); do
    ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
  done
  for t in $(running_tasks); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
}

# A shim outlives containerd by design; each wrote its PID next to its bundle.
stop_shims() {
  local f p
  for f in "$D"/node/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    [ -n "$p" ] && stop_pid "$p" "containerd-shim ($(basename "$(dirname "$f")"))"
  done
  return 0
}
