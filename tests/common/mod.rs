//! Helpers for end-to-end tests: run the real `hourglass` binary as
//! separate processes against the local backends, and read what they wrote.

#![allow(dead_code)]

pub mod kube;
pub mod prometheus;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use hourglass_runtime::InputData;
use hourglass_runtime::{ModelRuntime, RuntimeOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hourglass");

pub fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/ctr_gbdt.onnx")
}

/// A scratch directory with a queue, inputs and outputs.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn s(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }
    pub fn queue(&self) -> String {
        format!("local://{}", self.s("queue.db"))
    }
    pub fn input(&self) -> String {
        self.s("input/")
    }
    pub fn output(&self) -> String {
        self.s("output/")
    }
}

pub fn hourglass(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("running hourglass")
}

/// `hourglass` with extra environment variables.
pub fn hourglass_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN).args(args).envs(env.iter().copied()).stdin(Stdio::null()).output().expect("running hourglass")
}

pub fn hourglass_ok(args: &[&str]) -> Output {
    run_ok(Command::new(BIN).args(args).stdin(Stdio::null()))
}

/// Runs a command; fails the test with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn gen_data(s: &Scratch, rows: u64, files: usize, format: &str) {
    hourglass_ok(&[
        "gen-data",
        "--output",
        &s.input(),
        "--rows",
        &rows.to_string(),
        "--files",
        &files.to_string(),
        "--format",
        format,
    ]);
}

/// Synthetic Parquet rows with a `clicked` label that depends on the
/// features (`gen-data --label`), for training jobs; `output` may be S3.
pub fn gen_labelled(output: &str, rows: &str, files: &str, seed: &str) {
    hourglass_ok(&[
        "gen-data", "--output", output, "--rows", rows, "--files", files, "--format", "parquet", "--label", "clicked",
        "--seed", seed,
    ]);
}

pub fn submit(s: &Scratch, extra: &[&str]) -> Output {
    submit_to(&s.input(), &s.output(), &s.queue(), extra)
}

/// `hourglass submit` of the reference model from `input` to `output`.
pub fn submit_to(input: &str, output: &str, queue: &str, extra: &[&str]) -> Output {
    let model = model_path();
    let mut args =
        vec!["submit", "--input", input, "--model", model.to_str().unwrap(), "--output", output, "--queue", queue];
    args.extend(extra);
    hourglass(&args)
}

/// A running worker process whose stderr lines arrive on a channel.
pub struct WorkerProc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl WorkerProc {
    pub fn spawn(s: &Scratch, extra: &[&str]) -> Self {
        Self::spawn_on(&s.queue(), extra, &[])
    }

    /// A worker on any queue, with extra environment.
    pub fn spawn_on(queue: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut args = vec!["worker", "--queue", queue, "--concurrency", "1", "--threads", "1"];
        args.extend(extra);
        Self::spawn_command(&args, env)
    }

    /// Any `hourglass` command, logging JSON lines.
    pub fn spawn_command(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting a worker");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines: rx, log: Vec::new() }
    }

    /// Waits for a log line containing `needle`, at most `timeout`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    panic!("no log line with {needle:?} within {timeout:?}; log so far:\n{}", self.log.join("\n"))
                }
            }
        }
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                    self.log.push(line);
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("worker did not exit within {timeout:?}; log:\n{}", self.log.join("\n"));
            }
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.log.push(line);
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `hourglass status --json` of a job that exists: exit 0 (succeeded), 3
/// (failed) or 4 (running), matching the state it prints.
/// The frozen-worker case, on any backend: `frozen` is stopped (SIGSTOP)
/// inside a shard, `rescue` completes the job meanwhile, and once resumed
/// `frozen` notices by its own clock that its lease ran out and writes
/// nothing: `snapshot` of the prefix is the same before and after.
pub fn assert_frozen_worker_writes_nothing<T: PartialEq + std::fmt::Debug>(
    frozen: &mut WorkerProc,
    rescue: impl FnOnce(),
    snapshot: impl Fn() -> T,
) {
    let long = Duration::from_secs(180);
    frozen.wait_for_line("shard started", long);
    frozen.signal("STOP");
    rescue();
    let before = snapshot();
    frozen.signal("CONT");
    let line = frozen.wait_for_line("lease lost", long);
    assert!(line.contains("nothing was written"), "{line}");
    frozen.signal("TERM");
    assert!(frozen.wait_exit(long).success(), "{}", frozen.log.join("\n"));
    assert_eq!(snapshot(), before, "an object under the prefix changed after _SUCCESS");
}

