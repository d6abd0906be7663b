//! The scaler: turns queue depth, measured throughput and the job's
//! deadline into worker replica counts, and pre-warms spot node groups for
//! the cluster autoscaler with placeholder pods, so the deadline is met on
//! the fewest node-hours.
//!
//! It will own the policy (a pure function of its signals), the signals
//! (queue depth from the `Queue` trait, progress from the job ledger), the
//! actuators (Kubernetes Deployment scale, placeholder capacity) and a
//! simulator. It only reads signals and writes replica counts: it never
//! touches shards or outputs.
//!
//! Not built yet: the scaler's issue follows the S3/SQS backends. This
//! crate holds its place in the workspace and nothing else.
