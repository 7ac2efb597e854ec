//! `StepIssuer` and `StepClusterIssuer`.
//!
//! Every manifest valid for smallstep/step-issuer v1beta1 is valid here with the same meaning.
//! Additions are optional: `caBundle` and `kid` may be omitted, `passwordRef.namespace` may be
//! omitted on a cluster issuer, and the status uses `metav1.Condition` with `observedGeneration`.
//!
//! Every string a tenant writes has a `maxLength` in the schema, so the apiserver refuses an
//! oversized issuer before the controller caches or parses it (security review M3): 2 KiB for
//! the URL, 64 KiB of certificates for `caBundle`, 256 for provisioner names and kids, 253 for
//! Secret names and keys (the DNS subdomain limit of object names), 63 for namespaces.

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A StepIssuer signs cert-manager CertificateRequests in its own namespace with a step-ca JWK
/// provisioner. Reference it from a Certificate with
/// `issuerRef: {group: certmanager.step.sm, kind: StepIssuer, name: <name>}`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "certmanager.step.sm",
    version = "v1beta1",
    kind = "StepIssuer",
    doc = "A StepIssuer signs cert-manager CertificateRequests in its namespace through a step-ca JWK provisioner.",
    namespaced,
    status = "IssuerStatus",
    shortname = "stepiss",
    category = "step",
    category = "cert-manager",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":0,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StepIssuerSpec {
    /// Base URL of step-ca, for example `https://step-ca.step.svc.cluster.local`. Its host must be
    /// one of the CA's `dnsNames`: it is the audience of the one-time tokens.
    #[schemars(length(max = 2048))]
    pub url: String,

    /// PEM bundle of the root certificate(s) that step-ca's TLS certificate chains to, base64
    /// encoded in YAML (`base64 -w0 root_ca.crt`). A single DER certificate is accepted too, for
    /// compatibility. When omitted, the system roots are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "byte_string_schema")]
    pub ca_bundle: Option<ByteString>,

    /// The JWK provisioner that authorises signing.
    pub provisioner: Provisioner,

    /// Which names this issuer signs. Without it, any name: whoever holds this issuer's
    /// provisioner password could mint tokens for any name anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<IssuerPolicySpec>,

    /// The longest certificate this issuer signs, as a Go duration (`720h`). A request for more
    /// (or for the CA's default, when that is longer) gets this much, and an Event says so.
    /// Omitted: no cap beyond step-ca's own. A certificate never outlives the issuing
    /// intermediate, whatever is set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub max_duration: Option<String>,

    /// The host (and port) the one-time tokens are addressed to, when `url` reaches step-ca
    /// through a name that is not one of its `dnsNames` (a proxy, a Service alias): for example
    /// `ca.internal:9000`. Omitted: the host of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub audience_host: Option<String>,

    /// Opt-in revocation at step-ca (passive: the CA refuses to renew a revoked certificate; it
    /// needs a CA with a database). Omitted: nothing is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationSpec>,
}

/// A StepClusterIssuer signs CertificateRequests in every namespace with a step-ca JWK
/// provisioner. Reference it with
/// `issuerRef: {group: certmanager.step.sm, kind: StepClusterIssuer, name: <name>}`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "certmanager.step.sm",
    version = "v1beta1",
    kind = "StepClusterIssuer",
    doc = "A StepClusterIssuer signs cert-manager CertificateRequests in every namespace through a step-ca JWK provisioner.",
    status = "IssuerStatus",
    shortname = "stepclusteriss",
    category = "step",
    category = "cert-manager",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":0,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StepClusterIssuerSpec {
    /// Base URL of step-ca, for example `https://step-ca.step.svc.cluster.local`. Its host must be
    /// one of the CA's `dnsNames`: it is the audience of the one-time tokens.
    #[schemars(length(max = 2048))]
    pub url: String,

    /// PEM bundle of the root certificate(s) that step-ca's TLS certificate chains to, base64
    /// encoded in YAML (`base64 -w0 root_ca.crt`). A single DER certificate is accepted too, for
    /// compatibility. When omitted, the system roots are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "byte_string_schema")]
    pub ca_bundle: Option<ByteString>,

    /// The JWK provisioner that authorises signing.
    pub provisioner: Provisioner,

    /// Who may use this issuer and for which names. Without it, any namespace may get a
    /// certificate for any name (step-issuer's behaviour), unless the controller runs with
    /// `--issuers-without-policy=namespace-names` (the Helm chart's default); the `NamePolicy`
    /// condition says which applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<IssuerPolicySpec>,

    /// The longest certificate this issuer signs, as a Go duration (`720h`). A request for more
    /// (or for the CA's default, when that is longer) gets this much, and an Event says so.
    /// Omitted: no cap beyond step-ca's own. A certificate never outlives the issuing
    /// intermediate, whatever is set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub max_duration: Option<String>,

    /// The host (and port) the one-time tokens are addressed to, when `url` reaches step-ca
    /// through a name that is not one of its `dnsNames` (a proxy, a Service alias): for example
    /// `ca.internal:9000`. Omitted: the host of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub audience_host: Option<String>,

    /// Opt-in revocation at step-ca (passive: the CA refuses to renew a revoked certificate; it
    /// needs a CA with a database). Omitted: nothing is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationSpec>,
}

