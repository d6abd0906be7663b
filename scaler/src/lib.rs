//! The scaler: turns queue depth, measured throughput and the job's
//! deadline into worker replica counts, and pre-warms spot node groups for
//! the cluster autoscaler with placeholder pods, so the deadline is met on
//! the fewest node-hours.
//!
//! It owns the policy (`policy`: a pure function of its signals, shared by
//! the live loop and the simulator), the signals (`signals`: queue depth
//! from the `Queue` trait, progress from the job ledger), the actuators
//! (`kube`: Deployment scale, placeholder capacity, events), the live loop
//! (`run`) and the simulator (`sim`). It only reads signals and writes
//! replica counts: it never touches shards or outputs.

pub mod busy;
pub mod error;
pub mod kube;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod signals;
pub mod sim;

pub use error::{Error, Result};
