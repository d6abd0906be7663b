//! The model runtime: loads a model once per process, reads its
//! signature, runs batches and hands outputs back as named columns (`[N]` →
//! one column, `[N, K]` → K columns `name_0…`). It knows nothing of queues,
//! so batch scoring, online serving and training validation share it.

use crate::device::{Device, DeviceOptions, Fallback};
use crate::library::environment;
use crate::tensor::{ColumnData, InputData, OutputColumn, OutputTensor};
use crate::{Error, Result};
use hourglass_core::model::{DType, FEATURE_NAMES_KEY, ModelSignature, TensorSpec};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    /// Sessions to keep: one per concurrent shard, since a session runs one
    /// batch at a time.
    pub sessions: usize,
    /// The execution provider and what to do when it cannot be had.
    pub device: DeviceOptions,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { intra_threads: 1, sessions: 1, device: DeviceOptions::default() }
    }
}

impl RuntimeOptions {
    pub fn new(intra_threads: usize, sessions: usize, device: &DeviceOptions) -> Self {
        Self { intra_threads, sessions, device: device.clone() }
    }
}

pub struct ModelRuntime {
    source: String,
    sha256: String,
    signature: ModelSignature,
    sessions: Vec<Mutex<Session>>,
    /// The device the sessions really run on.
    device: Device,
}

impl std::fmt::Debug for ModelRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRuntime")
            .field("source", &self.source)
            .field("sha256", &self.sha256)
            .field("device", &self.device)
            .finish()
    }
}

fn dtype_of(ty: TensorElementType) -> Option<DType> {
    match ty {
        TensorElementType::Float32 => Some(DType::Float32),
        TensorElementType::Float64 => Some(DType::Float64),
        TensorElementType::Int32 => Some(DType::Int32),
        TensorElementType::Int64 => Some(DType::Int64),
        _ => None,
    }
}

fn spec(name: &str, vt: &ValueType) -> TensorSpec {
    match vt {
        ValueType::Tensor { ty, shape, .. } => TensorSpec {
            name: name.to_string(),
            dtype: dtype_of(*ty),
            type_name: format!("{ty:?}").to_lowercase(),
            shape: shape.iter().map(|&d| u64::try_from(d).ok()).collect(),
        },
        other => TensorSpec { name: name.to_string(), dtype: None, type_name: format!("{other:?}"), shape: vec![] },
    }
}

