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
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
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
}

/// A StepClusterIssuer signs CertificateRequests in every namespace with a step-ca JWK
/// provisioner. Reference it with
/// `issuerRef: {group: certmanager.step.sm, kind: StepClusterIssuer, name: <name>}`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
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

/// A step-ca JWK provisioner and where its password comes from. Exactly one of `passwordRef`,
/// `passwordEnv` and `passwordFile` must be set.
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

/// Observed state of an issuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    /// `Ready` tells whether the issuer can sign: True with reason `Verified`, or False with a
    /// reason and a message naming the cause and the fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
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
}

impl StepIssuerSpec {
    pub fn view(&self) -> IssuerSpecView<'_> {
        IssuerSpecView {
            url: &self.url,
            ca_bundle: self.ca_bundle.as_ref().map(|b| b.0.as_slice()),
            provisioner: &self.provisioner,
            policy: self.policy.as_ref(),
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
        }
    }
}
