//! Scale-down takes idle pods and empty nodes, never busy ones.
//!
//! The ReplicaSet picks which pods a scale-down removes, and the cluster
//! autoscaler and Karpenter pick which nodes to drain; none of them knows
//! which worker holds a shard. Each tick (before it patches the replica
//! count) the scaler reads every worker pod's `hourglass_worker_shards_in_flight`
//! from its metrics port and annotates the pods whose state changed:
//! - busy: `controller.kubernetes.io/pod-deletion-cost` 1000 + its shards
//!   (the ReplicaSet removes lower costs first), and
//!   `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` and
//!   `karpenter.sh/do-not-disrupt: "true"` (neither consolidates its node);
//! - idle: those two removed, and a deletion cost of the busy pods on its
//!   node (0, the default, on a node with none): idle pods on idle nodes
//!   go first, so whole nodes empty and the autoscaler can take them.
//!
//! The annotations follow the work, so a node of idle workers is never
//! held by a static annotation. The scaler does this, not the workers:
//! one ServiceAccount with `patch` on pods instead of every worker pod
//! (a worker cannot be limited to its own pod). Between two ticks a pod
//! that just took a shard is not yet marked; if it is stopped then, it
//! drains (the shard is finished or released, never lost).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kube::PodInfo;

pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
const METRIC: &str = "hourglass_worker_shards_in_flight";

/// The shards a worker holds, read from its metrics (`None`: not
/// reachable or not a worker's metrics; its annotations are left alone).
pub async fn shards_in_flight(ip: &str, port: u16, timeout: Duration) -> Option<u64> {
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/plain\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        stream.take(4 << 20).read_to_end(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(timeout, fetch).await.ok()??;
    let text = String::from_utf8_lossy(&body);
    let (head, metrics) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || head.split(' ').nth(1) != Some("200") {
        return None;
    }
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(METRIC).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
}

/// The annotation changes (`None`: remove) that bring each pod in line
/// with its shards in flight (`None`: unknown, left alone).
pub fn changes(pods: &[(PodInfo, Option<u64>)]) -> Vec<(PodInfo, BTreeMap<String, Option<String>>)> {
    let mut busy_on: BTreeMap<&str, u64> = BTreeMap::new();
    for (pod, n) in pods {
        if let (Some(node), Some(n)) = (&pod.node, n)
            && *n > 0
        {
            *busy_on.entry(node.as_str()).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for (pod, n) in pods {
        let Some(n) = n else { continue };
        let want: [(&str, Option<String>); 3] = if *n > 0 {
            [
                (DELETION_COST, Some((1000 + (*n).min(1_000_000)).to_string())),
                (SAFE_TO_EVICT, Some("false".into())),
                (DO_NOT_DISRUPT, Some("true".into())),
            ]
        } else {
            let busy = pod.node.as_deref().and_then(|node| busy_on.get(node)).copied().unwrap_or(0);
            [(DELETION_COST, (busy > 0).then(|| busy.to_string())), (SAFE_TO_EVICT, None), (DO_NOT_DISRUPT, None)]
        };
        let diff: BTreeMap<String, Option<String>> = want
            .into_iter()
            .filter(|(k, v)| pod.annotations.get(*k) != v.as_ref())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if !diff.is_empty() {
            out.push((pod.clone(), diff));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, annotations: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            namespace: "batch".into(),
            name: name.into(),
            bound: true,
            node: Some(node.into()),
            running: true,
            ip: Some("10.0.0.1".into()),
            metrics_port: Some(9100),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn busy_pods_are_protected_and_idle_ones_on_idle_nodes_go_first() {
        let pods = vec![
            (pod("busy", "n1", &[]), Some(2)),
            (pod("idle-beside-busy", "n1", &[]), Some(0)),
            (
                pod("idle-alone", "n2", &[(DELETION_COST, "1001"), (SAFE_TO_EVICT, "false"), (DO_NOT_DISRUPT, "true")]),
                Some(0),
            ),
            (pod("unknown", "n2", &[(SAFE_TO_EVICT, "false")]), None),
            (pod("settled", "n3", &[]), Some(0)),
        ];
        let got: BTreeMap<String, BTreeMap<String, Option<String>>> =
            changes(&pods).into_iter().map(|(p, c)| (p.name, c)).collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            got["busy"],
            BTreeMap::from([
                (DELETION_COST.into(), s("1002")),
                (SAFE_TO_EVICT.into(), s("false")),
                (DO_NOT_DISRUPT.into(), s("true"))
            ])
        );
        // Idle beside a busy pod: removed after the idle pods of idle nodes.
        assert_eq!(got["idle-beside-busy"], BTreeMap::from([(DELETION_COST.into(), s("1"))]));
        assert_eq!(
            got["idle-alone"],
            BTreeMap::from([(DELETION_COST.into(), None), (SAFE_TO_EVICT.into(), None), (DO_NOT_DISRUPT.into(), None)])
        );
        // Unknown state: left alone; nothing to change: no patch.
        assert!(!got.contains_key("unknown") && !got.contains_key("settled"), "{got:?}");
    }

    #[tokio::test]
    async fn in_flight_is_read_from_the_workers_metrics() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for body in
                ["# HELP x\nhourglass_worker_shards_in_flight_total 9\nhourglass_worker_shards_in_flight 3\n", "nope"]
            {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                let status = if body == "nope" { "404 Not Found" } else { "200 OK" };
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        assert_eq!(shards_in_flight("127.0.0.1", port, Duration::from_secs(5)).await, Some(3));
        assert_eq!(shards_in_flight("127.0.0.1", port, Duration::from_secs(5)).await, None);
        // Nothing listening: unknown, quickly.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        assert_eq!(shards_in_flight("127.0.0.1", closed, Duration::from_secs(5)).await, None);
    }
}