impl ModelRuntime {
    /// Loads a model from its bytes. `source` names it in errors.
    /// Loads a model from its bytes, on `options.device`. `source` names it
    /// in errors.
    pub fn load(bytes: &[u8], source: &str, options: RuntimeOptions) -> Result<Self> {
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(bytes));
        let (sessions, device) = open_sessions(bytes, source, &options, &sha256)?;
        let model_err = |e: &dyn std::fmt::Display| Error::Model { model: source.to_string(), message: e.to_string() };
        let first = sessions[0].lock().expect("fresh mutex");
        let inputs: Vec<TensorSpec> = first.inputs().iter().map(|o| spec(o.name(), o.dtype())).collect();
        let outputs: Vec<TensorSpec> = first.outputs().iter().map(|o| spec(o.name(), o.dtype())).collect();
        let metadata = first.metadata().map_err(|e| model_err(&e))?;
        let mut feature_names = BTreeMap::new();
        let parse =
            |s: String| s.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect::<Vec<_>>();
        if inputs.len() == 1
            && let Some(names) = metadata.custom(FEATURE_NAMES_KEY)
        {
            feature_names.insert(inputs[0].name.clone(), parse(names));
        }
        for input in &inputs {
            if let Some(names) = metadata.custom(&format!("{FEATURE_NAMES_KEY}.{}", input.name)) {
                feature_names.insert(input.name.clone(), parse(names));
            }
        }
        drop(metadata);
        drop(first);
        Ok(Self {
            source: source.to_string(),
            sha256,
            signature: ModelSignature { inputs, outputs, feature_names },
            sessions,
            device,
        })
    }

    /// Reads and loads a model file.
    pub fn load_file(path: &Path, options: RuntimeOptions) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Model { model: path.display().to_string(), message: format!("cannot read: {e}") })?;
        Self::load(&bytes, &path.display().to_string(), options)
    }

    pub fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The device the model really runs on: the one asked for, or `cpu`
    /// after a fallback.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Refuses a model a batch job cannot use, before anything is planned:
    /// inputs or outputs that are not tensors of float32, float64, int32 or
    /// int64 (a classifier exported with ZipMap outputs a sequence of maps),
    /// a fixed batch dimension, or outputs that are not `[N]` or `[N, K]`.
    /// The signature is checked first, then a probe batch of three rows of
    /// zeros runs, so what the signature does not say (a shape fixed inside
    /// the graph) shows too.
    pub fn check_batch_scoring(&self) -> Result<()> {
        let bad = |message: String| Error::Model { model: self.source.clone(), message };
        for (kind, specs) in [("input", &self.signature.inputs), ("output", &self.signature.outputs)] {
            for s in specs {
                if s.dtype.is_none() {
                    return Err(bad(format!(
                        "{kind} {:?} is {}; batch scoring takes tensors of float32, float64, int32 or int64 (export classifiers with ZipMap off: zipmap=False)",
                        s.name, s.type_name
                    )));
                }
                if let Some(Some(n)) = s.shape.first() {
                    return Err(bad(format!(
                        "{kind} {:?} has a fixed batch dimension of {n} (shape {:?}); export the model with a dynamic first dimension",
                        s.name, s.shape
                    )));
                }
            }
        }
        const ROWS: usize = 3;
        let inputs: Vec<InputData> = self
            .signature
            .inputs
            .iter()
            .map(|s| {
                let width = s.width().unwrap_or(1) as usize;
                match s.dtype {
                    Some(DType::Int64 | DType::Int32) => InputData::I64(vec![0; ROWS * width]),
                    _ => InputData::F32(vec![0.0; ROWS * width]),
                }
            })
            .collect();
        self.run(&inputs, ROWS).map(|_| ()).map_err(|e| bad(format!("a probe batch of {ROWS} rows failed: {e}")))
    }

    /// Scores one batch. `inputs` are in the model's input order, each
    /// row-major `[rows, width]`. Outputs come as columns: `[N]` → one,
    /// `[N, K]` → K (`name_0 …`).
    pub fn run(&self, inputs: &[InputData], rows: usize) -> Result<Vec<OutputColumn>> {
        let mut columns = Vec::new();
        for t in self.run_tensors(inputs, rows)? {
            let infer_err = |m: String| Error::Inference { model: self.source.clone(), message: m };
            macro_rules! split {
                ($v:expr, $variant:ident) => {
                    split_columns(&t.name, &t.shape, $v, rows)
                        .map_err(infer_err)?
                        .into_iter()
                        .map(|(name, v)| OutputColumn { name, data: ColumnData::$variant(v) })
                        .collect::<Vec<_>>()
                };
            }
            columns.extend(match t.data {
                ColumnData::F32(v) => split!(v, F32),
                ColumnData::F64(v) => split!(v, F64),
                ColumnData::I32(v) => split!(v, I32),
                ColumnData::I64(v) => split!(v, I64),
            });
        }
        Ok(columns)
    }

    /// Scores one batch and returns each output whole, as ONNX Runtime
    /// gave it (shape and row-major data): what online serving answers
    /// with. `run` is this, split into columns.
    pub fn run_tensors(&self, inputs: &[InputData], rows: usize) -> Result<Vec<OutputTensor>> {
        let infer_err =
            |e: &dyn std::fmt::Display| Error::Inference { model: self.source.clone(), message: e.to_string() };
        if inputs.len() != self.signature.inputs.len() {
            return Err(infer_err(&format!(
                "{} inputs given, the model takes {}",
                inputs.len(),
                self.signature.inputs.len()
            )));
        }
        let mut values: Vec<(String, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (spec, data) in self.signature.inputs.iter().zip(inputs) {
            let rank2 = spec.shape.len() == 2;
            let width = spec.width().unwrap_or(1) as usize;
            let shape: Vec<i64> = if rank2 { vec![rows as i64, width as i64] } else { vec![rows as i64] };
            let value: ort::session::SessionInputValue<'_> = match data {
                InputData::F32(v) => {
                    TensorRef::from_array_view((shape, v.as_slice())).map_err(|e| infer_err(&e))?.into()
                }
                InputData::I64(v) => {
                    TensorRef::from_array_view((shape, v.as_slice())).map_err(|e| infer_err(&e))?.into()
                }
            };
            values.push((spec.name.clone(), value));
        }
        let mut session = self.session();
        let outputs = session.run(values).map_err(|e| infer_err(&e))?;
        let mut tensors = Vec::with_capacity(self.signature.outputs.len());
        for spec in &self.signature.outputs {
            let value = outputs.get(&spec.name).ok_or_else(|| infer_err(&format!("output {:?} missing", spec.name)))?;
            let ty = match value.dtype() {
                ValueType::Tensor { ty, .. } => *ty,
                other => return Err(infer_err(&format!("output {:?} is {other:?}, not a tensor", spec.name))),
            };
            macro_rules! take {
                ($t:ty, $variant:ident) => {{
                    let (shape, data) = value.try_extract_tensor::<$t>().map_err(|e| infer_err(&e))?;
                    (shape.to_vec(), ColumnData::$variant(data.to_vec()))
                }};
            }
            let (shape, data) = match ty {
                TensorElementType::Float32 => take!(f32, F32),
                TensorElementType::Float64 => take!(f64, F64),
                TensorElementType::Int32 => take!(i32, I32),
                TensorElementType::Int64 => take!(i64, I64),
                other => {
                    return Err(infer_err(&format!(
                        "output {:?} has type {other:?}; supported: float32, float64, int32, int64",
                        spec.name
                    )));
                }
            };
            tensors.push(OutputTensor { name: spec.name.clone(), shape, data });
        }
        Ok(tensors)
    }

    /// How many sessions (batches that can run at once) it holds.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// A free session if there is one, else waits for the first.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(guard) = s.try_lock() {
                return guard;
            }
        }
        self.sessions[0].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A session per `options.sessions` on the requested device. A GPU that
