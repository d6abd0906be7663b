//! The model signature: what a model takes and gives, and the contract for
//! mapping a file's columns onto its inputs. The worker's runtime reads it
//! from ONNX; the coordinator checks input files against it before
//! enqueueing anything. Both use `bind`, so they cannot disagree.
//!
//! Mapping rules, per model input:
//! - `[N, K]` with feature names in the model's metadata
//!   (`hourglass.feature_names`, or `hourglass.feature_names.<input>` for a
//!   model with several inputs): those columns, in that order;
//! - `[N]` or `[N, 1]`: the column named like the input;
//! - `[N, K]` without names, in a single-input model: every column but the
//!   id column, in file order, and there must be exactly K of them.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Element types the engine feeds and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float64,
    Int32,
    Int64,
}

impl DType {
    pub fn as_str(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
        }
    }
}

/// Whether CSV and JSON lines can write a column of this type (Parquet
/// writes any): text, booleans, integers and floats.
pub fn text_writable(t: &arrow_schema::DataType) -> bool {
    matches!(
        t,
        arrow_schema::DataType::Utf8
            | arrow_schema::DataType::LargeUtf8
            | arrow_schema::DataType::Utf8View
            | arrow_schema::DataType::Boolean
            | arrow_schema::DataType::Int8
            | arrow_schema::DataType::Int16
            | arrow_schema::DataType::Int32
            | arrow_schema::DataType::Int64
            | arrow_schema::DataType::UInt8
            | arrow_schema::DataType::UInt16
            | arrow_schema::DataType::UInt32
            | arrow_schema::DataType::UInt64
            | arrow_schema::DataType::Float32
            | arrow_schema::DataType::Float64
            | arrow_schema::DataType::Null
    )
}