pub fn status_json(s: &Scratch) -> serde_json::Value {
    status_json_of(&s.output(), &[])
}

pub fn status_json_of(output: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["status", output, "--json"];
    args.extend(extra);
    let out = hourglass(&args);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status: {e}; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    let code = match st["state"].as_str() {
        Some("succeeded") => 0,
        Some("failed") => 3,
        _ => 4,
    };
    assert_eq!(out.status.code(), Some(code), "status exit code for {st}");
    st
}

/// Every output row: id → (count, probability of click).
pub fn read_outputs(dir: &Path) -> HashMap<String, (u32, f32)> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            parts.push(bytes::Bytes::from(std::fs::read(&path).unwrap()));
        }
    }
    parse_outputs(parts)
}

/// Output rows of Parquet objects: id → (count, probability of click).
pub fn parse_outputs(parts: Vec<bytes::Bytes>) -> HashMap<String, (u32, f32)> {
    let mut out: HashMap<String, (u32, f32)> = HashMap::new();
    for part in parts {
        for batch in ParquetRecordBatchReaderBuilder::try_new(part).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("id").expect("id column");
            let p = batch.column_by_name("probabilities_1").expect("probabilities_1 column");
            let p = p.as_primitive::<Float32Type>();
            for i in 0..batch.num_rows() {
                let id = match ids.data_type() {
                    arrow_schema::DataType::Utf8 => ids.as_string::<i32>().value(i).to_string(),
                    arrow_schema::DataType::Int64 => {
                        ids.as_primitive::<arrow_array::types::Int64Type>().value(i).to_string()
                    }
                    other => panic!("unexpected id type {other}"),
                };
                let e = out.entry(id).or_insert((0, p.value(i)));
                e.0 += 1;
            }
            assert_eq!(p.null_count(), 0);
        }
    }
    out
}

/// Rows of the CSV inputs under `dir`: id → features.
pub fn read_csv_inputs(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut rows = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().skip(1) {
            let mut fields = line.split(',');
            let id = fields.next().unwrap().to_string();
            rows.push((id, fields.map(|f| f.parse::<f32>().unwrap_or(f32::NAN)).collect()));
        }
    }
    rows
}

/// Rows of the Parquet inputs under `dir`: id → features.
pub fn read_parquet_inputs(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut rows = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files {
        let file = std::fs::File::open(&path).unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let ids = batch.column(0).as_primitive::<arrow_array::types::Int64Type>();
            for i in 0..batch.num_rows() {
                let feats =
                    (1..batch.num_columns()).map(|c| batch.column(c).as_primitive::<Float32Type>().value(i)).collect();
                rows.push((ids.value(i).to_string(), feats));
            }
        }
    }
    rows
}

/// Scores rows with the model directly (no queue, no files): the reference.
pub fn direct_scores(rows: &[(String, Vec<f32>)]) -> HashMap<String, f32> {
    let runtime = ModelRuntime::load_file(&model_path(), RuntimeOptions::default()).unwrap();
    let mut out = HashMap::new();
    for chunk in rows.chunks(50_000) {
        let data: Vec<f32> = chunk.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let cols = runtime.run(&[InputData::F32(data)], chunk.len()).unwrap();
        let p = cols.iter().find(|c| c.name == "probabilities_1").unwrap();
        for (i, (id, _)) in chunk.iter().enumerate() {
            out.insert(id.clone(), p.data.get_f64(i) as f32);
        }
    }
    out
}

