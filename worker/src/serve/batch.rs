//! The dynamic batcher: one per loaded model version. It takes the first
//! waiting request, gathers more until the batch is full, reaches a
//! preferred size with nothing else waiting, or the first request has
//! waited `max_queue_delay`; runs the batch as one `ModelRuntime` call on
//! the CPU pool and splits the outputs back by rows.

use super::{ServeConfig, ServeMetrics};
use crate::ModelRuntime;
use crate::pool::CpuPool;
use crate::runtime::{ColumnData, InputData, OutputTensor};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// One request waiting for its batch.
pub(super) struct Job {
    pub inputs: Vec<InputData>,
    pub rows: usize,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Vec<OutputTensor>, String>>,
}

/// Runs until every sender is gone (the version was swapped out and its
/// last request answered), then returns after the batches in flight.
pub(super) async fn batcher(
    mut rx: mpsc::Receiver<Job>,
    runtime: Arc<ModelRuntime>,
    pool: CpuPool,
    config: ServeConfig,
    metrics: Arc<ServeMetrics>,
) {
    let running = Arc::new(Semaphore::new(config.instances.max(1)));
    let largest_preferred = config.preferred_batch_sizes.iter().copied().max().unwrap_or(usize::MAX);
    while let Some(first) = rx.recv().await {
        let mut rows = first.rows;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.max_queue_delay;
        while rows < config.max_batch_size && rows < largest_preferred {
            // What is waiting now joins without a wait.
            let job = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(_) if config.preferred_batch_sizes.contains(&rows) => None,
                Err(_) => tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten(),
            };
            match job {
                Some(job) => {
                    rows += job.rows;
                    batch.push(job);
                }
                None => break,
            }
        }
        let permit = running.clone().acquire_owned().await.expect("never closed");
        let (runtime, pool, metrics) = (runtime.clone(), pool.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            metrics.queue_depth.dec_by(batch.len() as i64);
            metrics.batch_rows.observe(rows as f64);
            for job in &batch {
                metrics.queue_seconds.observe(job.enqueued.elapsed().as_secs_f64());
            }
            let result = if batch.len() == 1 {
                // One request: its inputs as they are, no copy.
                let inputs = std::mem::take(&mut batch[0].inputs);
                pool.run(move || runtime.run_tensors(&inputs, rows)).await
            } else {
                let inputs = concat(&batch);
                pool.run(move || runtime.run_tensors(&inputs, rows)).await
            };
            split_back(batch, rows, result.map_err(|e| e.to_string()));
        });
    }
    // Wait for the batches still running before reporting drained.
    let _ = running.acquire_many(config.instances.max(1) as u32).await;
}

/// The batch's inputs, request after request.
pub(super) fn concat(batch: &[Job]) -> Vec<InputData> {
    let n_inputs = batch[0].inputs.len();
    (0..n_inputs)
        .map(|i| match &batch[0].inputs[i] {
            InputData::F32(_) => InputData::F32(
                batch
                    .iter()
                    .flat_map(|j| match &j.inputs[i] {
                        InputData::F32(v) => v.as_slice(),
                        _ => &[],
                    })
                    .copied()
                    .collect(),
            ),
            InputData::I64(_) => InputData::I64(
                batch
                    .iter()
                    .flat_map(|j| match &j.inputs[i] {
                        InputData::I64(v) => v.as_slice(),
                        _ => &[],
                    })
                    .copied()
                    .collect(),
            ),
        })
        .collect()
}

/// Each job's rows of every output, in request order.
pub(super) fn split_back(batch: Vec<Job>, rows: usize, result: Result<Vec<OutputTensor>, String>) {
    let outputs = match result {
        Ok(o) => o,
        Err(msg) => {
            for job in batch {
                let _ = job.reply.send(Err(msg.clone()));
            }
            return;
        }
    };
    if batch.len() == 1 {
        let job = batch.into_iter().next().expect("one job");
        let _ = job.reply.send(Ok(outputs));
        return;
    }
    let mut offset = 0;
    for job in batch {
        let mine = outputs
            .iter()
            .map(|t| {
                let per_row = t.data.len().checked_div(rows).unwrap_or(0);
                let range = offset * per_row..(offset + job.rows) * per_row;
                let mut shape = t.shape.clone();
                if let Some(first) = shape.first_mut() {
                    *first = job.rows as i64;
                }
                let data = match &t.data {
                    ColumnData::F32(v) => ColumnData::F32(v[range].to_vec()),
                    ColumnData::F64(v) => ColumnData::F64(v[range].to_vec()),
                    ColumnData::I32(v) => ColumnData::I32(v[range].to_vec()),
                    ColumnData::I64(v) => ColumnData::I64(v[range].to_vec()),
                };
                OutputTensor { name: t.name.clone(), shape, data }
            })
            .collect();
        offset += job.rows;
        let _ = job.reply.send(Ok(mine));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_concatenated_in_order_and_split_back_by_rows() {
        let mut replies = Vec::new();
        let batch: Vec<Job> = [1usize, 3, 2]
            .iter()
            .enumerate()
            .map(|(i, &rows)| {
                let (tx, rx) = oneshot::channel();
                replies.push(rx);
                let values = (0..rows * 2).map(|k| (i * 100 + k) as f32).collect();
                Job { inputs: vec![InputData::F32(values)], rows, enqueued: Instant::now(), reply: tx }
            })
            .collect();
        let joined = concat(&batch);
        assert_eq!(joined[0].len(), 12);
        // A fake model: output row r = [x0 + x1, r as i64].
        let InputData::F32(x) = &joined[0] else { panic!() };
        let sums: Vec<f32> = x.chunks(2).map(|c| c[0] + c[1]).collect();
        let outputs = vec![
            OutputTensor { name: "sum".into(), shape: vec![6], data: ColumnData::F32(sums.clone()) },
            OutputTensor { name: "pair".into(), shape: vec![6, 2], data: ColumnData::I64((0..12).collect()) },
        ];
        split_back(batch, 6, Ok(outputs));
        let mut offset = 0;
        for (rx, rows) in replies.into_iter().zip([1usize, 3, 2]) {
            let got = rx.await.unwrap().unwrap();
            assert_eq!(got[0].shape, vec![rows as i64]);
            assert_eq!(got[0].data, ColumnData::F32(sums[offset..offset + rows].to_vec()));
            assert_eq!(got[1].shape, vec![rows as i64, 2]);
            assert_eq!(got[1].data, ColumnData::I64((offset as i64 * 2..(offset + rows) as i64 * 2).collect()));
            offset += rows;
        }
    }
}
