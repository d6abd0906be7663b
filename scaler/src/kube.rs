//! The Kubernetes actuators: read and patch a Deployment's scale
//! subresource, count its pods, and record decisions as Events. Only the
//! verbs the shipped Role grants (`deploy/scaler-rbac.yaml`): get and patch
//! `deployments/scale`, list pods and horizontalpodautoscalers, create
//! events. Works against any API
//! server from 1.20 on (apps/v1, core/v1 only).

use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// `namespace/name` of a Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for DeploymentRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self { namespace: ns.into(), name: name.into() })
            }
            _ => Err(format!("{s:?} is not namespace/name (e.g. batch/hourglass-worker)")),
        }
    }
}

impl fmt::Display for DeploymentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why an API call failed, in the terms the loop acts on.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{what}: not found (is the manifest applied?)")]
    NotFound { what: String },
    #[error("{what}: forbidden by RBAC ({message}); apply deploy/scaler-rbac.yaml for this deployment")]
    Forbidden { what: String, message: String },
    #[error("{what}: conflict ({message}); retried on the next tick")]
    Conflict { what: String, message: String },
    #[error("{what}: {source}")]
    Other {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl KubeError {
    fn from_kube(what: String, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) if status.code == 404 => KubeError::NotFound { what },
            kube::Error::Api(status) if status.code == 403 => KubeError::Forbidden { what, message: status.message },
            kube::Error::Api(status) if status.code == 409 => KubeError::Conflict { what, message: status.message },
            source => KubeError::Other { what, source },
        }
    }

    /// The shared kind: a conflict or a dropped connection passes, a missing
    /// object or a refusal does not.
    pub fn error_kind(&self) -> hourglass_core::ErrorKind {
        use hourglass_core::ErrorKind as K;
        match self {
            KubeError::NotFound { .. } => K::NotFound,
            KubeError::Forbidden { .. } => K::Permission,
            KubeError::Conflict { .. } => K::Transient,
            KubeError::Other { source: kube::Error::Api(s), .. } if s.code == 429 => K::Throttled,
            KubeError::Other { source: kube::Error::Api(s), .. } if s.code >= 500 => K::Transient,
            KubeError::Other { source: kube::Error::Api(_), .. } => K::Permanent,
            KubeError::Other { .. } => K::Transient,
        }
    }

    /// A short label for the `kind` of the API error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            KubeError::NotFound { .. } => "not_found",
            KubeError::Forbidden { .. } => "forbidden",
            KubeError::Conflict { .. } => "conflict",
            KubeError::Other { .. } => "other",
        }
    }
}

/// A Deployment's scale subresource, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleState {
    pub spec_replicas: u32,
    pub status_replicas: u32,
    /// The pod label selector (`status.selector`), e.g. `app=hourglass-worker`.
    pub selector: Option<String>,
    pub uid: Option<String>,
}

/// Pods selected by a Deployment, by phase of placement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCounts {
    /// Bound to a node (running or starting), not terminating.
    pub scheduled: u32,
    /// Not yet bound to a node: waiting for capacity.
    pub pending: u32,
}

impl PodCounts {
    pub fn of(pods: &[PodInfo]) -> Self {
        let scheduled = pods.iter().filter(|p| p.bound).count() as u32;
        Self { scheduled, pending: pods.len() as u32 - scheduled }
    }
}

/// One live pod, as the busy-pod annotations need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// Bound to a node.
    pub bound: bool,
    pub node: Option<String>,
    pub running: bool,
    pub ip: Option<String>,
    /// The container port named `metrics`.
    pub metrics_port: Option<u16>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone)]
pub struct Kube {
    client: Client,
    /// `reportingComponent` / `source.component` of the events we write.
    component: String,
}

impl Kube {
    pub fn new(client: Client) -> Self {
        Self { client, component: "hourglass-scaler".into() }
    }

    /// From the in-cluster service account, or `KUBECONFIG` /
    /// `~/.kube/config` outside a cluster.
    pub async fn infer() -> Result<Self, kube::Error> {
        Ok(Self::new(Client::try_default().await?))
    }

    /// From an explicit kubeconfig file.
    pub async fn from_kubeconfig(path: &std::path::Path) -> crate::Result<Self> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| crate::Error::Kubeconfig {
            path: path.display().to_string(),
            source: e,
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.into()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.map_err(|e| err(e.into()))?;
        let client = Client::try_from(config).map_err(|e| err(e.into()))?;
        Ok(Self::new(client))
    }

