//! Helpers for the Helm chart tests: rendering `charts/step-operator`, turning the YAML into JSON
//! objects (through kubectl, so the e2e crate needs no YAML parser), ServiceAccount kubeconfigs
//! from the TokenRequest API, and SubjectAccessReviews.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::Kubeconfig;
use serde_json::{Value, json};

use crate::Env;
use crate::process::run;

/// The chart's directory in this checkout.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/step-operator")
}

/// The repository root of this checkout.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `helm template <release> charts/step-operator -n <ns> -f <values>` (values given as JSON, which
/// is YAML), without the CRDs (`crds.enabled=false`): the tests that apply a render (and delete it
/// afterwards) must never touch the shared cluster's CRDs, which every other test's issuers live
/// in. Returns the rendered YAML.
pub async fn helm_template(
    env: &Env,
    release: &str,
    namespace: &str,
    values: &Value,
    extra: &[&str],
) -> Result<String> {
    render(env, release, namespace, values, false, extra).await
}

/// [`helm_template`] with the chart's CRDs, for tests that only read the render.
pub async fn helm_template_with_crds(
    env: &Env,
    release: &str,
    namespace: &str,
    values: &Value,
) -> Result<String> {
    render(env, release, namespace, values, true, &[]).await
}

async fn render(
    env: &Env,
    release: &str,
    namespace: &str,
    values: &Value,
    crds: bool,
    extra: &[&str],
) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, serde_json::to_vec_pretty(values)?)?;
    let chart = chart_dir();
    let crds = format!("crds.enabled={crds}");
    let mut args = vec![
        "template",
        release,
        chart.to_str().context("utf-8 path")?,
        "--namespace",
        namespace,
        "-f",
        values_file.to_str().context("utf-8 path")?,
        "--set",
        &crds,
    ];
    args.extend_from_slice(extra);
    let out = run(&env.tool("helm")?, &args, &[]).await?;
    Ok(String::from_utf8(out.stdout)?)
}

/// Writes `text` into a temporary file and returns it (kept alive by the caller).
pub fn temp_file(text: &str, name: &str) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(name);
    std::fs::write(&path, text)?;
    Ok((dir, path))
}

/// Converts rendered YAML into JSON objects with `kubectl create --dry-run=client -o json`.
pub async fn objects(env: &Env, yaml: &str) -> Result<Vec<Value>> {
    let (_dir, path) = temp_file(yaml, "rendered.yaml")?;
    let kubeconfig = env.kubeconfig.to_str().context("utf-8 path")?;
    let out = run(
        &env.tool("kubectl")?,
        &[
            "--kubeconfig",
            kubeconfig,
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "-f",
            path.to_str().context("utf-8 path")?,
        ],
        &[],
    )
    .await?;
    let mut items = Vec::new();
    for v in serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>() {
        let v = v?;
        match v["kind"].as_str() {
            Some("List") => items.extend(v["items"].as_array().cloned().unwrap_or_default()),
            _ => items.push(v),
        }
    }
    Ok(items)
}

/// The objects of one kind (and name, if given).
pub fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| {
            let have: Vec<String> = objs
                .iter()
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect();
            format!("the chart rendered no {kind} {name}; it rendered {have:?}")
        })
}

/// `kubectl <verb> -f` of a JSON List of objects, as the cluster admin.
pub async fn kubectl_objects(env: &Env, args: &[&str], objs: &[&Value]) -> Result<String> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objs});
    let (_dir, path) = temp_file(&serde_json::to_string(&list)?, "objects.json")?;
    let kubeconfig = env.kubeconfig.to_str().context("utf-8 path")?;
    let mut all = vec!["--kubeconfig", kubeconfig];
    all.extend_from_slice(args);
    all.extend(["-f", path.to_str().context("utf-8 path")?]);
    let out = run(&env.tool("kubectl")?, &all, &[]).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The args of the first container of a rendered Deployment, without the flags the test
/// replaces (given by name, e.g. `--admin-addr`).
pub fn container_args(deployment: &Value, drop: &[&str]) -> Result<Vec<String>> {
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .context("the Deployment's container has no args")?;
    Ok(args
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| !drop.iter().any(|d| a.split('=').next() == Some(*d)))
        .map(str::to_string)
        .collect())
}

/// A bearer token for a ServiceAccount, from the TokenRequest API.
pub async fn service_account_token(client: &Client, ns: &str, sa: &str) -> Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource("token", sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {ns}/{sa}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .context("no token in the TokenRequest answer")
}

/// Writes a kubeconfig that authenticates as ServiceAccount `ns/sa` with a bearer token against
/// the admin kubeconfig's apiserver (same server and CA).
pub async fn service_account_kubeconfig(
    env: &Env,
    client: &Client,
    ns: &str,
    sa: &str,
    dir: &Path,
) -> Result<PathBuf> {
    service_account_kubeconfig_on(env, &env.kubeconfig, client, ns, sa, dir).await
}

/// [`service_account_kubeconfig`] for the apiserver of `admin_kubeconfig` (an `empty-apiserver`),
/// `client` being connected to it.
pub async fn service_account_kubeconfig_on(
    env: &Env,
    admin_kubeconfig: &Path,
    client: &Client,
    ns: &str,
    sa: &str,
    dir: &Path,
) -> Result<PathBuf> {
    let token = service_account_token(client, ns, sa).await?;
    crate::record_secret(env, &token)?;
    let admin = Kubeconfig::read_from(admin_kubeconfig)?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("the admin kubeconfig has no cluster")?;
    let server = cluster
        .server
        .context("the admin kubeconfig has no server")?;
    let mut cluster_entry = json!({"server": server});
    if let Some(ca) = cluster.certificate_authority {
        cluster_entry["certificate-authority"] = json!(ca);
    }
    if let Some(data) = cluster.certificate_authority_data {
        cluster_entry["certificate-authority-data"] = json!(data);
    }
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster_entry}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": sa, "namespace": ns}}],
        "current-context": "sa",
    });
    let path = dir.join(format!("kubeconfig-{ns}-{sa}"));
    std::fs::write(&path, serde_json::to_vec_pretty(&kc)?)?;
    Ok(path)
}

/// What a SubjectAccessReview asks.
#[derive(Default, Clone)]
pub struct Access<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub verb: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Whether ServiceAccount `ns/sa` may do `access`, asked to the apiserver's authorizer.
pub async fn service_account_can(
    client: &Client,
    ns: &str,
    sa: &str,
    access: &Access<'_>,
) -> Result<bool> {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let review = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(access.group.to_string()),
                resource: opt(access.resource),
                subresource: opt(access.subresource),
                verb: opt(access.verb),
                namespace: opt(access.namespace),
                name: opt(access.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let status = answer
        .status
        .context("no status in the SubjectAccessReview answer")?;
    if status
        .evaluation_error
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        bail!(
            "SubjectAccessReview evaluation error: {:?}",
            status.evaluation_error
        );
    }
    Ok(status.allowed)
}
