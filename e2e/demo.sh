#!/usr/bin/env bash
# `make demo`: the local control plane, step-ca, cert-manager and step-operator; issues a
# certificate through a StepClusterIssuer and prints what happened. The cluster stays up for
# exploring (`eval "$(e2e/cluster.sh env)"`); `make e2e-down` stops it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${STEP_OPERATOR_BIN:-$repo/target/debug/step-operator}

"$here/cluster.sh" up
eval "$("$here/cluster.sh" env)"
k() { "$E2E_BIN/kubectl" "$@"; }
say() { printf '\n== %s\n' "$*"; }

say "starting step-operator controller (log: $E2E_STATE/logs/demo-controller.log)"
mkdir -p "$E2E_STATE/logs"
if [ -f "$E2E_STATE/extra-demo-controller.pid" ] && kill -0 "$(cat "$E2E_STATE/extra-demo-controller.pid")" 2>/dev/null; then
  echo "already running"
else
  STEP_OPERATOR_ADMIN_ADDR=127.0.0.1:0 nohup "$bin" controller --leader-elect=false \
    --cluster-resource-namespace step-operator >"$E2E_STATE/logs/demo-controller.log" 2>&1 </dev/null &
  echo $! >"$E2E_STATE/extra-demo-controller.pid"
fi

say "creating the provisioner password Secret and a StepClusterIssuer"
k create namespace step-operator --dry-run=client -o yaml | k apply -f - >/dev/null
k -n step-operator create secret generic step-ca-password \
  --from-file=password="$STEP_PROVISIONER_PASSWORD_FILE" --dry-run=client -o yaml | k apply -f - >/dev/null
cat <<EOF | k apply -f -
apiVersion: certmanager.step.sm/v1beta1
kind: StepClusterIssuer
metadata:
  name: step-ca
spec:
  url: $STEP_CA_URL
  caBundle: $(base64 -w0 "$STEP_CA_ROOT")
  provisioner:
    name: $STEP_PROVISIONER
    passwordRef:
      name: step-ca-password
      namespace: step-operator
      key: password
EOF
k wait --for=condition=Ready stepclusterissuer/step-ca --timeout=60s >/dev/null
k get stepclusterissuers

say "requesting a Certificate from it"
k create namespace demo --dry-run=client -o yaml | k apply -f - >/dev/null
cat <<EOF | k apply -f -
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: web
  namespace: demo
spec:
  secretName: web-tls
  commonName: web.demo.svc.cluster.local
  dnsNames: [web.demo.svc.cluster.local, web.demo.svc]
  duration: 24h
  issuerRef: {group: certmanager.step.sm, kind: StepClusterIssuer, name: step-ca}
EOF
k -n demo wait --for=condition=Ready certificate/web --timeout=90s >/dev/null
k -n demo get certificate,certificaterequest

say "the issued certificate (Secret demo/web-tls)"
tmp=$(mktemp -d)
k -n demo get secret web-tls -o jsonpath='{.data.tls\.crt}' | base64 -d >"$tmp/tls.crt"
STEPPATH=$tmp "$E2E_BIN/step" certificate inspect --short "$tmp/tls.crt"
STEPPATH=$tmp "$E2E_BIN/step" certificate verify "$tmp/tls.crt" --roots "$STEP_CA_ROOT" && echo "chain verifies against the step-ca root"
rm -rf "$tmp"

say "starting the webhook (log: $E2E_STATE/logs/demo-webhook.log) and registering it"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wp=$(free_port); ap=$(free_port)
k apply -f - >/dev/null <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: step-operator-demo}
webhooks:
- name: autocert.step.sm
  clientConfig: {url: "https://127.0.0.1:$wp/mutate"}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
  namespaceSelector: {matchLabels: {autocert.step.sm: enabled}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 10
YAML
if [ -f "$E2E_STATE/extra-demo-webhook.pid" ]; then kill "$(cat "$E2E_STATE/extra-demo-webhook.pid")" 2>/dev/null || true; fi
POD_NAMESPACE=step-operator nohup "$bin" webhook --default-issuer step-ca --listen-addr "127.0.0.1:$wp" \
  --admin-addr "127.0.0.1:$ap" --tls-san 127.0.0.1 --bootstrap-url "https://127.0.0.1:$wp" \
  --webhook-config-name step-operator-demo --image step-operator:dev \
  >"$E2E_STATE/logs/demo-webhook.log" 2>&1 </dev/null &
echo $! >"$E2E_STATE/extra-demo-webhook.pid"
for _ in $(seq 1 150); do curl -fsS "http://127.0.0.1:$ap/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$ap/readyz" >/dev/null || { echo "the webhook did not become ready; see $E2E_STATE/logs/demo-webhook.log" >&2; exit 1; }

say "creating an annotated pod in a labelled namespace"
k label namespace demo autocert.step.sm=enabled --overwrite >/dev/null
k -n demo delete pod api --ignore-not-found >/dev/null
# This control plane has no ServiceAccount admission plugin (no kube-controller-manager), so the
# pod names its ServiceAccount itself; a real cluster fills in `default`.
k -n demo create serviceaccount default --dry-run=client -o yaml | k apply -f - >/dev/null
pod_yaml="apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: demo
  annotations: {autocert.step.sm/name: api.demo.svc.cluster.local}
spec:
  serviceAccountName: default
  containers: [{name: api, image: nginx}]"
# The apiserver picks up a new webhook configuration within about a second: poll the create.
for _ in $(seq 1 50); do
  printf '%s\n' "$pod_yaml" | k apply -f - >/dev/null 2>&1 && break
  sleep 0.2
done
echo "containers of demo/api after admission:"
k -n demo get pod api -o jsonpath='{range .spec.initContainers[*]}  init: {.name} args={.args} restartPolicy={.restartPolicy}{"\n"}{end}{range .spec.containers[*]}  app:  {.name} mounts={.volumeMounts[*].mountPath}{"\n"}{end}'
echo "  autocert.step.sm/status=$(k -n demo get pod api -o jsonpath='{.metadata.annotations.autocert\.step\.sm/status}')"

say "done; the cluster is still up: eval \"\$(e2e/cluster.sh env)\"; stop it with: make e2e-down"