/// Whether a column of Arrow type `column` can feed a model input of
/// element type `input`: the one table the planner (at submit) and the
/// worker (per batch) both consult, so a file accepted at submit is never
/// refused by every worker. Integer inputs take integers that fit an i64
/// (not u64) and booleans; float inputs take any integer, float32/64 and
/// booleans. Decimals, float16, strings and nested types are refused.
pub fn column_feeds(column: &arrow_schema::DataType, input: DType) -> bool {
    use arrow_schema::DataType as T;
    let int =
        matches!(column, T::Int8 | T::Int16 | T::Int32 | T::Int64 | T::UInt8 | T::UInt16 | T::UInt32 | T::Boolean);
    match input {
        DType::Int32 | DType::Int64 => int,
        DType::Float32 | DType::Float64 => int || matches!(column, T::UInt64 | T::Float32 | T::Float64),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    /// `None` for element types the engine does not handle (strings, maps).
    pub dtype: Option<DType>,
    /// The declared type as ONNX Runtime names it, for messages.
    pub type_name: String,
    /// Dimensions; `None` is symbolic (the batch dimension, usually).
    pub shape: Vec<Option<u64>>,
}

impl TensorSpec {
    /// Features per row: 1 for `[N]`, K for `[N, K]`.
    pub fn width(&self) -> Option<u64> {
        match self.shape.as_slice() {
            [_] => Some(1),
            [_, k] => *k,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Feature names per input, from the model's metadata.
    pub feature_names: BTreeMap<String, Vec<String>>,
}

/// Which file columns feed one model input, by index into the file's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBinding {
    pub input: String,
    pub dtype: DType,
    /// Column indices, in the order the input's K features expect them.
    pub columns: Vec<usize>,
}

/// Metadata key that names the feature columns of a model input.
pub const FEATURE_NAMES_KEY: &str = "hourglass.feature_names";

impl ModelSignature {
    /// Maps `columns` (a file's header or schema) onto the model's inputs.
    /// `file` names the file in errors.
    pub fn bind(&self, file: &str, columns: &[String], id_column: &str) -> Result<Vec<InputBinding>> {
        let err = |msg: String| Error::invalid(file.to_string(), msg);
        let index = |name: &str| columns.iter().position(|c| c == name);
        if index(id_column).is_none() {
            return Err(err(format!("id column {id_column:?} is missing (columns: {})", preview(columns))));
        }
        let mut out = Vec::new();
        for input in &self.inputs {
            let dtype = match input.dtype {
                Some(d @ (DType::Float32 | DType::Int64)) => d,
                _ => {
                    return Err(err(format!(
                        "model input {:?} has type {}; the engine feeds float32 and int64 inputs",
                        input.name, input.type_name
                    )));
                }
            };
            let width = input.width().ok_or_else(|| {
                err(format!(
                    "model input {:?} has shape {:?}; the engine feeds [N] or [N, K] inputs with a fixed K",
                    input.name, input.shape
                ))
            })?;
            let names = self.feature_names.get(&input.name);
            let cols: Vec<usize> = if let Some(names) = names {
                if names.len() as u64 != width {
                    return Err(err(format!(
                        "model input {:?} takes {width} features but its metadata names {}",
                        input.name,
                        names.len()
                    )));
                }
                let mut cols = Vec::with_capacity(names.len());
                let missing: Vec<&str> = names.iter().filter(|n| index(n).is_none()).map(|s| s.as_str()).collect();
                if !missing.is_empty() {
                    return Err(err(format!(
                        "missing column{} {} required by model input {:?}",
                        if missing.len() > 1 { "s" } else { "" },
                        missing.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", "),
                        input.name
                    )));
                }
                for n in names {
                    cols.push(index(n).expect("checked above"));
                }
                cols
            } else if width == 1 && index(&input.name).is_some() {
                vec![index(&input.name).expect("checked")]
            } else if self.inputs.len() == 1 {
                let cols: Vec<usize> = (0..columns.len()).filter(|&i| columns[i] != id_column).collect();
                if cols.len() as u64 != width {
                    return Err(err(format!(
                        "model input {:?} takes {width} features but the file has {} columns besides {id_column:?}",
                        input.name,
                        cols.len()
                    )));
                }
                cols
            } else {
                return Err(err(format!(
                    "cannot map columns to model input {:?}: no column of that name and no feature names in the model metadata",
                    input.name
                )));
            };
            out.push(InputBinding { input: input.name.clone(), dtype, columns: cols });
        }
        Ok(out)
    }
}

fn preview(columns: &[String]) -> String {
    let mut s = columns.iter().take(8).map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
    if columns.len() > 8 {
        s.push_str(&format!(", … {} in all", columns.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(names: Option<Vec<&str>>) -> ModelSignature {
        let mut feature_names = BTreeMap::new();
        if let Some(n) = names {
            feature_names.insert("input".to_string(), n.into_iter().map(String::from).collect());
        }
        ModelSignature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype: Some(DType::Float32),
                type_name: "float32".into(),
                shape: vec![None, Some(2)],
            }],
            outputs: vec![],
            feature_names,
        }
    }

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn binds_by_name_then_by_position() {
        let b = sig(Some(vec!["b", "a"])).bind("f.csv", &cols(&["id", "a", "b"]), "id").unwrap();
        assert_eq!(b[0].columns, vec![2, 1]);
        let b = sig(None).bind("f.csv", &cols(&["x", "id", "y"]), "id").unwrap();
        assert_eq!(b[0].columns, vec![0, 2]);
    }

    #[test]
    fn errors_name_the_file_and_column() {
        let e = sig(Some(vec!["a", "b"])).bind("f.csv", &cols(&["id", "a"]), "id").unwrap_err().to_string();
        assert!(e.contains("f.csv") && e.contains("\"b\""), "{e}");
        let e = sig(None).bind("f.csv", &cols(&["id", "a", "b", "c"]), "id").unwrap_err().to_string();
        assert!(e.contains("takes 2 features but the file has 3"), "{e}");
        let e = sig(None).bind("f.csv", &cols(&["a", "b"]), "id").unwrap_err().to_string();
        assert!(e.contains("id column"), "{e}");
    }
}

#[cfg(test)]
mod type_table_tests {
    use super::*;
    use arrow_schema::DataType as T;

    #[test]
    fn integer_inputs_refuse_floats_decimals_and_u64() {
        for t in [T::Float32, T::Float64, T::Decimal128(10, 2), T::UInt64, T::Utf8, T::Float16] {
            assert!(!column_feeds(&t, DType::Int64), "{t}");
        }
        assert!(column_feeds(&T::Int32, DType::Int64));
        for t in [T::Float32, T::Float64, T::Int64, T::UInt64, T::Boolean] {
            assert!(column_feeds(&t, DType::Float32), "{t}");
        }
        for t in [T::Decimal128(10, 2), T::Float16, T::Utf8, T::Date32] {
            assert!(!column_feeds(&t, DType::Float32), "{t}");
        }
    }
}