/// Who may use an issuer and for which names. A request or pod that the policy refuses is never
/// signed: its CertificateRequest fails (or `/bootstrap` answers 403) with the rule and the fix.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerPolicySpec {
    /// StepClusterIssuer only: the namespaces whose CertificateRequests and pods may use it:
    /// names (`team-a`), prefixes with one trailing `*` (`team-*`), or `*` for all. Omitted:
    /// every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub namespaces: Option<Vec<String>>,

    /// Names every allowed namespace may get beyond its own (`<svc>.<ns>.svc`,
    /// `<svc>.<ns>.svc.<cluster-domain>`, `spiffe://<cluster-domain>/ns/<ns>/sa/<sa>`): exact
    /// names (`api.example.com`, `10.0.0.1`, `spiffe://example.org/x`, `ops@example.com`) or DNS
    /// wildcards `*.example.com` (one or more labels in front).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub names: Vec<String>,

    /// Allow single-label names (`db`, `localhost`). Off by default: such a name means the same
    /// service in every namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_short_names: bool,

    /// Allow any name (step-issuer's behaviour): only step-ca's own policy limits the names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_any_name: bool,
}

impl IssuerPolicySpec {
    /// The plain values the policy module parses.
    pub fn input(&self) -> crate::policy::PolicyInput<'_> {
        crate::policy::PolicyInput {
            namespaces: self.namespaces.as_deref(),
            names: &self.names,
            allow_short_names: self.allow_short_names,
            allow_any_name: self.allow_any_name,
        }
    }
}

/// When to revoke the certificates an issuer signed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationSpec {
    /// Revoke a Certificate's previous certificate once cert-manager has replaced it with a
    /// newer one from this issuer (its next revision's CertificateRequest is issued).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_supersede: bool,
}

/// A step-ca JWK provisioner and where its key and password come from. Exactly one of
/// `passwordRef`, `passwordEnv` and `passwordFile` must be set, unless `keyRef` holds a plain
/// (unencrypted) key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provisioner {
    /// Name of the JWK provisioner in step-ca's configuration (`step ca provisioner list`).
    #[schemars(length(max = 256))]
    pub name: String,

    /// Key id of the provisioner (`key.kid` in `step ca provisioner list`). When omitted, the
    /// provisioner is found by `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub kid: Option<String>,

    /// A Secret key holding the provisioner's private key, so that the CA's encrypted-key
    /// endpoint is never used (and step-ca may keep no `encryptedKey` at all): the JWE that
    /// `step crypto jwk create` writes (JSON or compact, also base64-wrapped), decrypted with the
    /// password, or a plain private JWK, which needs no password. Read from the same namespace
    /// as `passwordRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ref: Option<SecretKeyRef>,
    /// The Secret key holding the provisioner password. The value is used verbatim: write it
    /// without a trailing newline (`kubectl create secret generic --from-literal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<PasswordRef>,

    /// StepClusterIssuer only: the name of an environment variable of the controller holding the
    /// password. Refused on a StepIssuer, because it would let any namespace use the
    /// controller's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub password_env: Option<String>,

    /// StepClusterIssuer only: a file in the controller's container holding the password
    /// (trailing whitespace is trimmed). Refused on a StepIssuer for the same reason as
    /// `passwordEnv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub password_file: Option<String>,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordRef {
    /// Name of the Secret.
    #[schemars(length(max = 253))]
    pub name: String,

    /// Key within the Secret's `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub key: Option<String>,

    /// Namespace of the Secret. A StepIssuer always reads its own namespace (a different value is
    /// refused). A StepClusterIssuer reads this namespace, or the controller's
    /// `--cluster-resource-namespace` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// A key of a Secret, in the namespace of the issuer's `passwordRef` (a StepIssuer: its own).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Key within the Secret's `data`.
    #[schemars(length(max = 253))]
    pub key: String,
}

