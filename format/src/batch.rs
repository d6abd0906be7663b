//! A batch of decoded rows, and the tensor buffers batches reuse.
//! Decoders produce `Batch`es of at most `batch_size` rows, so memory is
//! bounded by the batch, not the shard.

use crate::tensor::InputData;
use arrow_array::ArrayRef;

/// Decoded rows: the id column, passed through untouched, and one
/// row-major buffer per model input.
#[derive(Debug)]
pub struct Batch {
    pub ids: ArrayRef,
    /// The kept input columns, in the order the shard was told.
    pub kept: Vec<ArrayRef>,
    pub inputs: Vec<InputData>,
    pub rows: usize,
}

thread_local! {
    /// Tensor buffers of this pool thread's last batches, for its next:
    /// memory already faulted in and warm in cache, instead of a fresh
    /// allocation of a megabyte or more per batch.
    static SPARE_TENSORS: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare buffers a thread keeps (a batch's inputs, and one more).
const MAX_SPARE_TENSORS: usize = 2;

/// An empty float buffer with room for `capacity` values, reused when one
/// is spare.
pub fn empty_tensor(capacity: usize) -> Vec<f32> {
    let spare = SPARE_TENSORS.with(|s| {
        let mut s = s.borrow_mut();
        let i = s.iter().position(|v| v.capacity() >= capacity)?;
        Some(s.swap_remove(i))
    });
    match spare {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(capacity),
    }
}

/// A zeroed float tensor buffer of `len` values, reused when one is spare.
pub fn tensor_buffer(len: usize) -> Vec<f32> {
    let mut v = empty_tensor(len);
    v.resize(len, 0.0);
    v
}

/// Gives a scored batch's input buffers back for the next batch.
pub fn recycle(inputs: Vec<InputData>) {
    SPARE_TENSORS.with(|s| {
        let mut s = s.borrow_mut();
        for i in inputs {
            if let InputData::F32(v) = i
                && s.len() < MAX_SPARE_TENSORS
            {
                s.push(v);
            }
        }
    });
}
