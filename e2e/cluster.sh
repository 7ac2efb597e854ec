#!/usr/bin/env bash
# The real local cluster for step-operator's e2e tests, sealed in a network namespace of its own
# (no interface leads out of it): etcd, kube-apiserver (Node+RBAC), cert-manager's controllers
# (cm-lite), step-ca, and a node (kube-controller-manager, kube-scheduler, containerd + runc, the
# kubelet, kube-proxy, CoreDNS; e2e/node.sh). E2E_NODE=0 leaves the node out.
#
#   e2e/cluster.sh up       build if needed, start everything, wait until ready (idempotent)
#   e2e/cluster.sh exec CMD run CMD inside the cluster's network namespace, with `env` exported
#                           (the tests run this way: from outside nothing of the cluster is reachable)
#   e2e/cluster.sh shell    an interactive shell in there
#   e2e/cluster.sh image BIN  build our image from a release binary and import it into the node
#   e2e/cluster.sh env      print `export` lines for the tests (KUBECONFIG, E2E_BIN, STEP_CA_*, ...)
#   e2e/cluster.sh status   report each component
#   e2e/cluster.sh down     stop everything by saved PID and remove the state
#   e2e/cluster.sh stop|start step-ca|apiserver|cert-manager   (fault-injection tests)
#   e2e/cluster.sh empty-apiserver NAME   a second apiserver on the same etcd, with no objects and no
#                                         CRDs (prints its kubeconfig; stopped by `down`)
#
# State and logs live in e2e/.state/ of this checkout, and each checkout has its own namespace, so
# two checkouts run side by side; only one of them may have the node (see e2e/node.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
D=${E2E_STATE:-$here/.state}
P=$D/pki
# The cluster's network namespace, one per checkout.
NS=step-e2e-$(printf '%s' "$D" | sha256sum | cut -c1-8)
NS_PATH=/run/netns/$NS
# shellcheck source=node.sh
. "$here/node.sh"
# Start order; `down` stops in reverse.
control_plane_components() {
  COMPONENTS=(etcd apiserver)
  if node_wanted; then COMPONENTS+=("${NODE_COMPONENTS[@]}"); fi
  COMPONENTS+=(cert-manager step-ca)
}
control_plane_components

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# fail COMPONENT MESSAGE: one line naming the cause, the tail of the component's log, then cleanup.
fail() {
  local comp=$1; shift
  printf 'cluster.sh: %s failed: %s (log: %s)\n' "$comp" "$*" "$D/$comp.log" >&2
  if [ -f "$D/$comp.log" ]; then
    printf -- '--- last lines of %s ---\n' "$D/$comp.log" >&2
    tail -n 30 "$D/$comp.log" >&2
    printf -- '---\n' >&2
    # Again after the excerpt: a CI log is often read from its end.
    printf 'cluster.sh: %s failed: %s\n' "$comp" "$*" >&2
  fi
  exit 1
}

in_netns() { [ "$(ip netns identify 2>/dev/null)" = "$NS" ]; }

# Re-runs this script inside the cluster's namespace (nsenter, not `ip netns exec`: that remounts
# /sys and hides the cgroup v1 hierarchies the kubelet needs).
enter_netns() {
  in_netns && return 0
  [ -e "$NS_PATH" ] || { echo "cluster.sh: not running (no network namespace $NS); run e2e/cluster.sh up" >&2; exit 1; }
  exec nsenter --net="$NS_PATH" "$0" "$@"
}

