#!/usr/bin/env bash
# Run after the e2e suite, before `cluster.sh down`: no provisioner password, private key or
# one-time token may appear in any step-operator log (the suite logs at debug level), Event,
# issuer status or CertificateRequest status. Prints where a secret was found, never the secret.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
eval "$("$here/cluster.sh" env)"
password=$(cat "$STEP_PROVISIONER_PASSWORD_FILE")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
k() { "$E2E_BIN/kubectl" "$@"; }
k get events.events.k8s.io -A -o json >"$tmp/events.json"
k get stepissuers,stepclusterissuers -A -o json >"$tmp/issuers.json"
# Requests keep certificates (public) in status; only conditions and messages matter here.
k get certificaterequests -A -o json | jq '[.items[] | {name: .metadata.name, conditions: .status.conditions}]' >"$tmp/requests.json"
files=("$tmp"/*.json)
if compgen -G "$E2E_STATE/logs/*.log" >/dev/null; then files+=("$E2E_STATE"/logs/*.log); fi
found=0
check() {
  local what=$1; shift
  local hits
  hits=$(grep -l "$@" "${files[@]}" 2>/dev/null || true)
  if [ -n "$hits" ]; then
    echo "check-secrets: $what found in:" >&2
    printf '  %s\n' $hits >&2
    found=1
  fi
}
check "the provisioner password" -F -- "$password"
check "a PEM private key" -E -- "PRIVATE KEY-----"
check "a JWT (one-time or ServiceAccount token)" -E -- 'eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}'
n=$(ls "$E2E_STATE"/logs/*.log 2>/dev/null | wc -l)
if [ "$found" = 0 ]; then echo "check-secrets: no secret in $n step-operator logs, Events or statuses"; fi
exit $found