/// Asserts every expected id appears exactly once in the outputs, nothing
/// else does, and (when given) the scores match the direct model run.
pub fn assert_exactly_once(outputs: &HashMap<String, (u32, f32)>, expected: &HashMap<String, f32>, check_scores: bool) {
    let dups: Vec<_> = outputs.iter().filter(|(_, (n, _))| *n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicate output rows: {dups:?}");
    let missing: Vec<_> = expected.keys().filter(|k| !outputs.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty(), "input rows without output: {missing:?}");
    let extra: Vec<_> = outputs.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(extra.is_empty(), "output rows not in the input: {extra:?}");
    if check_scores {
        for (id, want) in expected {
            let got = outputs[id].1;
            assert!((got - want).abs() <= 1e-6, "row {id}: pipeline {got} vs direct {want}");
        }
    }
}

/// Writes a CSV of the reference shape with ids `from..to`; `bad` puts a
/// non-number into column I5 of that row index.
pub fn write_csv(path: &std::path::Path, from: u64, to: u64, bad: Option<u64>) {
    let mut text = String::from("id");
    for i in 1..=13 {
        text.push_str(&format!(",I{i}"));
    }
    for i in 1..=26 {
        text.push_str(&format!(",C{i}"));
    }
    text.push('\n');
    for id in from..to {
        text.push_str(&id.to_string());
        for f in 0..39u64 {
            if Some(id) == bad && f == 4 {
                text.push_str(",abc");
            } else {
                text.push_str(&format!(",{}", (id * 7 + f * 13) % 97));
            }
        }
        text.push('\n');
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `hourglass serve` on loopback ports with `args` (and `env`): the process
/// and its HTTP and gRPC addresses, once both listen.
pub fn spawn_serve(args: &[&str], env: &[(&str, &str)]) -> (WorkerProc, String, String) {
    let base = ["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"];
    let mut serve = WorkerProc::spawn_command(&[&base[..], args].concat(), env);
    let bound = |line: String| -> String {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["bound"].as_str().unwrap().to_string()
    };
    let http = bound(serve.wait_for_line("serving HTTP", Duration::from_secs(60)));
    let grpc = bound(serve.wait_for_line("serving gRPC", Duration::from_secs(10)));
    (serve, http, grpc)
}

/// A plain HTTP/1.1 GET on loopback (metrics endpoints, Prometheus' API).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.into() };
    Ok((status, body))
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The address a process logged for its metrics endpoint (`serving metrics`).
pub fn metrics_addr(proc: &mut WorkerProc) -> String {
    let line = proc.wait_for_line("serving metrics", Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["bound"].as_str().unwrap_or_else(|| panic!("no bound address in {line}")).to_string()
}

/// Metric names in an exposition (`# TYPE` families expanded to the series
/// names PromQL sees: counters' `_total`, histograms' `_bucket/_sum/_count`).
pub fn exported_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            match kind {
                "counter" => names.insert(format!("{name}_total")),
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                    true
                }
                _ => names.insert(name.to_string()),
            };
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Every `hourglass_*` metric the Grafana dashboard and the alert rules query.
pub fn metrics_used_by_dashboards_and_alerts() -> std::collections::BTreeSet<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/hourglass/files");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("dashboard.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    exprs.push(std::fs::read_to_string(root.join("alerts.yaml")).unwrap());
    let mut names = std::collections::BTreeSet::new();
    for e in exprs {
        let b = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("hourglass_") {
            let start = i + at;
            let end =
                start + e[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(e.len() - start);
            // `hourglass_job` is a label (Prometheus' own `job` would shadow `job`).
            let word = &e[start..end];
            // `hourglass_scaler_*` in prose names a family, not a metric.
            if word != "hourglass_job"
                && !word.ends_with('_')
                && (start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_'))
            {
                names.insert(word.to_string());
            }
            i = end;
        }
    }
    names
}

/// A tool `make test` installs (scripts/tools): helm, promtool, prometheus.
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("HOURGLASS_TOOLS").expect(
        "HOURGLASS_TOOLS is not set: these tests need helm, promtool and prometheus, which `make test` installs (scripts/tools)",
    );
    let path = PathBuf::from(dir).join(name);
    assert!(path.is_file(), "{} missing: run scripts/tools", path.display());
    path
}

pub fn scrape(addr: &str) -> String {
    let (status, body) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Fails unless the exposition has every dashboard/alert metric with `prefix`.
pub fn assert_exports(component: &str, prefix: &str, exposition: &str) {
    let exported = exported_names(exposition);
    let used = metrics_used_by_dashboards_and_alerts();
    let missing: Vec<_> = used.iter().filter(|n| n.starts_with(prefix) && !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "{component} does not export {missing:?}; it exports {exported:?}");
}