# The namespace and its links. Sealed by construction: it holds only loopback, a veth pair whose
# both ends are inside (the node IP; the kubelet refuses a loopback one and this kernel has no
# `dummy` links) and the pods' bridge that CNI adds, and it has no default route. A packet for any
# other address fails with "Network is unreachable" where it starts (node_network_is_sealed).
create_netns() {
  ip netns add "$NS" || fail netns "ip netns add $NS failed: network namespaces need root and a kernel with CONFIG_NET_NS"
  local ipn=(ip -n "$NS")
  "${ipn[@]}" link set lo up
  "${ipn[@]}" link add node0 type veth peer name node0-peer ||
    fail netns "creating a veth pair failed: the node needs the kernel's veth driver (CONFIG_VETH)"
  "${ipn[@]}" addr add "$NODE_IP/24" dev node0
  "${ipn[@]}" addr add "$NODE_PEER_IP/24" dev node0-peer
  "${ipn[@]}" link set node0 up
  "${ipn[@]}" link set node0-peer up
  # Processes of the namespace itself (the apiserver calling a webhook) reach Service IPs: the
  # route only has to exist for the routing decision; kube-proxy's rules then send the packet to
  # the pod. Nothing else is routed, and there is no default route.
  "${ipn[@]}" route add "$SERVICE_CIDR" dev node0
  # Per-namespace: pods reach Services (DNAT here) and each other through this namespace; and
  # every packet a pod sends outward gets its "Network is unreachable" at once (the kernel's ICMP
  # rate limit would otherwise leave a second attempt within a second to time out instead).
  nsenter --net="$NS_PATH" sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.icmp_ratelimit=0
}

delete_netns() {
  [ -e "$NS_PATH" ] || return 0
  ip netns delete "$NS" 2>/dev/null || log "could not delete network namespace $NS"
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$D/kubeconfig" "$@"; }

pid_of() { [ -f "$D/$1.pid" ] && cat "$D/$1.pid"; }
# A stopped process may linger as a zombie until its parent reaps it: that counts as dead.
pid_alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }
alive() { local p; p=$(pid_of "$1" 2>/dev/null) && [ -n "$p" ] && pid_alive "$p"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_in_use() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}

# start NAME CMD...: runs CMD in the background with its output in $D/NAME.log and its PID saved.
start() {
  local name=$1; shift
  # Append: a component restarted by a fault test keeps its earlier log.
  nohup "$@" >>"$D/$name.log" 2>&1 </dev/null &
  echo $! >"$D/$name.pid"
}

# poll_until TIMEOUT_S CMD...: polls CMD every 0.2 s until it succeeds (status 0) or TIMEOUT_S
# seconds have passed (status 1).
poll_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# ready_or_gone NAME CMD...: CMD succeeds, or NAME's process is no longer there to wait for.
ready_or_gone() { local name=$1; shift; "$@" || ! alive "$name"; }

# wait_until NAME TIMEOUT_S CMD...: polls CMD until it succeeds; fails fast if NAME's process died.
wait_until() {
  local name=$1 timeout=$2; shift 2
  poll_until "$timeout" ready_or_gone "$name" "$@" || fail "$name" "not ready after ${timeout}s"
  alive "$name" || fail "$name" "the process exited during start-up"
}

make_pki() {
  mkdir -p "$P"
  printf '%s\n' basicConstraints=critical,CA:TRUE keyUsage=critical,keyCertSign,cRLSign,digitalSignature \
    subjectKeyIdentifier=hash >"$P/ca.ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$P/ca.key" -subj /CN=e2e-cluster-ca -out "$P/ca.csr" 2>/dev/null
  openssl x509 -req -in "$P/ca.csr" -signkey "$P/ca.key" -days 3650 -extfile "$P/ca.ext" -out "$P/ca.crt" 2>/dev/null
  leaf() {
    local n=$1 subj=$2; shift 2
    openssl req -new -newkey rsa:2048 -nodes -keyout "$P/$n.key" -subj "$subj" -out "$P/$n.csr" 2>/dev/null
    printf '%s\n' basicConstraints=CA:FALSE authorityKeyIdentifier=keyid \
      keyUsage=critical,digitalSignature,keyEncipherment "$@" >"$P/$n.ext"
    openssl x509 -req -in "$P/$n.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 3650 \
      -extfile "$P/$n.ext" -out "$P/$n.crt" 2>/dev/null
  }
  leaf apiserver /CN=kube-apiserver extendedKeyUsage=serverAuth \
    subjectAltName=IP:127.0.0.1,IP:$NODE_IP,DNS:localhost,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1
  # O=system:masters makes the admin a cluster-admin; the user has no group and no rights.
  leaf admin "/O=system:masters/CN=e2e-admin" extendedKeyUsage=clientAuth
  leaf user "/CN=e2e-user" extendedKeyUsage=clientAuth
  # The kubelet's identity, so that the Node authorizer and NodeRestriction apply to it.
  leaf node "/O=system:nodes/CN=system:node:$NODE_NAME" extendedKeyUsage=clientAuth
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$P/sa.key" 2>/dev/null
  openssl pkey -in "$P/sa.key" -pubout -out "$P/sa.pub" 2>/dev/null
}

