//! The few facts about a Pod that [`super::mutate`] decides on, read straight from JSON.
//!
//! `/mutate` is reachable without authentication, so the Pod in an AdmissionReview is attacker
//! input. Deserializing it into `k8s_openapi`'s `Pod` costs hundreds of bytes per container (or
//! per annotation) however small its JSON is, so a few megabytes of `{"name":"a"},` would become
//! hundreds of megabytes. [`PodView`] keeps a few bytes per container and only the annotations
//! step-operator reads, and skips everything else without building it: its size is a small
//! fraction of the JSON it comes from.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::annotations::{self, Retain};
use super::patch::{BOOTSTRAPPER, CERTS_VOLUME, RENEWER, TOKEN_VOLUME};
use crate::pod_protocol::CERTS_DIR;

/// What [`super::mutate`] needs from a Pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(expecting = "a Pod object")]
pub struct PodView {
    #[serde(default)]
    pub metadata: MetadataView,
    #[serde(default)]
    pub spec: Option<SpecView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(expecting = "an ObjectMeta object")]
pub struct MetadataView {
    #[serde(default)]
    pub namespace: Option<String>,
    /// Empty or absent for a pod created with `generateName` (its name is not made yet).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "generateName")]
    pub generate_name: Option<String>,
    /// Only the `autocert.step.sm/*` annotations step-operator understands.
    #[serde(default)]
    pub annotations: KnownAnnotations,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(expecting = "a PodSpec object", rename_all = "camelCase")]
pub struct SpecView {
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// `shareProcessNamespace`, which the reload hook needs.
    #[serde(default)]
    pub share_process_namespace: Option<bool>,
    #[serde(default)]
    pub containers: Vec<ContainerView>,
    /// Empty when the pod has none (absent, null or `[]` mean the same to the patch).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub init_containers: Vec<ContainerView>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub ephemeral_containers: Vec<ContainerView>,
    #[serde(default)]
    pub volumes: VolumesView,
}

/// A container: whether its name is one step-operator injects, and what it mounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(expecting = "a Container object", rename_all = "camelCase")]
pub struct ContainerView {
    pub name: ReservedName,
    #[serde(default)]
    pub volume_mounts: MountsView,
}

/// A name step-operator gives its own containers or volumes, or `None` for any other name.
/// One byte, so that a pod of a million tiny containers stays small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReservedName(pub Option<Reserved>);

/// The names of what step-operator injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserved {
    Bootstrapper,
    Renewer,
    CertsVolume,
    TokenVolume,
}

impl Reserved {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrapper => BOOTSTRAPPER,
            Self::Renewer => RENEWER,
            Self::CertsVolume => CERTS_VOLUME,
            Self::TokenVolume => TOKEN_VOLUME,
        }
    }
}

const CONTAINER_NAMES: [Reserved; 2] = [Reserved::Bootstrapper, Reserved::Renewer];
const VOLUME_NAMES: [Reserved; 2] = [Reserved::CertsVolume, Reserved::TokenVolume];

impl ReservedName {
    fn of(name: &str, reserved: &[Reserved]) -> Self {
        Self(reserved.iter().copied().find(|r| r.as_str() == name))
    }
}

impl<'de> Deserialize<'de> for ReservedName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Self::of(&name, &CONTAINER_NAMES))
    }
}

/// A container's `volumeMounts`, summed up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountsView {
    /// It has at least one mount.
    pub any: bool,
    /// One of them is at [`CERTS_DIR`] (with or without a trailing slash).
    pub at_certs_dir: bool,
}

impl MountsView {
    fn add(&mut self, mount_path: &str) {
        self.any = true;
        self.at_certs_dir |= mount_path.trim_end_matches('/') == CERTS_DIR;
    }
}

impl<'de> Deserialize<'de> for MountsView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(expecting = "a VolumeMount object", rename_all = "camelCase")]
        struct Mount {
            #[serde(default)]
            mount_path: String,
        }
        let mut view = Self::default();
        fold_seq(d, "a list of volume mounts", |m: Mount| {
            view.add(&m.mount_path)
        })?;
        Ok(view)
    }
}

/// A pod's `volumes`, summed up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumesView {
    /// It has at least one volume.
    pub any: bool,
    /// The first volume named like one step-operator injects.
    pub reserved: ReservedName,
}

impl VolumesView {
    fn add(&mut self, name: &str) {
        self.any = true;
        if self.reserved.0.is_none() {
            self.reserved = ReservedName::of(name, &VOLUME_NAMES);
        }
    }
}

