//! The data people have: TSV, files without a header, gzip and zstd CSV,
//! input columns kept next to the predictions, CSV and JSON-lines outputs.
//! Real `hourglass` processes on the local backends (`e2e_aws.rs` runs the
//! same on S3 and SQS); every output row is checked against the model's own
//! score of its input row.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

/// `gen-data`'s CSV rows under `dir`, as (header, lines).
fn csv_lines(dir: &Path) -> (String, Vec<String>) {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut header = String::new();
    let mut lines = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut it = text.lines();
        header = it.next().unwrap().to_string();
        lines.extend(it.map(String::from));
    }
    (header, lines)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// An output file's rows by id, each a map of column → text.
fn read_text_outputs(dir: &Path, ext: &str) -> HashMap<String, Vec<(String, String)>> {
    let mut rows: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("part-") && name.ends_with(ext)) {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        for row in parse_text_output(&body, ext) {
            let id = row[0].1.clone();
            assert!(rows.insert(id.clone(), row).is_none(), "id {id} twice");
        }
    }
    rows
}

/// Rows of one CSV or JSON-lines output, columns in file order.
fn parse_text_output(body: &[u8], ext: &str) -> Vec<Vec<(String, String)>> {
    if ext == ".csv" {
        let mut rdr = csv::ReaderBuilder::new().from_reader(body);
        let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
        rdr.records().map(|r| header.iter().cloned().zip(r.unwrap().iter().map(String::from)).collect()).collect()
    } else {
        body.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let Ordered(v) = serde_json::from_slice(l).unwrap();
                v.into_iter().map(|(k, v)| (k, v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))).collect()
            })
            .collect()
    }
}

/// A JSON object's members in the order the line has them.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn run_workers(s: &Scratch) {
    let mut a = WorkerProc::spawn(s, &["--exit-when-idle", "1s"]);
    let mut b = WorkerProc::spawn(s, &["--exit-when-idle", "1s"]);
    assert!(a.wait_exit(LONG).success(), "{}", a.log.join("\n"));
    assert!(b.wait_exit(LONG).success(), "{}", b.log.join("\n"));
}

