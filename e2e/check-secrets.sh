#!/usr/bin/env bash
# Run after the e2e suite, before `cluster.sh down`: no provisioner password, private key or
# token may appear in any step-operator log (the suite logs at debug level), Event, issuer status
# or CertificateRequest status. Looks for
#   - the provisioner password;
#   - every token and password the tests used, as they recorded them (one per line) in
#     $E2E_STATE/secrets/*.txt: pod and ServiceAccount tokens, one-time tokens, the wrong
#     passwords of the hostile tests (e2e::record_secret);
#   - PEM private keys, private JWKs (a "d" member) and anything shaped like a JWT.
# Also the node's pod logs. Prints where a secret was found, never the secret. Fails when there are no step-operator logs
# to look at, so that a run whose logs went missing cannot pass.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
eval "$("$here/cluster.sh" env)"
password=$(cat "$STEP_PROVISIONER_PASSWORD_FILE")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
k() { "$E2E_BIN/kubectl" "$@"; }
k get events.events.k8s.io -A -o json >"$tmp/events.json"
k get stepissuers,stepclusterissuers -A -o json >"$tmp/issuers.json"
# Requests keep certificates (public) in status; everything else in their status is checked.
k get certificaterequests -A -o json |
  jq '[.items[] | {name: .metadata.name, namespace: .metadata.namespace, status: ((.status // {}) | del(.certificate, .ca))}]' >"$tmp/requests.json"
logs=()
if compgen -G "$E2E_STATE/logs/*.log" >/dev/null; then logs=("$E2E_STATE"/logs/*.log); fi
if [ "${#logs[@]}" = 0 ]; then
  echo "check-secrets: no step-operator logs in $E2E_STATE/logs: nothing was checked (did the suite run?)" >&2
  exit 1
fi
# The node's pods as the kubelet logged them: step-operator's controller and webhook pods and the
# injected bootstrapper and renewer (those of pods that still exist).
while IFS= read -r f; do logs+=("$f"); done < <(find "$E2E_STATE/node/pod-logs" -name '*.log' -type f 2>/dev/null)
files=("$tmp"/*.json "${logs[@]}")
# The recorded secrets; blank or short lines would match everything, so they are dropped.
used=$tmp/used.list
: >"$used"
if compgen -G "$E2E_STATE/secrets/*.txt" >/dev/null; then
  cat "$E2E_STATE"/secrets/*.txt | awk 'length($0) >= 8' | sort -u >"$used"
fi
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
if [ -s "$used" ]; then
  check "a token or password the tests used (listed in $E2E_STATE/secrets)" -F -f "$used"
fi
check "a PEM private key" -E -- "PRIVATE KEY-----"
# A private JWK member, as JSON or escaped inside a log line: "d":"<base64url>".
check "a private JWK (\"d\" member)" -E -- '\\?"d\\?"[[:space:]]*:[[:space:]]*\\?"[A-Za-z0-9_-]{16,}'
check "a JWT (one-time or ServiceAccount token)" -E -- 'eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}'
if [ "$found" = 0 ]; then
  echo "check-secrets: none of $(wc -l <"$used") recorded secrets, the provisioner password, a private key or a JWT in ${#logs[@]} step-operator logs, Events or statuses"
fi
exit $found
