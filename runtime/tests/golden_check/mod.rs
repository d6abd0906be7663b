//! The golden check shared by the golden tests: the 1,000 golden rows,
//! decoded by the CSV codec and scored through `ModelRuntime`, against the
//! predictions `models/make_models.py` recorded with Python ONNX Runtime.

use hourglass_core::model::{DType, InputBinding};
use hourglass_format::csv::CsvShard;
use hourglass_runtime::{ColumnData, InputData, OutputColumn};
use hourglass_runtime::{ModelRuntime, RuntimeOptions};
use std::path::PathBuf;

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The golden inputs, decoded by the production CSV codec.
pub fn golden_inputs(runtime: &ModelRuntime) -> (Vec<InputData>, usize) {
    let text = std::fs::read(models_dir().join("golden/inputs.csv")).unwrap();
    let header_end = text.iter().position(|&b| b == b'\n').unwrap() + 1;
    let columns: Vec<String> =
        std::str::from_utf8(&text[..header_end - 1]).unwrap().split(',').map(String::from).collect();
    let bindings: Vec<InputBinding> = runtime.signature().bind("inputs.csv", &columns, "id").unwrap();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].dtype, DType::Float32);
    let shard = CsvShard {
        columns: &columns,
        id_column: 0,
        bindings: &bindings,
        batch_size: 100_000,
        max_bad_rows: 0,
        max_line_bytes: 1 << 20,
        delimiter: b',',
        keep: &[],
    };
    let mut batches = Vec::new();
    let bad = shard
        .decode(&text[header_end..], |b| {
            batches.push(b);
            Ok::<_, hourglass_format::Error>(())
        })
        .unwrap();
    assert!(bad.is_empty());
    assert_eq!(batches.len(), 1);
    let b = batches.pop().unwrap();
    (b.inputs, b.rows)
}

pub fn golden(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(models_dir().join(format!("golden/{name}.json"))).unwrap()).unwrap()
}

/// Flattens a golden output (`[N]` or `[N, K]`) into the runtime's columns.
pub fn expected_columns(name: &str, value: &serde_json::Value) -> Vec<(String, Vec<f64>)> {
    let rows = value.as_array().unwrap();
    match &rows[0] {
        serde_json::Value::Array(first) if first.len() == 1 => {
            vec![(name.to_string(), rows.iter().map(|r| r[0].as_f64().unwrap()).collect())]
        }
        serde_json::Value::Array(first) => (0..first.len())
            .map(|j| (format!("{name}_{j}"), rows.iter().map(|r| r[j].as_f64().unwrap()).collect()))
            .collect(),
        _ => vec![(name.to_string(), rows.iter().map(|r| r.as_f64().unwrap()).collect())],
    }
}

/// Loads reference model `name` with `options` and checks its outputs on
/// the golden rows; returns the runtime (its device says where it ran).
pub fn check_model(name: &str, options: RuntimeOptions) -> ModelRuntime {
    let runtime = ModelRuntime::load_file(&models_dir().join(format!("{name}.onnx")), options).unwrap();
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models_dir().join(format!("{name}.card.json"))).unwrap()).unwrap();
    assert_eq!(runtime.sha256(), card["sha256"].as_str().unwrap(), "model card sha256 is stale");
    let (inputs, rows) = golden_inputs(&runtime);
    assert_eq!(rows, 1000);
    let got: Vec<OutputColumn> = runtime.run(&inputs, rows).unwrap();
    let golden = golden(name);
    let mut compared = 0;
    for (out_name, value) in golden["outputs"].as_object().unwrap() {
        for (col, expected) in expected_columns(out_name, value) {
            let actual = got.iter().find(|c| c.name == col).unwrap_or_else(|| panic!("{name}: no output column {col}"));
            assert_eq!(actual.data.len(), rows);
            if let ColumnData::I64(_) = actual.data {
                for (i, e) in expected.iter().enumerate() {
                    assert_eq!(actual.data.get_f64(i), *e, "{name} {col} row {i}");
                }
            } else {
                for (i, e) in expected.iter().enumerate() {
                    let a = actual.data.get_f64(i);
                    assert!((a - e).abs() <= 1e-5, "{name} {col} row {i}: rust {a} vs python {e}");
                }
            }
            compared += 1;
        }
    }
    assert_eq!(compared, got.len(), "{name}: every output column is compared");
    runtime
}
