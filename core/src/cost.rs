//! What a job cost: each done record carries the pod-seconds its unit took
//! (`Usage`) and, where the worker could tell, its node's capacity type and
//! instance type. A job's node-seconds are its pod-seconds times a pod's
//! share of its node (one of `pods_per_node`), priced per node-hour by
//! capacity type and instance type (`Prices`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One unit's use of its pod and node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// The unit's share of its pod's time: its wall time from start to done
    /// record over the units the pod works on at once.
    pub pod_seconds: f64,
    /// `spot` or `on-demand`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_type: Option<String>,
    /// e.g. `m7i.2xlarge`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
}

impl Usage {
    /// The key usage totals are kept under: `INSTANCE/CAPACITY`, `?` for
    /// what is not known.
    pub fn key(&self) -> String {
        format!("{}/{}", self.instance_type.as_deref().unwrap_or("?"), self.capacity_type.as_deref().unwrap_or("?"))
    }
}

/// Pod-seconds by `Usage::key`.
pub type UsageTotals = BTreeMap<String, f64>;

pub fn add(totals: &mut UsageTotals, usage: &Usage) {
    *totals.entry(usage.key()).or_default() += usage.pod_seconds;
}

/// Prices per node-hour: entries `SELECTOR=DOLLARS` where the selector is
/// `INSTANCE/CAPACITY`, `INSTANCE`, `CAPACITY` or `*`; the most specific
/// match wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    entries: Vec<(String, f64)>,
}

impl Prices {
    /// `spot=0.12,on-demand=0.38,m7i.2xlarge/spot=0.15`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (sel, price) =
                part.split_once('=').ok_or_else(|| format!("{part:?}: expected SELECTOR=DOLLARS_PER_NODE_HOUR"))?;
            let price: f64 = price.trim().parse().map_err(|_| format!("{part:?}: {price:?} is not a number"))?;
            if !(price >= 0.0 && price.is_finite()) {
                return Err(format!("{part:?}: a price is 0 or more"));
            }
            entries.push((sel.trim().to_ascii_lowercase(), price));
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The price per node-hour of a `Usage::key`, if any entry matches.
    pub fn per_node_hour(&self, key: &str) -> Option<f64> {
        let (instance, capacity) = key.split_once('/').unwrap_or((key, "?"));
        let find = |sel: &str| self.entries.iter().rev().find(|(s, _)| s == sel).map(|(_, p)| *p);
        let (instance, capacity) = (instance.to_ascii_lowercase(), capacity.to_ascii_lowercase());
        find(&format!("{instance}/{capacity}"))
            .or_else(|| find(&instance))
            .or_else(|| find(&capacity))
            .or_else(|| find("*"))
    }
}

/// A job's cost, from its usage totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cost {
    pub pod_seconds: f64,
    pub node_seconds: f64,
    /// Share of the node-seconds on spot capacity (of those whose capacity
    /// type is known); `None` when none is known.
    pub spot_share: Option<f64>,
    /// At the given prices; `None` without prices, or when some usage has
    /// no matching price (`unpriced_node_seconds` says how much).
    pub dollars: Option<f64>,
    pub unpriced_node_seconds: f64,
    /// Node-seconds by `INSTANCE/CAPACITY`.
    pub by_node_kind: BTreeMap<String, f64>,
}

pub fn cost(totals: &UsageTotals, pods_per_node: u32, prices: &Prices) -> Cost {
    let share = 1.0 / f64::from(pods_per_node.max(1));
    let mut c = Cost::default();
    let (mut spot, mut known, mut dollars) = (0.0, 0.0, 0.0);
    for (key, pod_seconds) in totals {
        let node_seconds = pod_seconds * share;
        c.pod_seconds += pod_seconds;
        c.node_seconds += node_seconds;
        *c.by_node_kind.entry(key.clone()).or_default() += node_seconds;
        match key.rsplit('/').next() {
            Some("spot") => {
                spot += node_seconds;
                known += node_seconds;
            }
            Some("?") | None => {}
            Some(_) => known += node_seconds,
        }
        match prices.per_node_hour(key) {
            Some(p) => dollars += p * node_seconds / 3600.0,
            None => c.unpriced_node_seconds += node_seconds,
        }
    }
    c.spot_share = (known > 0.0).then(|| spot / known);
    c.dollars = (!prices.is_empty() && c.unpriced_node_seconds == 0.0).then_some(dollars);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(s: f64, capacity: Option<&str>, instance: Option<&str>) -> Usage {
        Usage { pod_seconds: s, capacity_type: capacity.map(Into::into), instance_type: instance.map(Into::into) }
    }

    #[test]
    fn node_seconds_are_pod_seconds_over_the_pods_a_node_holds_priced_most_specific_first() {
        let mut totals = UsageTotals::new();
        add(&mut totals, &usage(3600.0, Some("spot"), Some("m7i.2xlarge")));
        add(&mut totals, &usage(3600.0, Some("spot"), Some("m7i.2xlarge")));
        add(&mut totals, &usage(1800.0, Some("on-demand"), Some("c7i.xlarge")));
        let prices = Prices::parse("spot=0.10, on-demand=0.40, m7i.2xlarge/spot=0.16").unwrap();
        let c = cost(&totals, 4, &prices);
        assert_eq!((c.pod_seconds, c.node_seconds), (9000.0, 2250.0));
        // 1800 node-s of m7i spot at 0.16/h, 450 node-s on-demand at 0.40/h.
        assert!((c.dollars.unwrap() - (0.5 * 0.16 + 0.125 * 0.40)).abs() < 1e-12, "{c:?}");
        assert!((c.spot_share.unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(c.by_node_kind["m7i.2xlarge/spot"], 1800.0);
    }

    #[test]
    fn unknown_nodes_are_priced_by_the_wildcard_or_left_unpriced() {
        let mut totals = UsageTotals::new();
        add(&mut totals, &usage(7200.0, None, None));
        let c = cost(&totals, 2, &Prices::parse("spot=0.1").unwrap());
        assert_eq!((c.dollars, c.unpriced_node_seconds, c.spot_share), (None, 3600.0, None));
        let c = cost(&totals, 2, &Prices::parse("spot=0.1,*=0.2").unwrap());
        assert_eq!(c.dollars, Some(0.2));
        assert_eq!(cost(&totals, 2, &Prices::default()).dollars, None);
        assert!(
            Prices::parse("spot").is_err() && Prices::parse("spot=-1").is_err() && Prices::parse("spot=x").is_err()
        );
    }
}