write_kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://127.0.0.1:$AP", certificate-authority: "$P/ca.crt"}}]
users: [{name: $user, user: {client-certificate: "$P/$user.crt", client-key: "$P/$user.key"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: $user}}]
current-context: e2e
EOF
}

apiserver_ready() {
  curl -fsS --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" "https://127.0.0.1:$AP/readyz"
}

start_etcd() {
  start etcd "$BIN/etcd" --name e2e --data-dir "$D/etcd" \
    --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
    --listen-peer-urls "http://127.0.0.1:$EPP" --initial-advertise-peer-urls "http://127.0.0.1:$EPP" \
    --initial-cluster "e2e=http://127.0.0.1:$EPP" --unsafe-no-fsync --log-level warn
  wait_until etcd 60 curl -fsS "http://127.0.0.1:$EP/readyz"
}

# apiserver_args PORT ETCD_PREFIX CERT_DIR: the flags every kube-apiserver started here shares,
# in APISERVER_ARGS.
apiserver_args() {
  APISERVER_ARGS=(
    --etcd-servers="http://127.0.0.1:$EP" --etcd-prefix="$2"
    --secure-port="$1"
    --cert-dir="$3" --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key"
    --client-ca-file="$P/ca.crt"
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key"
    --service-cluster-ip-range="$SERVICE_CIDR"
    --allow-privileged=true
    --v=1
  )
}

start_apiserver() {
  apiserver_args "$AP" /registry "$D/apiserver"
  if node_wanted; then
    # Pods reach it through the `kubernetes` Service, whose endpoint is the node IP: it listens on
    # every address of the sealed namespace.
    APISERVER_ARGS+=(
      --bind-address=0.0.0.0 --advertise-address="$NODE_IP"
      --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
      --kubelet-client-certificate="$P/admin.crt" --kubelet-client-key="$P/admin.key"
      --kubelet-preferred-address-types=InternalIP
    )
  else
    # As in envtest: without kube-controller-manager no `default` ServiceAccount exists and every
    # Pod create would fail the ServiceAccount admission plugin.
    APISERVER_ARGS+=(
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none
      --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount
    )
  fi
  start apiserver "$BIN/kube-apiserver" "${APISERVER_ARGS[@]}"
  wait_until apiserver 120 apiserver_ready
}