impl<'de> Deserialize<'de> for VolumesView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(expecting = "a Volume object")]
        struct Volume {
            #[serde(default)]
            name: String,
        }
        let mut view = Self::default();
        fold_seq(d, "a list of volumes", |v: Volume| view.add(&v.name))?;
        Ok(view)
    }
}

/// The annotations whose keys are in [`annotations::KEYS`], and the first few unknown keys under
/// [`annotations::PREFIX`] with empty values (to warn about them; see [`annotations::retain`]);
/// any other is skipped unread, so the map never holds more than those few entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownAnnotations(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for KnownAnnotations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Known;
        impl<'de> Visitor<'de> for Known {
            type Value = KnownAnnotations;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(KnownAnnotations::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(KnownAnnotations::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut kept = BTreeMap::new();
                let mut unknown = 0;
                while let Some(key) = map.next_key::<String>()? {
                    match annotations::retain(&key, unknown) {
                        Retain::Value => {
                            kept.insert(key, map.next_value::<String>()?);
                        }
                        Retain::KeyOnly => {
                            map.next_value::<IgnoredAny>()?;
                            unknown += usize::from(kept.insert(key, String::new()).is_none());
                        }
                        Retain::Nothing => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(KnownAnnotations(kept))
            }
        }
        d.deserialize_option(Known)
    }
}

/// Reads a JSON array (or `null`) element by element, handing each to `each` and keeping none.
fn fold_seq<'de, D, T, F>(d: D, expecting: &'static str, each: F) -> Result<(), D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    F: FnMut(T),
{
    struct Fold<T, F> {
        expecting: &'static str,
        each: F,
        element: std::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>, F: FnMut(T)> Visitor<'de> for Fold<T, F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while let Some(element) = seq.next_element::<T>()? {
                (self.each)(element);
            }
            Ok(())
        }
    }
    d.deserialize_option(Fold {
        expecting,
        each,
        element: std::marker::PhantomData,
    })
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ContainerView>, D::Error> {
    Ok(Option::<Vec<ContainerView>>::deserialize(d)?.unwrap_or_default())
}

impl ContainerView {
    fn of<'a>(name: &str, mount_paths: impl Iterator<Item = &'a str>) -> Self {
        let mut volume_mounts = MountsView::default();
        for path in mount_paths {
            volume_mounts.add(path);
        }
        Self {
            name: ReservedName::of(name, &CONTAINER_NAMES),
            volume_mounts,
        }
    }

    fn of_container(c: &Container) -> Self {
        Self::of(&c.name, mount_paths(&c.volume_mounts))
    }
}

fn mount_paths(mounts: &Option<Vec<VolumeMount>>) -> impl Iterator<Item = &str> {
    mounts.iter().flatten().map(|m| m.mount_path.as_str())
}