/// cannot be had (its provider does not register, or the session does not
/// commit on it while it does on the CPU) is the fallback policy's case:
/// `error` returns why, `cpu` opens CPU sessions, counted and warned about.
/// A model that does not commit on the CPU either is a model error.
fn open_sessions(
    bytes: &[u8],
    source: &str,
    options: &RuntimeOptions,
    sha256: &str,
) -> Result<(Vec<Mutex<Session>>, Device)> {
    let env = environment()?;
    let model_err = |e: &dyn std::fmt::Display| Error::Model { model: source.to_string(), message: e.to_string() };
    let wanted = &options.device;
    let open = |gpu: bool| -> Result<std::result::Result<Vec<Mutex<Session>>, String>> {
        let mut sessions = Vec::with_capacity(options.sessions.max(1));
        for _ in 0..options.sessions.max(1) {
            let mut builder = Session::builder(env)
                .map_err(|e| model_err(&e))?
                .with_intra_threads(options.intra_threads.max(1))
                .map_err(|e| model_err(&e))?
                .with_inter_threads(1)
                .map_err(|e| model_err(&e))?;
            if gpu {
                if let Err(reason) = crate::device::register(&mut builder, wanted, sha256) {
                    return Ok(Err(reason));
                }
                if wanted.strict {
                    builder = builder.with_disable_cpu_fallback().map_err(|e| model_err(&e))?;
                }
            }
            match builder.commit_from_memory(bytes) {
                Ok(s) => sessions.push(Mutex::new(s)),
                Err(e) if gpu => {
                    return Ok(Err(if wanted.strict {
                        format!("strict placement: not every node of {source} can run on {}: {e}", wanted.device)
                    } else {
                        format!("a session on {} did not start: {e}", wanted.device)
                    }));
                }
                Err(e) => return Err(model_err(&format!("not a loadable ONNX model: {e}"))),
            }
        }
        Ok(Ok(sessions))
    };
    if !wanted.device.is_gpu() {
        return Ok((open(false)?.expect("CPU sessions report errors as Err"), Device::Cpu));
    }
    let reason = match open(true)? {
        Ok(sessions) => return Ok((sessions, wanted.device)),
        Err(reason) => reason,
    };
    // Not on the GPU: whether the model loads at all tells a device
    // problem from a bad model.
    let cpu = open(false)?.expect("CPU sessions report errors as Err");
    match wanted.fallback {
        Fallback::Cpu if !wanted.strict => {
            crate::metrics::count_fallback(wanted.requested(), &reason);
            Ok((cpu, Device::Cpu))
        }
        _ => Err(Error::Device { device: wanted.device.to_string(), message: reason }),
    }
}

/// `[N]` → one column; `[N, 1]` → one column; `[N, K]` → K columns.
fn split_columns<T: Copy>(
    name: &str,
    shape: &[i64],
    data: Vec<T>,
    rows: usize,
) -> std::result::Result<Vec<(String, Vec<T>)>, String> {
    match shape {
        [n] if *n as usize == rows => Ok(vec![(name.to_string(), data)]),
        [n, 1] if *n as usize == rows => Ok(vec![(name.to_string(), data)]),
        [n, k] if *n as usize == rows => {
            let k = *k as usize;
            Ok((0..k).map(|j| (format!("{name}_{j}"), data.iter().skip(j).step_by(k).copied().collect())).collect())
        }
        other => Err(format!("output {name:?} has shape {other:?} for a batch of {rows} rows; expected [N] or [N, K]")),
    }
}

#[cfg(test)]
mod tests {
    use super::split_columns;

    #[test]
    fn splits_outputs_into_columns() {
        let cols = split_columns("p", &[2, 2], vec![1, 2, 3, 4], 2).unwrap();
        assert_eq!(cols, vec![("p_0".into(), vec![1, 3]), ("p_1".into(), vec![2, 4])]);
        assert_eq!(split_columns("s", &[2, 1], vec![5, 6], 2).unwrap(), vec![("s".into(), vec![5, 6])]);
        assert!(split_columns("s", &[3], vec![1, 2, 3], 2).is_err());
    }
}
