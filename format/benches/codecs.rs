//! Micro-benchmarks of the worker's codecs, so regressions show up in
//! numbers: CSV decoding, Parquet decoding (from a file through the store,
//! as a worker reads it) and output encoding. `cargo bench -p hourglass-worker`.
//! Throughput is in rows (39 float features and an id per row).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hourglass_core::model::{DType, InputBinding, ModelSignature, TensorSpec};
use hourglass_core::{BlobUrl, store};
use hourglass_format::csv::CsvShard;
use hourglass_format::output::OutputWriter;
use hourglass_format::parquet::{ParquetShard, StoreFileReader};
use hourglass_format::tensor::{ColumnData, OutputColumn};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

const ROWS: usize = 65_536;
const WIDTH: usize = 39;
const BATCH: usize = 8192;

/// Deterministic feature values with realistic text lengths.
fn value(row: usize, col: usize) -> f32 {
    let x = (row.wrapping_mul(2_654_435_761) ^ col.wrapping_mul(40_503)) % 100_000;
    x as f32 / 997.0 - 37.5
}

fn names() -> Vec<String> {
    std::iter::once("id".to_string()).chain((1..=WIDTH).map(|i| format!("f{i}"))).collect()
}

fn csv_bytes() -> Vec<u8> {
    let mut out = String::new();
    for r in 0..ROWS {
        out.push_str(&format!("row-{r}"));
        for c in 0..WIDTH {
            out.push_str(&format!(",{}", value(r, c)));
        }
        out.push('\n');
    }
    out.into_bytes()
}

fn bindings() -> Vec<InputBinding> {
    vec![InputBinding { input: "input".into(), dtype: DType::Float32, columns: (1..=WIDTH).collect() }]
}

fn csv_decode(c: &mut Criterion) {
    let data = csv_bytes();
    let (columns, bindings) = (names(), bindings());
    let shard = CsvShard {
        columns: &columns,
        id_column: 0,
        bindings: &bindings,
        batch_size: BATCH,
        max_bad_rows: 0,
        max_line_bytes: 1 << 20,
        delimiter: b',',
        keep: &[],
    };
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("csv", |b| {
        b.iter(|| {
            let mut rows = 0;
            shard
                .decode(&data[..], |batch| {
                    rows += batch.rows;
                    Ok::<_, hourglass_format::Error>(())
                })
                .unwrap();
            assert_eq!(rows, ROWS);
        });
    });
    g.finish();
}

fn parquet_decode(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.parquet");
    let mut fields = vec![Field::new("id", DataType::Utf8, false)];
    fields.extend((1..=WIDTH).map(|i| Field::new(format!("f{i}"), DataType::Float32, false)));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(16_384)).build();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), Some(props)).unwrap();
    for start in (0..ROWS).step_by(BATCH) {
        let mut cols: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from_iter_values((start..start + BATCH).map(|r| format!("row-{r}"))))];
        cols.extend((0..WIDTH).map(|c| {
            Arc::new(Float32Array::from_iter_values((start..start + BATCH).map(|r| value(r, c)))) as ArrayRef
        }));
        writer.write(&RecordBatch::try_new(schema.clone(), cols).unwrap()).unwrap();
    }
    let groups = writer.close().unwrap().num_row_groups();

    let signature = ModelSignature {
        inputs: vec![TensorSpec {
            name: "input".into(),
            dtype: Some(DType::Float32),
            type_name: "tensor(float)".into(),
            shape: vec![None, Some(WIDTH as u64)],
        }],
        outputs: vec![],
        feature_names: BTreeMap::from([("input".to_string(), names()[1..].to_vec())]),
    };
    let url = BlobUrl::parse(&path.to_string_lossy()).unwrap();
    let store = store::open(&url).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let handle = runtime.handle().clone();
    let file = path.to_string_lossy().into_owned();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("parquet", |b| {
        b.iter(|| {
            let reader =
                handle.block_on(StoreFileReader::open_with_metadata(store.clone(), url.key(), None, "bench")).unwrap();
            let shard = ParquetShard {
                file: &file,
                row_groups: (0..groups).collect(),
                id_column: "id",
                signature: &signature,
                batch_size: BATCH,
                keep: &[],
            };
            let rows = shard.decode(&handle, reader, |_| Ok::<_, hourglass_format::Error>(())).unwrap();
            assert_eq!(rows, ROWS as u64);
        });
    });
    g.finish();
}

fn output_encode(c: &mut Criterion) {
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values((0..BATCH).map(|r| format!("row-{r}"))));
    let scores: Vec<f32> = (0..BATCH).map(|r| value(r, 0)).collect();
    let labels: Vec<i64> = (0..BATCH).map(|r| (r % 2) as i64).collect();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("parquet_output", |b| {
        b.iter(|| {
            let mut w = OutputWriter::new("000001", "id", vec![], Default::default(), None);
            for _ in 0..ROWS / BATCH {
                let columns = vec![
                    OutputColumn { name: "label".into(), data: ColumnData::I64(labels.clone()) },
                    OutputColumn { name: "probability".into(), data: ColumnData::F32(scores.clone()) },
                ];
                w.write(ids.clone(), vec![], columns).unwrap();
            }
            w.finish().unwrap()
        });
    });
    g.finish();
}

criterion_group!(benches, csv_decode, parquet_decode, output_encode);
criterion_main!(benches);
