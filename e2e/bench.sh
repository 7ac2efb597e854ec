#!/usr/bin/env bash
# `make bench`: step-operator against step-ca's own ceiling, step-issuer and autocert on the local
# control plane of e2e/cluster.sh. Method and latest numbers: e2e/BENCHMARKS.md.
#
#   e2e/bench.sh                                   the issue's counts (1,000 requests, 1,000 pods, ...)
#   BENCH_ARGS="--requests 50 --pods 50 --steady-crs 200 --steady-secrets 200 --ceiling-secs 5" e2e/bench.sh
#
# Environment:
#   BENCH_ARGS          arguments for the bench binary (see e2e/BENCHMARKS.md)
#   STEP_OPERATOR_BIN   use this step-operator binary instead of building --release
#   BENCH_REQUIRE_QUIET=1  refuse to run while compilers or other CPU-heavy processes are running
#   BENCH_KEEP_CLUSTER=1   leave a cluster that this script started running
#
# Everything is built first; nothing compiles while measuring. Results go to e2e/.state/bench/
# (removed by `cluster.sh down`) and are copied to ${XDG_CACHE_HOME:-$HOME/.cache}/step-operator-e2e/bench/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
CARGO=${CARGO:-cargo}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
keep=${XDG_CACHE_HOME:-$HOME/.cache}/step-operator-e2e/bench

log() { printf '[bench.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# 1. Builds: step-operator (release), the bench binary, the e2e components and the peers.
if [ -z "${STEP_OPERATOR_BIN:-}" ]; then
  log "building step-operator --release"
  (cd "$repo" && $CARGO build --release --locked --bin step-operator)
  STEP_OPERATOR_BIN=$CARGO_TARGET_DIR/release/step-operator
fi
export STEP_OPERATOR_BIN
log "building the bench binary --release"
(cd "$repo" && $CARGO build --release --locked -p e2e --bin bench)
log "building the e2e components and the peers (step-issuer, autocert) into the e2e cache if needed"
"$here/build-infra.sh" >/dev/null

# 2. The cluster: reuse a running one, otherwise start one and stop it afterwards.
started=0
if ! "$here/cluster.sh" status >/dev/null 2>&1; then
  # Without the node: its kubelet and controllers would take CPU from what is measured, and the
  # numbers stay comparable with earlier runs.
  E2E_NODE=0 "$here/cluster.sh" up
  started=1
fi
cleanup() {
  if [ "$started" = 1 ] && [ "${BENCH_KEEP_CLUSTER:-0}" != 1 ]; then "$here/cluster.sh" down; fi
}
trap cleanup EXIT
eval "$("$here/cluster.sh" env)"

# 3. Nothing may compile meanwhile: name what else is busy (recorded in the JSON as a note).
busy=$(ps -eo pid=,pcpu=,comm= --sort=-pcpu |
  awk -v self=$$ '$1 != self && $2 >= 20 && $3 ~ /^(cargo|rustc|cc1|cc1plus|ld|go|compile|link|clippy-driver)$/ {printf "%s(pid %s, %s%% CPU) ", $3, $1, $2}')
if [ -n "$busy" ]; then
  log "other CPU-heavy processes are running: $busy"
  if [ "${BENCH_REQUIRE_QUIET:-0}" = 1 ]; then log "BENCH_REQUIRE_QUIET=1: not measuring"; exit 1; fi
fi
export BENCH_BUSY="$busy"

# 4. Measure, inside the cluster's network namespace (nothing of the cluster is reachable
# from outside it).
rc=0
# shellcheck disable=SC2086
"$here/cluster.sh" exec "$CARGO_TARGET_DIR/release/bench" ${BENCH_ARGS:-} || rc=$?

# 5. The node phase (7): pod create → Ready through autocert, our webhook and pod certificates,
# on a cluster with the node (the phases above run without it, so that its kubelet takes no CPU
# from them). BENCH_NODE=0 skips it.
node_phase() {
  if [ "${BENCH_NODE:-1}" = 0 ]; then log "BENCH_NODE=0: node phase skipped"; return 0; fi
  if ! grep -qx 'export E2E_NODE=1' "$E2E_STATE/env"; then
    if [ "$started" != 1 ]; then
      log "the running cluster has no node: stop it (e2e/cluster.sh down) or set BENCH_NODE=0"
      return 1
    fi
    "$here/cluster.sh" down
    # E2E_NODE=0 came into this script's environment with the first cluster's env.
    E2E_NODE=1 "$here/cluster.sh" up
  fi
  eval "$("$here/cluster.sh" env)"
  local image
  image=$("$here/cluster.sh" image "$STEP_OPERATOR_BIN") || return 1
  # shellcheck disable=SC2086
  "$here/cluster.sh" exec env E2E_OPERATOR_IMAGE="$image" "$CARGO_TARGET_DIR/release/bench" \
    --only node --requests 1 ${BENCH_NODE_ARGS:-}
}
keep_results() {
  local stem=$1 stamp
  [ -f "$E2E_STATE/bench/$stem.json" ] || return 0
  mkdir -p "$keep"
  stamp=$(jq -r '.date' "$E2E_STATE/bench/$stem.json" | tr -d ':')
  cp "$E2E_STATE/bench/$stem.json" "$keep/$stem.json"
  cp "$E2E_STATE/bench/$stem.md" "$keep/$stem.md"
  cp "$E2E_STATE/bench/$stem.json" "$keep/$stamp-$stem.json"
  log "results: $E2E_STATE/bench/$stem.{json,md}, copied to $keep/ ($stem.* and $stamp-$stem.json)"
}
# The node phase's logs (step-operator's, the kubelet's, the pods'), which `cluster.sh down`
# would remove: a slow pod can then be explained.
keep_node_logs() {
  local dir
  [ -f "$E2E_STATE/bench/node.json" ] || return 0
  dir=$keep/$(jq -r '.date' "$E2E_STATE/bench/node.json" | tr -d ':')-node-logs
  mkdir -p "$dir"
  cp -r "$E2E_STATE"/logs "$E2E_STATE"/*.log "$dir"/ 2>/dev/null
  [ -d "$E2E_STATE/node/pod-logs" ] && cp -r "$E2E_STATE/node/pod-logs" "$dir"/ 2>/dev/null
  log "node phase logs kept in $dir"
}
keep_results latest
node_phase || rc=$?
keep_results node
keep_node_logs
exit $rc
