#!/usr/bin/env bash
# After a failed e2e run, before `cluster.sh down` removes the state: keep every component's,
# step-operator's and the test-started peers' log in e2e/.last-failure/ and print the tail of each
# component's log, so that a CI run that fails says what the components saw (for example a
# kube-apiserver that exited).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
D=${E2E_STATE:-$here/.state}
keep=$here/.last-failure
[ -d "$D" ] || exit 0
rm -rf "$keep" && mkdir -p "$keep"
cp -r "$D"/*.log "$D"/logs "$keep"/ 2>/dev/null
# Other programs the tests started (step-issuer, cert-manager for a second apiserver, ...).
[ -d "$D/peer-logs" ] && cp -r "$D/peer-logs" "$keep"/ 2>/dev/null
# The node's pod logs (step-operator's own pods among them), as the kubelet wrote them.
[ -d "$D/node/pod-logs" ] && cp -r "$D/node/pod-logs" "$keep"/ 2>/dev/null
for f in "$D"/*.log; do
  [ -f "$f" ] || continue
  printf -- '--- last lines of %s ---\n' "$(basename "$f")" >&2
  tail -n 15 "$f" >&2
done
"$here/cluster.sh" status >&2 || true
echo "keep-logs: the run's logs are in $keep" >&2
