//! The tensors that pass between the codecs, the model runtime and the
//! serving protocols: a batch's inputs, row-major, and its outputs.

/// A model input's data for one batch, row-major `[rows, width]`.
#[derive(Debug, Clone, PartialEq)]
pub enum InputData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl InputData {
    pub fn len(&self) -> usize {
        match self {
            InputData::F32(v) => v.len(),
            InputData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One output of a batch, whole: its shape (batch dimension first) and its
/// row-major data.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: ColumnData,
}

/// One output column of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    pub data: ColumnData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl ColumnData {
    /// The Open Inference Protocol's name for the element type.
    pub fn datatype(&self) -> &'static str {
        match self {
            ColumnData::F32(_) => "FP32",
            ColumnData::F64(_) => "FP64",
            ColumnData::I32(_) => "INT32",
            ColumnData::I64(_) => "INT64",
        }
    }

    /// Appends the values as little-endian bytes (the protocols' binary
    /// tensor form).
    pub fn extend_le_bytes(&self, out: &mut Vec<u8>) {
        macro_rules! put {
            ($v:expr, $n:expr) => {{
                out.reserve($v.len() * $n);
                for x in $v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }};
        }
        match self {
            ColumnData::F32(v) => put!(v, 4),
            ColumnData::F64(v) => put!(v, 8),
            ColumnData::I32(v) => put!(v, 4),
            ColumnData::I64(v) => put!(v, 8),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnData::F32(v) => v.len(),
            ColumnData::F64(v) => v.len(),
            ColumnData::I32(v) => v.len(),
            ColumnData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value at `row` as f64, for comparisons in tests and checks.
    pub fn get_f64(&self, row: usize) -> f64 {
        match self {
            ColumnData::F32(v) => v[row] as f64,
            ColumnData::F64(v) => v[row],
            ColumnData::I32(v) => v[row] as f64,
            ColumnData::I64(v) => v[row] as f64,
        }
    }
}