apply_crds() {
  local k=("$BIN/kubectl" --kubeconfig "$D/kubeconfig")
  local files=("$BIN"/cert-manager-crds/*.yaml)
  if compgen -G "$repo/crds/*.yaml" >/dev/null; then files+=("$repo"/crds/*.yaml); fi
  local args=() f
  for f in "${files[@]}"; do args+=(-f "$f"); done
  "${k[@]}" apply --server-side "${args[@]}" >>"$D/apiserver.log" 2>&1 || fail apiserver "applying CRDs failed"
  "${k[@]}" wait --for condition=established --timeout=60s crd --all >>"$D/apiserver.log" 2>&1 ||
    fail apiserver "CRDs did not become Established"
}

start_cert_manager() {
  local seen=0
  [ -f "$D/cert-manager.log" ] && seen=$(wc -l <"$D/cert-manager.log")
  start cert-manager "$BIN/cert-manager-controller" --kubeconfig "$D/kubeconfig" \
    --cluster-resource-namespace kube-system --enable-certificate-owner-ref
  wait_until cert-manager 60 bash -c "tail -n +$((seen + 1)) '$D/cert-manager.log' | grep -q 'cert-manager-controller: running'"
}

start_step_ca() {
  export STEPPATH=$D/step
  mkdir -p "$STEPPATH"
  printf 'e2e-provisioner-pass' >"$D/step-pass"
  # Pods reach it at the node IP (STEP_CA_NODE_URL); the host, at 127.0.0.1. Both are inside the
  # sealed namespace.
  "$BIN/step" ca init --name "e2e CA" --dns 127.0.0.1 --dns localhost --dns "$NODE_IP" --address ":$SP" \
    --provisioner e2e --password-file "$D/step-pass" --provisioner-password-file "$D/step-pass" \
    --deployment-type standalone >"$D/step-ca.log" 2>&1 || fail step-ca "step ca init failed"
  # Certificates up to 2160h (cert-manager's default 90 days) and down to 1m (renewal tests).
  local cfg=$STEPPATH/config/ca.json
  jq '.authority.claims = {"minTLSCertDuration": "1m", "maxTLSCertDuration": "2160h", "defaultTLSCertDuration": "24h"}' \
    "$cfg" >"$cfg.new" && mv "$cfg.new" "$cfg"
  # A provisioner of another type, for the "not a JWK provisioner" tests.
  "$BIN/step" ca provisioner add acme --type ACME --ca-config "$cfg" >>"$D/step-ca.log" 2>&1 ||
    fail step-ca "adding the ACME provisioner failed"
  add_fidelity_provisioners "$cfg"
  run_step_ca
}

# The fidelity tests' provisioners (same password as e2e):
# - e2e-fidelity: the leaf template of docs/templates (keeps the CSR's subject and usages), and
#   its own lifetime claims, which clients can read from /provisioners;
# - e2e-ca: the CA template of docs/templates, for isCA requests;
# - e2e-nokey: a JWK provisioner without encryptedKey; its private key (the JWE that
#   `step crypto jwk create` writes) is only in $D/nokey.jwe.json;
# - e2e-norenew: renewal disabled (`claims.disableRenewal`), so that step-ca refuses every
#   renewal of what it signs: the pod tests' re-bootstrap after a refused renewal.
add_fidelity_provisioners() {
  local cfg=$1 templates=$repo/docs/templates
  "$BIN/step" ca provisioner add e2e-fidelity --type JWK --create --password-file "$D/step-pass" \
    --x509-template "$templates/leaf-fidelity.tpl" --x509-min-dur 1m --x509-max-dur 48h \
    --x509-default-dur 24h --ca-config "$cfg" >>"$D/step-ca.log" 2>&1 ||
    fail step-ca "adding the e2e-fidelity provisioner failed"
  "$BIN/step" ca provisioner add e2e-ca --type JWK --create --password-file "$D/step-pass" \
    --x509-template "$templates/ca.tpl" --ca-config "$cfg" >>"$D/step-ca.log" 2>&1 ||
    fail step-ca "adding the e2e-ca provisioner failed"
  "$BIN/step" crypto jwk create "$D/nokey.pub.json" "$D/nokey.jwe.json" --kty EC --crv P-256 \
    --password-file "$D/step-pass" --force >>"$D/step-ca.log" 2>&1 ||
    fail step-ca "creating the e2e-nokey key failed"
  "$BIN/step" ca provisioner add e2e-nokey --type JWK --public-key "$D/nokey.pub.json" \
    --ca-config "$cfg" >>"$D/step-ca.log" 2>&1 ||
    fail step-ca "adding the e2e-nokey provisioner failed"
  "$BIN/step" ca provisioner add e2e-norenew --type JWK --create --password-file "$D/step-pass" \
    --disable-renewal --ca-config "$cfg" >>"$D/step-ca.log" 2>&1 ||
    fail step-ca "adding the e2e-norenew provisioner failed"
}

run_step_ca() {
  start step-ca "$BIN/step-ca" "$D/step/config/ca.json" --password-file "$D/step-pass"
  wait_until step-ca 60 curl -fsS --cacert "$D/step/certs/root_ca.crt" "https://127.0.0.1:$SP/health"
}

# For fault-injection tests: stop or (re)start one component of a running cluster.
cmd_component() {
  local action=$1 comp=${2:-}
  [ -f "$D/ports" ] || { echo "cluster.sh: not running" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$D/ports"
  case "$action:$comp" in
    stop:step-ca|stop:apiserver|stop:cert-manager) stop_pid "$(pid_of "$comp")" "$comp" ;;
    start:step-ca) alive step-ca || run_step_ca ;;
    start:apiserver) alive apiserver || start_apiserver ;;
    start:cert-manager) alive cert-manager || start_cert_manager ;;
    *) echo "usage: $0 stop|start step-ca|apiserver|cert-manager" >&2; exit 2 ;;
  esac
}

# For tests that need an API server without our CRDs: a second kube-apiserver on the same etcd
# under its own key prefix (so it starts empty), on a free port. Prints its admin kubeconfig.
# Its PID is saved as extra-apiserver-NAME.pid, so `down` stops it with the test processes.
cmd_empty_apiserver() {
  local name=${1:-}
  [[ "$name" =~ ^[a-z0-9-]+$ ]] || { echo "usage: $0 empty-apiserver NAME (lower-case letters, digits, -)" >&2; exit 2; }
  [ -f "$D/ports" ] || { echo "cluster.sh: not running" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$D/ports"
  local port dir comp=extra-apiserver-$name
  port=$(free_port)
  dir=$D/apiserver-$name
  mkdir -p "$dir"
  apiserver_args "$port" "/registry-$name" "$dir"
  APISERVER_ARGS+=(
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none
    --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount
  )
  start "$comp" "$BIN/kube-apiserver" "${APISERVER_ARGS[@]}"
  AP=$port write_kubeconfig "$dir/kubeconfig" admin
  AP=$port wait_until "$comp" 120 apiserver_ready
  echo "$dir/kubeconfig"
}

write_env() {
  local kid
  kid=$(jq -r '.authority.provisioners[] | select(.name == "e2e") | .key.kid' "$D/step/config/ca.json")
  cat >"$D/env" <<EOF
export KUBECONFIG=$D/kubeconfig
export E2E_BIN=$BIN
export E2E_STATE=$D
export E2E_USER_KUBECONFIG=$D/kubeconfig-user
export STEP_CA_URL=https://127.0.0.1:$SP
export STEP_CA_NODE_URL=https://$NODE_IP:$SP
export E2E_NODE=$(node_wanted && alive kubelet && echo 1 || echo 0)
export E2E_NODE_NAME=$NODE_NAME
export E2E_NODE_IP=$NODE_IP
export E2E_NETNS=$NS
export E2E_CONTAINERD_SOCK=$D/node/run/containerd.sock
export E2E_TOOLS_IMAGE=$TOOLS_IMAGE
export E2E_HOST_ADDRS="$(cat "$D/host-addrs" 2>/dev/null)"
export STEP_CA_ROOT=$D/step/certs/root_ca.crt
export STEP_CA_CONFIG=$D/step/config/ca.json
export STEP_PROVISIONER=e2e
export STEP_PROVISIONER_KID=$kid
export STEP_PROVISIONER_PASSWORD_FILE=$D/step-pass
export STEP_NOKEY_JWE=$D/nokey.jwe.json
EOF
}

all_alive() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
}

cmd_up() {
  if [ -f "$D/env" ] && all_alive; then
    log "already running; checking it"
    "$0" status
    return
  fi
  # A second `up` after a crash starts clean.
  if [ -d "$D" ] || [ -e "$NS_PATH" ]; then "$0" down; fi
  for tool in openssl curl jq python3 flock nsenter ip; do
    command -v "$tool" >/dev/null || { echo "cluster.sh: $tool is not installed; install it (apt-get install $tool)" >&2; exit 1; }
  done
  BIN=$("$here/build-infra.sh" | tail -n 1)
  [ -x "$BIN/kube-apiserver" ] || { echo "cluster.sh: build-infra.sh did not produce $BIN/kube-apiserver" >&2; exit 1; }
  if node_wanted; then
    for tool in runc nft; do
      command -v "$tool" >/dev/null || { echo "cluster.sh: the node needs $tool: apt-get install ${tool/nft/nftables} (or E2E_NODE=0 for a cluster without a node)" >&2; exit 1; }
    done
    for tool in umoci busybox; do
      command -v "$tool" >/dev/null || { echo "cluster.sh: the node's images need $tool: apt-get install ${tool/busybox/busybox-static}" >&2; exit 1; }
    done
  fi
  mkdir -p "$D"
  echo "$BIN" >"$D/bin"
  node_wanted && echo 1 >"$D/node-wanted" || echo 0 >"$D/node-wanted"
  # Before anything starts: a second checkout learns at once that the node is taken.
  if node_wanted; then claim_node; fi
  # A failed `up` leaves nothing running.
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "start-up failed; stopping what was started"; "$0" down; fi' EXIT
  make_pki
  # This machine's own addresses: the sealing test proves that no pod reaches them.
  ip -4 -o addr show scope global | awk '{sub(/\/.*/, "", $4); print $4}' | tr '\n' ' ' >"$D/host-addrs"
  create_netns
  trap - EXIT
  # Everything else starts inside the namespace.
  exec nsenter --net="$NS_PATH" "$0" up-inside
}

