//! What kind of node the worker runs on, for the cost of its done records:
//! the capacity type (`spot`, `on-demand`) and the instance type. Given by
//! the operator (`--capacity-type`/`--instance-type`; the chart sets the
//! capacity type when its placement pins one), else asked of the EC2
//! instance metadata service in the background (no Kubernetes RBAC: a pod
//! cannot read its node's labels without a ClusterRole). Records written
//! before an answer, or where IMDS cannot be reached (hop limit 1, or
//! `AWS_EC2_METADATA_DISABLED`), carry what is known.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeKind {
    pub capacity_type: Option<String>,
    pub instance_type: Option<String>,
}

/// `SPOT`, `spot` → `spot`; `ON_DEMAND`, `on-demand`, `OnDemand` → `on-demand`.
pub fn normalize_capacity(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase().replace('_', "-");
    match s.as_str() {
        "ondemand" => "on-demand".into(),
        _ => s,
    }
}

/// The node kind, filled in once known.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo(Arc<OnceLock<NodeKind>>);

impl NodeInfo {
    pub fn known(kind: NodeKind) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(kind);
        Self(Arc::new(cell))
    }

    pub fn get(&self) -> NodeKind {
        self.0.get().cloned().unwrap_or_default()
    }

    /// What the flags give, completed from IMDS in the background unless
    /// both are given or IMDS is disabled.
    pub fn discover(capacity_type: Option<String>, instance_type: Option<String>) -> Self {
        let given = NodeKind {
            capacity_type: capacity_type.filter(|s| !s.trim().is_empty()).map(|s| normalize_capacity(&s)),
            instance_type: instance_type.filter(|s| !s.trim().is_empty()),
        };
        let disabled = std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        if (given.capacity_type.is_some() && given.instance_type.is_some()) || disabled {
            return Self::known(given);
        }
        let info = Self::default();
        let cell = info.0.clone();
        tokio::spawn(async move {
            let asked = ask_imds().await;
            let kind = NodeKind {
                capacity_type: given.capacity_type.or(asked.capacity_type),
                instance_type: given.instance_type.or(asked.instance_type),
            };
            tracing::debug!(?kind, "node kind");
            let _ = cell.set(kind);
        });
        info
    }
}

async fn ask_imds() -> NodeKind {
    let mut builder = aws_config::imds::Client::builder()
        .max_attempts(1)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(1));
    if let Ok(endpoint) = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        && let Ok(b) = builder.clone().endpoint(&endpoint)
    {
        builder = b;
    }
    let client = builder.build();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            match client.get(path).await {
                Ok(v) => Some(v.as_ref().trim().to_string()).filter(|s| !s.is_empty()),
                Err(e) => {
                    tracing::debug!(path, error = %e, "instance metadata not available");
                    None
                }
            }
        }
    };
    let instance_type = get("/latest/meta-data/instance-type").await;
    // Only worth a second request when the first one was answered.
    let capacity_type = match instance_type {
        Some(_) => get("/latest/meta-data/instance-life-cycle").await.map(|s| normalize_capacity(&s)),
        None => None,
    };
    NodeKind { capacity_type, instance_type }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_types_are_spelled_one_way() {
        for (given, want) in
            [("SPOT", "spot"), ("spot", "spot"), ("ON_DEMAND", "on-demand"), ("on-demand", "on-demand")]
        {
            assert_eq!(normalize_capacity(given), want);
        }
        assert_eq!(normalize_capacity("OnDemand"), "on-demand");
    }

    #[tokio::test]
    async fn given_kinds_need_no_metadata_service() {
        let info = NodeInfo::discover(Some("SPOT".into()), Some("m7i.2xlarge".into()));
        assert_eq!(
            info.get(),
            NodeKind { capacity_type: Some("spot".into()), instance_type: Some("m7i.2xlarge".into()) }
        );
    }
}