impl PodView {
    /// The view of an already parsed Pod (the same facts the JSON would give).
    pub fn of(pod: &Pod) -> Self {
        let mut annotations = BTreeMap::new();
        let mut unknown = 0;
        for (k, v) in pod.metadata.annotations.iter().flatten() {
            match annotations::retain(k, unknown) {
                Retain::Value => {
                    annotations.insert(k.clone(), v.clone());
                }
                Retain::KeyOnly => {
                    annotations.insert(k.clone(), String::new());
                    unknown += 1;
                }
                Retain::Nothing => {}
            }
        }
        let spec = pod.spec.as_ref().map(|s| {
            let mut volumes = VolumesView::default();
            for v in s.volumes.iter().flatten() {
                volumes.add(&v.name);
            }
            SpecView {
                service_account_name: s.service_account_name.clone(),
                share_process_namespace: s.share_process_namespace,
                containers: s
                    .containers
                    .iter()
                    .map(ContainerView::of_container)
                    .collect(),
                init_containers: s
                    .init_containers
                    .iter()
                    .flatten()
                    .map(ContainerView::of_container)
                    .collect(),
                ephemeral_containers: s
                    .ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|e| ContainerView::of(&e.name, mount_paths(&e.volume_mounts)))
                    .collect(),
                volumes,
            }
        });
        Self {
            metadata: MetadataView {
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                generate_name: pod.metadata.generate_name.clone(),
                annotations: KnownAnnotations(annotations),
            },
            spec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn both(pod: serde_json::Value) -> (PodView, PodView) {
        let from_json: PodView = match serde_json::from_value(pod.clone()) {
            Ok(v) => v,
            Err(e) => panic!("{pod} is not a PodView: {e}"),
        };
        let parsed: Pod = match serde_json::from_value(pod.clone()) {
            Ok(p) => p,
            Err(e) => panic!("{pod} is not a Pod: {e}"),
        };
        (from_json, PodView::of(&parsed))
    }

    /// The view read from JSON equals the view of the fully parsed Pod, so `mutate` decides the
    /// same on both.
    #[test]
    fn json_and_pod_give_the_same_view() {
        let pods = [
            json!({}),
            json!({"metadata": {"annotations": null}, "spec": {"containers": []}}),
            json!({
                "metadata": {"namespace": "ns", "annotations": {
                    "autocert.step.sm/name": "api", "autocert.step.sm/unknown": "x", "other": "y"}},
                "spec": {
                    "serviceAccountName": "sa",
                    "containers": [
                        {"name": "app", "image": "i", "volumeMounts": [{"name": "c", "mountPath": "/var/run/autocert.step.sm/"}]},
                        {"name": "autocert-renewer", "volumeMounts": []},
                        {"name": "side", "volumeMounts": [{"name": "d", "mountPath": "/data"}]}
                    ],
                    "initContainers": [{"name": "autocert-bootstrapper"}],
                    "ephemeralContainers": [{"name": "debug", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}],
                    "volumes": [{"name": "data"}, {"name": "step-operator-token"}, {"name": "certs"}]
                }
            }),
        ];
        for pod in pods {
            let (from_json, of_pod) = both(pod.clone());
            assert_eq!(from_json, of_pod, "{pod}");
        }
    }

    #[test]
    fn keeps_only_what_mutate_reads() {
        let (view, _) = both(json!({
            "metadata": {"annotations": {"autocert.step.sm/name": "api", "autocert.step.sm/x": "1", "a": "b"}},
            "spec": {
                "containers": [
                    {"name": "app", "volumeMounts": [{"name": "c", "mountPath": "/var/run/autocert.step.sm/"}]},
                    {"name": "autocert-renewer"}
                ],
                "volumes": [{"name": "data"}, {"name": "step-operator-token"}, {"name": "certs"}]
            }
        }));
        // Unknown autocert keys are kept without their values, to be warned about.
        assert_eq!(
            view.metadata.annotations.0,
            BTreeMap::from([
                ("autocert.step.sm/name".to_owned(), "api".to_owned()),
                ("autocert.step.sm/x".to_owned(), String::new()),
            ])
        );
        let spec = view.spec.unwrap_or_default();
        assert_eq!(
            spec.containers,
            vec![
                ContainerView {
                    name: ReservedName(None),
                    volume_mounts: MountsView {
                        any: true,
                        at_certs_dir: true
                    },
                },
                ContainerView {
                    name: ReservedName(Some(Reserved::Renewer)),
                    volume_mounts: MountsView::default(),
                },
            ]
        );
        assert_eq!(
            spec.volumes,
            VolumesView {
                any: true,
                reserved: ReservedName(Some(Reserved::TokenVolume)),
            }
        );
    }

    /// However many unknown autocert keys a pod has, only the first few are kept.
    #[test]
    fn unknown_keys_are_bounded() {
        let many: serde_json::Map<String, serde_json::Value> = (0..1000)
            .map(|i| (format!("autocert.step.sm/k{i:04}"), json!("v".repeat(100))))
            .collect();
        let (view, of_pod) = both(json!({"metadata": {"annotations": many}}));
        assert_eq!(
            view.metadata.annotations.0.len(),
            annotations::MAX_UNKNOWN_KEYS
        );
        assert!(view.metadata.annotations.0.values().all(String::is_empty));
        // Both readers keep the same first keys (the apiserver sends them in key order).
        assert_eq!(view, of_pod);
    }

    #[test]
    fn wrong_types_are_errors_that_name_the_field() {
        for (pod, text) in [
            (json!({"spec": 5}), "PodSpec"),
            (json!({"spec": {"containers": [{"name": 1}]}}), "string"),
            (json!({"spec": {"volumes": {}}}), "a list of volumes"),
            (
                json!({"metadata": {"annotations": []}}),
                "a map of annotations",
            ),
        ] {
            match serde_json::from_value::<PodView>(pod.clone()) {
                Ok(v) => panic!("{pod} was read as {v:?}"),
                Err(e) => assert!(e.to_string().contains(text), "{pod}: {e}"),
            }
        }
    }
}