up_inside() {
  BIN=$(cat "$D/bin")
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "start-up failed; stopping what was started"; cmd_down; fi' EXIT
  local t0=$SECONDS
  EP=$(free_port) EPP=$(free_port) AP=$(free_port) SP=$(free_port)
  for p in "$EP" "$EPP" "$AP" "$SP"; do
    if port_in_use "$p"; then echo "cluster.sh: port $p on 127.0.0.1 is in use; re-run up" >&2; exit 1; fi
  done
  printf 'EP=%s\nEPP=%s\nAP=%s\nSP=%s\nBIN=%s\n' "$EP" "$EPP" "$AP" "$SP" "$BIN" >"$D/ports"
  log "starting etcd on :$EP"
  start_etcd
  log "starting kube-apiserver on :$AP"
  start_apiserver
  write_kubeconfig "$D/kubeconfig" admin
  write_kubeconfig "$D/kubeconfig-user" user
  log "applying CRDs"
  apply_crds
  if node_wanted; then start_node; fi
  log "starting cert-manager controllers"
  start_cert_manager
  log "starting step-ca on :$SP"
  start_step_ca
  write_env
  trap - EXIT
  log "ready in $((SECONDS - t0))s; run tests with: e2e/cluster.sh exec cargo test -p e2e"
}