/// Observed state of an issuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    /// `Ready` tells whether the issuer can sign: True with reason `Verified`, or False with a
    /// reason and a message naming the cause and the fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// What the last successful check learned of step-ca.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaStatus>,

    /// The value of the `certmanager.step.sm/recheck` annotation last acted on: set the
    /// annotation to a new value (`kubectl annotate --overwrite ... certmanager.step.sm/recheck=$(date +%s)`)
    /// to have the issuer checked against step-ca at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub last_recheck: Option<String>,
}

/// Facts about step-ca, as the controller last saw them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaStatus {
    /// step-ca's version (`/version`), when it tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether one-time tokens are bound to the CSR they sign (`cnf`, step-ca 0.27.3 and later):
    /// a leaked token then cannot sign another key.
    #[serde(default)]
    pub tokens_bound_to_csr: bool,
    /// The provisioner's own certificate lifetime limits, when step-ca lists them (limits set
    /// only in the CA's global `claims` are not visible to clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioner_claims: Option<ProvisionerClaimsStatus>,
    /// When the first of step-ca's roots expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_not_after: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the intermediate that signed the latest certificate expires; no certificate is
    /// asked to outlive it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_not_after: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// A provisioner's certificate lifetime limits, as Go durations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionerClaimsStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_duration: Option<String>,
}

/// `caBundle` stays a base64 `format: byte` string, exactly as in step-issuer's CRD, limited to
/// 64 KiB of certificates: far more than any real bundle of roots, while a tenant can no longer
/// make the controller hold and parse megabytes per issuer (security review M3). The apiserver
/// checks the length of the base64 text, so the limit is 64 KiB in base64 characters.
fn byte_string_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "byte", "maxLength": CA_BUNDLE_MAX_BASE64})
}

/// The most bytes a `caBundle` may hold once decoded.
pub const CA_BUNDLE_MAX_BYTES: usize = 64 * 1024;
/// `CA_BUNDLE_MAX_BYTES` as base64 text (4 characters per 3 bytes, padded).
pub const CA_BUNDLE_MAX_BASE64: usize = CA_BUNDLE_MAX_BYTES.div_ceil(3) * 4;

fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), "map".into());
        obj.insert(
            "x-kubernetes-list-map-keys".into(),
            serde_json::json!(["type"]),
        );
    }
    schema
}

/// The parts of a spec shared by both kinds, so that validation and reconciliation are written
/// once.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuerSpecView<'a> {
    pub url: &'a str,
    pub ca_bundle: Option<&'a [u8]>,
    pub provisioner: &'a Provisioner,
    pub policy: Option<&'a IssuerPolicySpec>,
    pub max_duration: Option<&'a str>,
    pub audience_host: Option<&'a str>,
    pub revocation: Option<&'a RevocationSpec>,
}

impl StepIssuerSpec {
    pub fn view(&self) -> IssuerSpecView<'_> {
        IssuerSpecView {
            url: &self.url,
            ca_bundle: self.ca_bundle.as_ref().map(|b| b.0.as_slice()),
            provisioner: &self.provisioner,
            policy: self.policy.as_ref(),
            max_duration: self.max_duration.as_deref(),
            audience_host: self.audience_host.as_deref(),
            revocation: self.revocation.as_ref(),
        }
    }
}

impl StepClusterIssuerSpec {
    pub fn view(&self) -> IssuerSpecView<'_> {
        IssuerSpecView {
            url: &self.url,
            ca_bundle: self.ca_bundle.as_ref().map(|b| b.0.as_slice()),
            provisioner: &self.provisioner,
            policy: self.policy.as_ref(),
            max_duration: self.max_duration.as_deref(),
            audience_host: self.audience_host.as_deref(),
            revocation: self.revocation.as_ref(),
        }
    }
}