fn ok(out: std::process::Output) -> std::process::Output {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn refused(out: std::process::Output) -> String {
    assert!(!out.status.success(), "accepted: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn headerless_tsv_gzip_and_zstd_keep_columns_into_csv_outputs() {
    let s = Scratch::new();
    let gen_dir = s.path("gen");
    hourglass_ok(&["gen-data", "--output", gen_dir.to_str().unwrap(), "--rows", "9000", "--files", "1"]);
    let (header, lines) = csv_lines(&gen_dir);
    let tsv = |ls: &[String]| ls.iter().map(|l| l.replace(',', "\t") + "\n").collect::<String>().into_bytes();
    // Three files of the same rows' kinds: plain TSV (cut into several
    // shards), gzip (two members, as `cat a.gz b.gz` makes) and zstd.
    std::fs::create_dir_all(s.path("input")).unwrap();
    std::fs::write(s.path("input/a.tsv"), tsv(&lines[..3000])).unwrap();
    let mut two = gzip(&tsv(&lines[3000..4500]));
    two.extend(gzip(&tsv(&lines[4500..6000])));
    std::fs::write(s.path("input/b.tsv.gz"), two).unwrap();
    std::fs::write(s.path("input/c.tsv.zst"), zstd(&tsv(&lines[6000..]))).unwrap();
    // The header names the columns; the files have none.
    let columns = header.replace('\t', ",");
    let out = ok(submit(
        &s,
        &[
            "--no-header",
            "--columns",
            &columns,
            "--keep-columns",
            "C26,I1",
            "--output-format",
            "csv",
            "--shard-size",
            "64KiB",
            "--json",
        ],
    ));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The plain file in several shards, each compressed file in one.
    assert!(report["shards"].as_u64().unwrap() >= 4, "{report}");
    run_workers(&s);
    let st = status_json(&s);
    assert_eq!((st["state"].as_str(), st["rows_done"].as_u64()), (Some("succeeded"), Some(9000)), "{st}");
    let v = hourglass_ok(&["verify", &s.output(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(
        (v["output_rows"].as_u64(), v["missing"].as_u64(), v["duplicates"].as_u64()),
        (Some(9000), Some(0), Some(0))
    );

    let inputs = read_csv_inputs(&gen_dir);
    let expected = direct_scores(&inputs);
    let outputs = read_text_outputs(&s.path("output"), ".csv");
    assert_eq!(outputs.len(), 9000);
    let names: Vec<&str> = header.split(',').collect();
    let (i1, c26) = (names.iter().position(|n| *n == "I1").unwrap(), names.iter().position(|n| *n == "C26").unwrap());
    for line in &lines {
        let fields: Vec<&str> = line.split(',').collect();
        let row = &outputs[fields[0]];
        let cols: Vec<&str> = row.iter().map(|(k, _)| k.as_str()).collect();
        // The id, the kept columns in input order, then the model's outputs.
        assert_eq!(cols, ["id", "I1", "C26", "label", "probabilities_0", "probabilities_1"]);
        assert_eq!((row[1].1.as_str(), row[2].1.as_str()), (fields[i1], fields[c26]));
        let p: f32 = row[5].1.parse().unwrap();
        assert_eq!(p, expected[fields[0]], "row {}", fields[0]);
    }
}

#[test]
fn parquet_keep_all_into_jsonl_outputs() {
    let s = Scratch::new();
    gen_data(&s, 5000, 2, "parquet");
    ok(submit(&s, &["--keep-all", "--output-format", "jsonl", "--shard-size", "32KiB"]));
    run_workers(&s);
    assert_eq!(status_json(&s)["state"], "succeeded");
    hourglass_ok(&["verify", &s.output()]);
    let inputs = read_parquet_inputs(&s.path("input"));
    let expected = direct_scores(&inputs);
    let outputs = read_text_outputs(&s.path("output"), ".jsonl");
    assert_eq!(outputs.len(), 5000);
    for (id, feats) in &inputs {
        let row = &outputs[id];
        // Every input column in input order (the id once), then predictions.
        assert_eq!(row.len(), 1 + feats.len() + 3, "{row:?}");
        assert_eq!((row[1].0.as_str(), row[39].0.as_str()), ("I1", "C26"));
        for (j, f) in feats.iter().enumerate() {
            assert_eq!(row[1 + j].1.parse::<f32>().unwrap(), *f, "{id} {}", row[1 + j].0);
        }
        assert_eq!(row.last().unwrap().1.parse::<f32>().unwrap(), expected[id]);
    }
}

#[test]
fn a_comma_file_keeps_its_columns_in_parquet_by_default() {
    let s = Scratch::new();
    gen_data(&s, 3000, 1, "csv");
    ok(submit(&s, &["--keep-columns", "I2"]));
    run_workers(&s);
    let outputs = read_outputs(&s.path("output"));
    assert_eq!(outputs.len(), 3000);
    let part = std::fs::read_dir(s.path("output"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(part).unwrap())
            .unwrap();
    let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["id", "I2", "label", "probabilities_0", "probabilities_1"]);
    // Kept CSV columns are the input's text, as written.
    assert_eq!(reader.schema().field(1).data_type(), &arrow_schema::DataType::Utf8);
}

#[test]
fn bad_rows_in_compressed_and_headerless_files_name_their_file_lines() {
    let s = Scratch::new();
    let gen_dir = s.path("gen");
    hourglass_ok(&["gen-data", "--output", gen_dir.to_str().unwrap(), "--rows", "400", "--files", "1"]);
    let (header, mut lines) = csv_lines(&gen_dir);
    // Line 151 of the file (header + 150 rows before it) is bad.
    let mut fields: Vec<&str> = lines[149].split(',').collect();
    fields[2] = "oops";
    lines[149] = fields.join(",");
    let mut text = header + "\n";
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::create_dir_all(s.path("input")).unwrap();
    std::fs::write(s.path("input/rows.csv.gz"), gzip(text.as_bytes())).unwrap();
    ok(submit(&s, &["--max-bad-rows", "1"]));
    run_workers(&s);
    assert_eq!(status_json(&s)["state"], "succeeded");
    let bad = std::fs::read_to_string(s.path("output/_hourglass/bad/000000.csv")).unwrap();
    assert!(bad.lines().nth(1).unwrap().starts_with("151,"), "{bad}");

    // The same row with no header, in a TSV cut into several shards: line 150.
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("input")).unwrap();
    let body: String = lines.iter().map(|l| l.replace(',', "\t") + "\n").collect();
    std::fs::write(s.path("input/rows.tsv"), body).unwrap();
    ok(submit(&s, &["--max-bad-rows", "1", "--no-header", "--shard-size", "8KiB"]));
    run_workers(&s);
    let st = status_json(&s);
    assert_eq!((st["state"].as_str(), st["rows_done"].as_u64()), (Some("succeeded"), Some(399)), "{st}");
    let bad: Vec<String> = std::fs::read_dir(s.path("output/_hourglass/bad"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].lines().nth(1).unwrap().starts_with("150,"), "{bad:?}");
}

#[test]
fn the_plan_refuses_what_it_cannot_read_or_keep() {
    let s = Scratch::new();
    gen_data(&s, 200, 1, "csv");
    // A kept column the file does not have: named with the file.
    let err = refused(submit(&s, &["--keep-columns", "I1,nope"]));
    assert!(err.contains("part-00000.csv") && err.contains("\"nope\""), "{err}");
    // A kept column named like a model output.
    let input = std::fs::read_to_string(s.path("input/part-00000.csv")).unwrap();
    let with_label: String =
        input.lines().enumerate().map(|(i, l)| format!("{l},{}\n", if i == 0 { "label" } else { "1" })).collect();
    std::fs::write(s.path("input/part-00000.csv"), with_label).unwrap();
    let err = refused(submit(&s, &["--keep-all"]));
    assert!(err.contains("\"label\"") && err.contains("model output"), "{err}");
    std::fs::write(s.path("input/part-00000.csv"), &input).unwrap();
    // The wrong delimiter: the first row has one field, and the hint says why.
    let err = refused(submit(&s, &["--delimiter", "tab"]));
    assert!(err.contains("--delimiter"), "{err}");
    // Named gzip, but it is not.
    std::fs::write(s.path("input/more.csv.gz"), &input).unwrap();
    let err = refused(submit(&s, &[]));
    assert!(err.contains("more.csv.gz") && err.contains("gzip"), "{err}");
    // A corrupt gzip stream: refused at submit, naming the file.
    let mut broken = gzip(input.as_bytes());
    let n = broken.len();
    broken[n / 2..n - 8].fill(0xff);
    std::fs::write(s.path("input/more.csv.gz"), broken).unwrap();
    let err = refused(submit(&s, &[]));
    assert!(err.contains("more.csv.gz") && err.contains("decompress"), "{err}");
    std::fs::remove_file(s.path("input/more.csv.gz")).unwrap();
    // No header and no --columns: the id, then the model's features. A file
    // whose rows have another layout is refused at its first row.
    let err = refused(submit(&s, &["--no-header", "--columns", "id,a,b"]));
    assert!(err.contains("part-00000.csv"), "{err}");
    let headerless: String = input.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(s.path("input/part-00000.csv"), headerless).unwrap();
    ok(submit(&s, &["--no-header"]));
    // --columns without --no-header is a usage error.
    let err = refused(submit(&s, &["--columns", "id,I1"]));
    assert!(err.contains("--no-header"), "{err}");
}