cmd_down() {
  local i c p
  [ -f "$D/ports" ] && . "$D/ports"
  if [ -f "$D/bin" ]; then BIN=$(cat "$D/bin"); fi
  # Processes the tests started (controllers, webhooks) saved their PIDs here too: stop them first.
  for f in "$D"/extra-*.pid; do
    [ -f "$f" ] && stop_pid "$(cat "$f")" "$(basename "$f" .pid)"
  done
  # The node first: its pods talk to everything else.
  if [ -f "$D/kubelet.pid" ] || [ -f "$D/containerd.pid" ] || [ -f "$D/controller-manager.pid" ]; then stop_node; fi
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[$i]}
    p=$(pid_of "$c" 2>/dev/null) || continue
    stop_pid "$p" "$c"
  done
  delete_netns
  rm -rf "$D"
}

# wait_gone PID SECONDS: whether the process exits within SECONDS (tail blocks on it; no polling
# loop here).
wait_gone() {
  timeout "$2" tail --pid="$1" -f /dev/null 2>/dev/null
  ! pid_alive "$1"
}

# stop_pid PID NAME: SIGTERM, wait up to 15 s, then SIGKILL and wait until it is gone: a `start`
# right after must not find it still alive and skip starting (kube-apiserver draining its watches
# can outlive the 15 s).
stop_pid() {
  local p=$1 name=$2
  [ -n "$p" ] && pid_alive "$p" || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  if wait_gone "$p" 15; then log "stopped $name (pid $p)"; return 0; fi
  log "$name (pid $p) ignored SIGTERM for 15s; killing"
  kill -KILL "$p" 2>/dev/null || true
  if wait_gone "$p" 5; then log "killed $name (pid $p)"; else log "$name (pid $p) is still alive 5s after SIGKILL"; fi
}