    fn deployments(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub async fn get_scale(&self, d: &DeploymentRef) -> Result<ScaleState, KubeError> {
        let scale = self
            .deployments(&d.namespace)
            .get_scale(&d.name)
            .await
            .map_err(|e| KubeError::from_kube(format!("get deployments/scale {d}"), e))?;
        let to_u32 = |n: Option<i32>| n.unwrap_or(0).max(0) as u32;
        Ok(ScaleState {
            spec_replicas: to_u32(scale.spec.and_then(|s| s.replicas)),
            status_replicas: scale.status.as_ref().map(|s| s.replicas.max(0) as u32).unwrap_or(0),
            selector: scale.status.and_then(|s| s.selector).filter(|s| !s.is_empty()),
            uid: scale.metadata.uid,
        })
    }

    /// Sets `spec.replicas` through the scale subresource with a JSON merge
    /// patch: the only field written, so it never fights other writers of
    /// the Deployment (Helm, kubectl) over anything else.
    pub async fn set_scale(&self, d: &DeploymentRef, replicas: u32) -> Result<(), KubeError> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.deployments(&d.namespace)
            .patch_scale(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| KubeError::from_kube(format!("patch deployments/scale {d}"), e))?;
        Ok(())
    }

    /// The HorizontalPodAutoscalers in `d`'s namespace that scale `d`
    /// (KEDA's ScaledObjects work through one, `keda-hpa-<name>`), as
    /// `namespace/name`. autoscaling/v1: served by every API server version.
    pub async fn autoscalers_of(&self, d: &DeploymentRef) -> Result<Vec<String>, KubeError> {
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), &d.namespace);
        let list = hpas
            .list(&ListParams::default())
            .await
            .map_err(|e| KubeError::from_kube(format!("list horizontalpodautoscalers -n {}", d.namespace), e))?;
        Ok(list
            .items
            .into_iter()
            .filter(|h| {
                let target = h.spec.as_ref().map(|s| &s.scale_target_ref);
                target.is_some_and(|t| t.kind == "Deployment" && t.name == d.name)
            })
            .map(|h| format!("{}/{}", d.namespace, h.metadata.name.unwrap_or_default()))
            .collect())
    }

    pub async fn count_pods(&self, namespace: &str, selector: &str) -> Result<PodCounts, KubeError> {
        Ok(PodCounts::of(&self.list_pods(namespace, selector).await?))
    }

    /// The live pods a selector picks (not terminating, not finished).
    pub async fn list_pods(&self, namespace: &str, selector: &str) -> Result<Vec<PodInfo>, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| KubeError::from_kube(format!("list pods -n {namespace} -l {selector}"), e))?;
        let mut out = Vec::new();
        for pod in list.items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if phase == "Succeeded" || phase == "Failed" {
                continue;
            }
            let spec = pod.spec.as_ref();
            let metrics_port = spec
                .into_iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some("metrics"))
                .and_then(|p| u16::try_from(p.container_port).ok());
            out.push(PodInfo {
                namespace: namespace.to_string(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                bound: spec.and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()),
                node: spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
                running: phase == "Running",
                ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()),
                metrics_port,
                annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Sets (a value) or removes (`None`) annotations of one pod with a
    /// JSON merge patch of `metadata.annotations`: nothing else is written.
    pub async fn annotate_pod(
        &self,
        pod: &PodInfo,
        changes: &std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<(), KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let patch = serde_json::json!({ "metadata": { "annotations": changes } });
        pods.patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| KubeError::from_kube(format!("patch pods/{} -n {}", pod.name, pod.namespace), e))?;
        Ok(())
    }

    /// Records a decision as an Event on the Deployment (core/v1, shown by
    /// `kubectl describe deployment`).
    pub async fn record_event(
        &self,
        d: &DeploymentRef,
        uid: Option<&str>,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let now = timestamp_now();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{nanos:x}", d.name)),
                namespace: Some(d.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some(d.name.clone()),
                namespace: Some(d.namespace.clone()),
                uid: uid.map(str::to_owned),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(match kind {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            // Legacy core/v1 style (no eventTime), which every server
            // version accepts without the events.k8s.io series fields.
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(self.component.clone()),
                host: Some(hostname()),
            }),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &d.namespace);
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => Ok(()),
            // Same name within a nanosecond: the decision is recorded already.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(KubeError::from_kube(format!("create events -n {}", d.namespace), e)),
        }
    }
}

fn timestamp_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_else(|| "hourglass-scaler".into())
}
