#!/usr/bin/env bash
# `make demo`: step-operator end to end on the local cluster and its node. Builds our image from
# the release binary (image/build-oci.sh, no docker), installs the Helm chart with a
# StepClusterIssuer for the local step-ca, has a cert-manager Certificate issued, and runs an
# annotated mTLS server and a client whose certificates the webhook injected, through a Service,
# and beside them a pod with a Kubernetes pod certificate and the issuer's ClusterTrustBundle.
# The cluster stays up for exploring (`e2e/cluster.sh shell`); `make e2e-down` stops it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${STEP_OPERATOR_RELEASE_BIN:-$repo/target/release/step-operator}

if [ "$(ip netns identify 2>/dev/null)" = "" ] || [ -z "${E2E_NETNS:-}" ]; then
  "$here/cluster.sh" up
  image=$("$here/cluster.sh" image "$bin")
  # The rest runs inside the cluster's network namespace.
  exec "$here/cluster.sh" exec env DEMO_IMAGE="$image" "$0" "$@"
fi

k() { "$E2E_BIN/kubectl" "$@"; }
say() { printf '\n== %s\n' "$*"; }
CERTS=/var/run/autocert.step.sm

say "installing the Helm chart (image $DEMO_IMAGE) with a StepClusterIssuer for step-ca at $STEP_CA_NODE_URL"
values=$(mktemp); trap 'rm -f "$values"' EXIT
cat >"$values" <<EOF
image: {repository: "${DEMO_IMAGE%:*}", tag: "${DEMO_IMAGE##*:}"}
stepClusterIssuer:
  create: true
  name: step-ca
  url: $STEP_CA_NODE_URL
  caBundle: $(base64 -w0 "$STEP_CA_ROOT")
  provisioner: {name: $STEP_PROVISIONER, kid: $STEP_PROVISIONER_KID}
EOF
k create namespace step-operator --dry-run=client -o yaml | k apply -f - >/dev/null
k -n step-operator create secret generic step-operator-provisioner-password \
  --from-file=password="$STEP_PROVISIONER_PASSWORD_FILE" --dry-run=client -o yaml | k apply -f - >/dev/null
# crds.enabled=false: `cluster.sh up` installed the CRDs already (unowned by any release).
"$E2E_BIN/helm" upgrade --install step-operator "$repo/charts/step-operator" -n step-operator -f "$values" \
  --set crds.enabled=false --wait --timeout 5m
k -n step-operator get pods -o wide
k wait --for=condition=Ready stepclusterissuer/step-ca --timeout=60s >/dev/null
k get stepclusterissuers

say "a cert-manager Certificate, signed by the controller running in its pod"
k create namespace demo --dry-run=client -o yaml | k apply -f - >/dev/null
k label namespace demo autocert.step.sm=enabled --overwrite >/dev/null
cat <<EOF | k apply -f - >/dev/null
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: web, namespace: demo}
spec:
  secretName: web-tls
  dnsNames: [web.demo.svc.cluster.local]
  issuerRef: {group: certmanager.step.sm, kind: StepClusterIssuer, name: step-ca}
EOF
k -n demo wait --for=condition=Ready certificate/web --timeout=90s >/dev/null
k -n demo get certificate web
tmp=$(mktemp -d)
k -n demo get secret web-tls -o jsonpath='{.data.tls\.crt}' | base64 -d >"$tmp/tls.crt"
STEPPATH=$tmp "$E2E_BIN/step" certificate inspect --short "$tmp/tls.crt"
rm -rf "$tmp"

say "an annotated mTLS server and client: the webhook injects their certificates"
cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec: {selector: {app: hello}, ports: [{port: 8443}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: demo}
spec:
  selector: {matchLabels: {app: hello}}
  template:
    metadata:
      labels: {app: hello}
      annotations: {autocert.step.sm/name: hello.demo.svc.cluster.local}
    spec:
      containers:
      - name: app
        image: $E2E_TOOLS_IMAGE
        command: [sh, -c, "exec openssl s_server -accept 8443 -cert $CERTS/site.crt -cert_chain $CERTS/site.crt -key $CERTS/site.key -CAfile $CERTS/root.crt -Verify 1 -verify_return_error -www"]
        readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}
EOF
k -n demo rollout status deployment/hello --timeout=120s
k -n demo get pods -l app=hello -o jsonpath='{range .items[*]}{.metadata.name}: init {.spec.initContainers[*].name}; app {.spec.containers[*].name}{"\n"}{end}'
k -n demo delete job hello-client --ignore-not-found >/dev/null
cat <<EOF | k apply -f - >/dev/null
apiVersion: batch/v1
kind: Job
metadata: {name: hello-client, namespace: demo}
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: {autocert.step.sm/name: hello-client.demo.svc.cluster.local}
    spec:
      restartPolicy: Never
      containers:
      - name: app
        image: $E2E_TOOLS_IMAGE
        command: [sh, -c, "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client -connect hello.demo.svc.cluster.local:8443 -cert $CERTS/site.crt -cert_chain $CERTS/site.crt -key $CERTS/site.key -CAfile $CERTS/root.crt -verify_hostname hello.demo.svc.cluster.local -verify_return_error -quiet 2>&1 | grep -E 'verify|subject|Client certificate|CN' | head -20"]
EOF
k -n demo wait --for=condition=Complete job/hello-client --timeout=120s >/dev/null
echo "the client (with its own injected certificate) verified hello.demo.svc.cluster.local and got:"
k -n demo logs job/hello-client -c app

say "beside them, a pod with a Kubernetes pod certificate: no webhook, no sidecar; the kubelet asks, the controller signs"
cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: hello-podcert, namespace: demo}
spec:
  containers:
  - name: app
    image: $E2E_TOOLS_IMAGE
    command: [sh, -c, "exec sleep 3600"]
    volumeMounts: [{name: tls, mountPath: /var/run/tls, readOnly: true}]
  volumes:
  - name: tls
    projected:
      sources:
      - podCertificate:
          signerName: stepclusterissuers.certmanager.step.sm/step-ca
          keyType: ECDSAP256
          keyPath: key.pem
          certificateChainPath: chain.pem
          userAnnotations: {"podcert.step.sm/dns-names": "\${POD_NAME}.demo.svc"}
      - clusterTrustBundle:
          signerName: stepclusterissuers.certmanager.step.sm/step-ca
          labelSelector: {}
          path: ca.pem
EOF
k -n demo wait --for=condition=Ready pod/hello-podcert --timeout=120s >/dev/null
k -n demo get podcertificaterequests
k get clustertrustbundles
echo "the certificate the kubelet wrote into hello-podcert, and its check against the trust bundle:"
k -n demo exec hello-podcert -- openssl x509 -noout -subject -ext subjectAltName -enddate -in /var/run/tls/chain.pem
k -n demo exec hello-podcert -- openssl verify -CAfile /var/run/tls/ca.pem -untrusted /var/run/tls/chain.pem /var/run/tls/chain.pem

say "done; the cluster is still up: e2e/cluster.sh shell (kubectl is \$E2E_BIN/kubectl); stop it with: make e2e-down"