cmd_status() {
  local c rc=0
  [ -d "$D" ] || { echo "not running (no $D)"; return 1; }
  for c in "${COMPONENTS[@]}"; do
    if alive "$c"; then printf '%-13s running (pid %s)\n' "$c" "$(pid_of "$c")"
    else printf '%-13s STOPPED (log: %s)\n' "$c" "$D/$c.log"; rc=1; fi
  done
  if [ -f "$D/ports" ]; then
    # shellcheck disable=SC1091
    . "$D/ports"
    if apiserver_ready >/dev/null 2>&1; then echo "apiserver     /readyz ok (https://127.0.0.1:$AP)"; else echo "apiserver     /readyz FAILING"; rc=1; fi
    if curl -fsS --cacert "$D/step/certs/root_ca.crt" "https://127.0.0.1:$SP/health" >/dev/null 2>&1; then
      echo "step-ca       /health ok (https://127.0.0.1:$SP)"
    else echo "step-ca       /health FAILING"; rc=1; fi
  fi
  return $rc
}

# Runs CMD inside the namespace with the cluster's environment exported.
cmd_exec() {
  [ $# -gt 0 ] || { echo "usage: $0 exec CMD [ARGS...]" >&2; exit 2; }
  [ -f "$D/env" ] || { echo "cluster.sh: not running; run e2e/cluster.sh up" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$D/env"
  # Nothing in there can reach a registry: say so at once instead of timing out.
  export CARGO_NET_OFFLINE=true
  exec "$@"
}

cmd_env() {
  [ -f "$D/env" ] || { echo "cluster.sh: not running; run e2e/cluster.sh up" >&2; exit 1; }
  cat "$D/env"
}

case "${1:-}" in
  up) cmd_up ;;
  up-inside) in_netns || exit 2; up_inside ;;
  down) if [ -e "$NS_PATH" ] && ! in_netns; then enter_netns "$@"; fi; cmd_down ;;
  status) enter_netns "$@"; cmd_status ;;
  env) cmd_env ;;
  exec) enter_netns "$@"; shift; cmd_exec "$@" ;;
  shell) enter_netns "$@"; cmd_exec "${SHELL:-bash}" ;;
  image) enter_netns "$@"; shift; cmd_image "$@" ;;
  empty-apiserver) enter_netns "$@"; shift; cmd_empty_apiserver "$@" ;;
  stop|start) enter_netns "$@"; cmd_component "$@" ;;
  *) echo "usage: $0 up|down|status|env|exec <cmd>|shell|image <binary>|stop <component>|start <component>|empty-apiserver <name>" >&2; exit 2 ;;
esac
