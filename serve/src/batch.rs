//! The dynamic batcher, after Triton's: each loaded model version has
//! `instances` instance loops, each on a thread of its own CPU pool with
//! its own ONNX Runtime session. A free instance takes the first waiting
//! request and everything queued behind it, up to `max_batch_size` rows or
//! a preferred size. It waits for more only while requests for the model
//! are being received or parsed (on their way to the queue), and never
//! past `max_queue_delay` from the first request's queueing: a request
//! alone is not held back for traffic that may never come, and under load,
//! when requests queue while the instances are busy, batches form without
//! any wait. The batch runs as one `ModelRuntime` call and the outputs are
//! split back by rows. Waits use the OS's timed wait (microseconds), not
//! the async timer wheel's millisecond ticks.

use super::{Refusal, ServeConfig, ServeError, ServeMetrics};
use hourglass_runtime::ModelRuntime;
use hourglass_runtime::{ColumnData, InputData, OutputTensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// One request waiting for its batch.
pub(super) struct Job {
    pub inputs: Vec<InputData>,
    pub rows: usize,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Vec<OutputTensor>, ServeError>>,
    /// The request's decoded bytes, given back to the server's budget
    /// when the job is answered or dropped.
    pub _charge: super::limits::Charge,
}

/// One instance: runs until every sender is gone (the version was swapped
/// out and its last request answered) and the queue is empty.
pub(super) fn instance(
    rx: Arc<Mutex<Receiver<Job>>>,
    runtime: Arc<ModelRuntime>,
    config: ServeConfig,
    metrics: Arc<ServeMetrics>,
    arriving: Arc<AtomicUsize>,
) {
    let largest_preferred = config.preferred_batch_sizes.iter().copied().max().unwrap_or(usize::MAX);
    loop {
        let batch = {
            // One instance gathers at a time; the others wait their turn.
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else { return };
            let deadline = first.enqueued + config.max_queue_delay;
            let mut rows = first.rows;
            let mut batch = vec![first];
            while rows < config.max_batch_size && rows < largest_preferred {
                let job = match rx.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) if config.preferred_batch_sizes.contains(&rows) => break,
                    Err(TryRecvError::Empty) => {
                        // Wait only for requests already on their way.
                        let now = Instant::now();
                        if now >= deadline || arriving.load(Ordering::Acquire) == 0 {
                            break;
                        }
                        match rx.recv_timeout(deadline - now) {
                            Ok(job) => job,
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                        }
                    }
                };
                rows += job.rows;
                batch.push(job);
            }
            (batch, rows)
        };
        let (mut batch, rows) = batch;
        metrics.queue_depth.dec_by(batch.len() as i64);
        metrics.batch_rows.observe(rows as f64);
        metrics.calls.inc();
        metrics.batched_requests.inc_by(batch.len() as u64);
        for job in &batch {
            metrics.queue_seconds.observe(job.enqueued.elapsed().as_secs_f64());
        }
        let result = if batch.len() == 1 {
            // One request: its inputs as they are, no copy.
            let inputs = std::mem::take(&mut batch[0].inputs);
            runtime.run_tensors(&inputs, rows)
        } else {
            runtime.run_tensors(&concat(&batch), rows)
        };
        split_back(batch, rows, result);
    }
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
/// A failed call fails every request in it, each with the runtime's error.
pub(super) fn split_back(batch: Vec<Job>, rows: usize, result: hourglass_runtime::Result<Vec<OutputTensor>>) {
    let outputs = match result {
        Ok(o) => o,
        Err(e) => {
            let message = e.to_string();
            for job in batch {
                let _ = job.reply.send(Err(ServeError::new(Refusal::Internal, message.clone())));
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
                Job {
                    inputs: vec![InputData::F32(values)],
                    rows,
                    enqueued: Instant::now(),
                    reply: tx,
                    _charge: Default::default(),
                }
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
