//! The task kinds this worker does, put together: the lease mechanics
//! (`lease`) routing shard tasks to the infer handler and training trials
//! to the train handler. The one module that names both the mechanics and
//! the handlers; neither names the other.

use crate::WorkerConfig;
use crate::infer::InferHandler;
use crate::lease::{Handlers, Worker};
use crate::train::{TrainConfig, TrainHandler};
use hourglass_core::queue::Queue;
use std::sync::Arc;

/// Scoring shards and running training trials.
pub struct Kinds {
    infer: InferHandler,
    train: TrainHandler,
}

impl Handlers for Kinds {
    type Infer = InferHandler;
    type Train = TrainHandler;

    fn infer(&self) -> &InferHandler {
        &self.infer
    }

    fn train(&self) -> &TrainHandler {
        &self.train
    }
}

/// A worker that scores shard tasks, and runs training trials with the
/// trainers `train` knows.
pub fn worker(queue: Arc<dyn Queue>, config: WorkerConfig, train: TrainConfig) -> Worker<Kinds> {
    let handlers = config.clone();
    Worker::new(queue, config, move |pool, metrics| Kinds {
        infer: InferHandler::new(handlers.clone(), pool.clone(), metrics.clone()),
        train: TrainHandler::new(handlers, train, pool.clone(), metrics.clone()),
    })
}
