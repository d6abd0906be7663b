//! The lease mechanics in process, for both task handlers (`infer`: a real
//! shard on the reference model; `train`: a real trainer subprocess), on
//! the local queue and the filesystem store, with tokio's clock paused: a
//! heartbeat due every 10 s fires at exactly that cadence however long the
//! real work takes, and timeouts of minutes pass at once.
//!
//! A wrapper around the local queue records when each lease extension is
//! asked for (on the paused clock) and can refuse them, which is how a
//! stale receipt looks to a worker that lost its lease.

use async_trait::async_trait;
use bytes::Bytes;
use hourglass_core::ledger::{DoneRecord, InputFileRecord, JobRecord, JobSpec, LEDGER_VERSION, Ledger, ShardPlan};
use hourglass_core::queue::LocalQueue;
use hourglass_core::queue::{BatchOutcome, Depth, Message, Queue};
use hourglass_core::task::{Format, ModelRef, ShardInput, ShardTask, TASK_VERSION, Task, TaskKind, TrainTask};
use hourglass_core::train::{TrainJobRecord, TrainSpec, TrialPlan};
use hourglass_core::{BlobUrl, ErrorKind, JobId, Receipt, ShardId, store};
use hourglass_worker::WorkerConfig;
use hourglass_worker::kinds::Kinds;
use hourglass_worker::lease::{Worker, WorkerSummary};
use hourglass_worker::train::TrainConfig;
use sha2::Digest;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const VISIBILITY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Watched {
    inner: LocalQueue,
    extends: Mutex<Vec<Instant>>,
    /// Extensions granted before every further one is refused as stale.
    grant: Option<usize>,
    received: tokio::sync::Notify,
    releases: AtomicUsize,
    acks: AtomicUsize,
    dead: AtomicUsize,
}

#[async_trait]
impl Queue for Watched {
    fn name(&self) -> &str {
        Queue::name(&self.inner)
    }
    async fn send_batch(&self, bodies: &[String]) -> hourglass_core::Result<BatchOutcome> {
        Queue::send_batch(&self.inner, bodies).await
    }
    async fn receive(&self, max: usize, wait: Duration, vis: Duration) -> hourglass_core::Result<Vec<Message>> {
        let got = Queue::receive(&self.inner, max, wait, vis).await?;
        if !got.is_empty() {
            self.received.notify_one();
        }
        Ok(got)
    }
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> hourglass_core::Result<()> {
        let n = {
            let mut e = self.extends.lock().unwrap();
            e.push(Instant::now());
            e.len()
        };
        if self.grant.is_some_and(|g| n > g) {
            return Err(hourglass_core::Error::queue("extend", self.name(), ErrorKind::NotFound, "receipt is stale"));
        }
        Queue::extend(&self.inner, receipt, visibility).await
    }
    async fn ack_batch(&self, receipts: &[Receipt]) -> hourglass_core::Result<BatchOutcome> {
        self.acks.fetch_add(receipts.len(), Ordering::SeqCst);
        Queue::ack_batch(&self.inner, receipts).await
    }
    async fn release(&self, receipt: &Receipt) -> hourglass_core::Result<()> {
        self.releases.fetch_add(1, Ordering::SeqCst);
        Queue::release(&self.inner, receipt).await
    }
    async fn dead_letter(&self, message: &Message, reason: &str) -> hourglass_core::Result<()> {
        self.dead.fetch_add(1, Ordering::SeqCst);
        Queue::dead_letter(&self.inner, message, reason).await
    }
    async fn peek_dead_letters(&self, max: usize) -> hourglass_core::Result<Vec<hourglass_core::queue::DeadLetter>> {
        Queue::peek_dead_letters(&self.inner, max).await
    }
    async fn max_receives(&self) -> hourglass_core::Result<Option<u32>> {
        Queue::max_receives(&self.inner).await
    }
    async fn depth(&self) -> hourglass_core::Result<Depth> {
        Queue::depth(&self.inner).await
    }
}

/// One job with one unit (a shard or a trial), its task on a watched queue.
struct Fixture {
    dir: tempfile::TempDir,
    queue: Arc<Watched>,
    ledger: Ledger,
    unit: ShardId,
    kind: TaskKind,
    train: TrainConfig,
}

impl Fixture {
    fn url(&self, rel: &str) -> BlobUrl {
        BlobUrl::parse(&format!("file://{}/{rel}", self.dir.path().display())).unwrap()
    }

    fn worker(&self, config: WorkerConfig) -> Arc<Worker<Kinds>> {
        Arc::new(hourglass_worker::kinds::worker(self.queue.clone(), config, self.train.clone()))
    }

    async fn done(&self) -> Option<DoneRecord> {
        self.ledger.read_done(&self.unit).await.unwrap()
    }

    /// Whatever the handler would have written for the unit.
    fn written(&self) -> Vec<String> {
        let mut out = Vec::new();
        for rel in ["out/part-000000.parquet", "out/_hourglass/registered/trial-0000.json", "registry/m/1/model.onnx"] {
            if self.dir.path().join(rel).exists() {
                out.push(rel.to_string());
            }
        }
        out
    }
}

fn queue_in(dir: &std::path::Path, grant: Option<usize>) -> Arc<Watched> {
    Arc::new(Watched {
        inner: LocalQueue::open(dir.join("queue.db"), Some(10)).unwrap(),
        extends: Mutex::default(),
        grant,
        received: tokio::sync::Notify::new(),
        releases: AtomicUsize::new(0),
        acks: AtomicUsize::new(0),
        dead: AtomicUsize::new(0),
    })
}

/// A shard of 2,000 CSV rows on the reference model.
async fn infer_fixture(grant: Option<usize>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue_in(dir.path(), grant);
    let base = format!("file://{}/", dir.path().display());
    let root = BlobUrl::parse(&base).unwrap();
    let store = store::open(&root).unwrap();
    let features: Vec<String> = (1..=13).map(|i| format!("I{i}")).chain((1..=26).map(|i| format!("C{i}"))).collect();
    let header = format!("id,{}\n", features.join(","));
    let mut csv = header.clone();
    for r in 0..2000 {
        csv.push_str(&r.to_string());
        for c in 0..39 {
            csv.push_str(&format!(",{}", (r * 7 + c) % 13));
        }
        csv.push('\n');
    }
    let input = root.join("in/a.csv");
    store.put(input.key(), Bytes::from(csv.clone())).await.unwrap();
    let model_bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/ctr_gbdt.onnx")).unwrap();
    let model = root.join("model.onnx");
    store.put(model.key(), Bytes::from(model_bytes.clone())).await.unwrap();
    let output = root.join("out/");
    let mut columns = vec!["id".to_string()];
    columns.extend(features);
    let unit = ShardId::from_index(0);
    let record = JobRecord {
        v: LEDGER_VERSION,
        job: JobId::parse("j-infer").unwrap(),
        spec: JobSpec {
            input: input.clone(),
            model: model.clone(),
            output: output.clone(),
            format: Some(Format::Csv),
            id_column: "id".into(),
            shard_bytes: 1 << 20,
            max_bad_rows: 0,
            max_line_bytes: hourglass_core::task::DEFAULT_MAX_LINE_BYTES,
            deadline_unix_ms: None,
            csv: Default::default(),
            keep_columns: Vec::new(),
            keep_all: false,
            output_format: Default::default(),
        },
        model_sha256: hex::encode(sha2::Sha256::digest(&model_bytes)),
        submitted_at_ms: 1,
        rows_estimate: 2000,
        files: vec![InputFileRecord { url: input.clone(), size: csv.len() as u64, version: None, columns: None }],
        skipped_files: vec![],
        shards: vec![ShardPlan {
            shard: unit.clone(),
            input: ShardInput {
                url: input,
                format: Format::Csv,
                range: Some([header.len() as u64, csv.len() as u64]),
                columns: Some(columns),
                row_groups: None,
                version: None,
                delimiter: None,
                compression: None,
                skip_header: false,
            },
            rows_estimate: 2000,
        }],
        model_registry: None,
    };
    let ledger = Ledger::new(store::open(&output).unwrap(), &output);
    ledger.create_job(&record).await.unwrap();
    let task = record.task_for(&record.shards[0]);
    queue.send_batch(&[Task::Infer(task).encode()]).await.unwrap();
    Fixture { dir, queue, ledger, unit, kind: TaskKind::Infer, train: TrainConfig::default() }
}

/// A trial whose trainer is `script` (sh), with no dataset to stage.
async fn train_fixture(grant: Option<usize>, script: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue_in(dir.path(), grant);
    let root = BlobUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
    let output = root.join("out/");
    let trainer = dir.path().join("trainer.sh");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mark = format!("600.{}{nanos}", std::process::id());
    std::fs::write(&trainer, script.replace("MARK", &mark)).unwrap();
    let spec: TrainSpec = serde_json::from_value(serde_json::json!({
        "name": "m", "registry": root.join("registry/").to_string(), "trainer": "t",
        "output": output.to_string(), "max_train_time": "100years",
        "dataset": {"train": root.to_string(), "holdout": root.to_string(), "label": "y"},
    }))
    .unwrap();
    let unit = ShardId::parse("trial-0000").unwrap();
    let record = TrainJobRecord {
        v: LEDGER_VERSION,
        kind: TaskKind::Train,
        job: JobId::parse("t-train").unwrap(),
        spec,
        submitted_at_ms: 1,
        features: vec!["x".into()],
        train_files: vec![],
        holdout_files: vec![],
        trials: vec![TrialPlan { trial: unit.clone(), params: Default::default(), rows_estimate: 10 }],
    };
    let ledger = Ledger::new(store::open(&output).unwrap(), &output);
    ledger.create_train_job(&record).await.unwrap();
    queue.send_batch(&[Task::Train(record.task_for(&record.trials[0])).encode()]).await.unwrap();
    let train = TrainConfig {
        trainers: [("t".to_string(), vec!["sh".to_string(), trainer.display().to_string()])].into(),
        work_dir: dir.path().join("work"),
        slots: 1,
        threads: 1,
    };
    Fixture { dir, queue, ledger, unit, kind: TaskKind::Train, train }
}

fn config(max_attempts: u32) -> WorkerConfig {
    WorkerConfig {
        visibility_timeout: VISIBILITY,
        max_attempts,
        exit_when_idle: Some(Duration::from_secs(2)),
        batch_size: 100,
        // 20 batches × 40 ms: the shard takes most of a real second.
        fault_batch_delay: Duration::from_millis(40),
        worker_id: "w".into(),
        // The local queue polls on the real clock: short polls keep a stop
        // request from waiting on one.
        poll_wait: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

/// A trainer that runs most of a real second, then fails.
const SLOW_FAILING: &str = "sleep 1\nexit 1\n";
/// A trainer that runs until killed, as a `sleep` of a duration no other
/// process has (`MARK` is replaced per fixture), so a test can tell whether
/// it still runs even when the lease was lost before it started.
const FOREVER: &str = "exec sleep MARK\n";

async fn run(worker: Arc<Worker<Kinds>>) -> WorkerSummary {
    worker.run(CancellationToken::new()).await.unwrap()
}

async fn both(grant: Option<usize>, script: &str) -> [Fixture; 2] {
    [infer_fixture(grant).await, train_fixture(grant, script).await]
}

#[tokio::test(start_paused = true)]
async fn heartbeats_extend_the_lease_every_third_of_it_while_either_handler_works() {
    for f in both(None, SLOW_FAILING).await {
        let summary = run(f.worker(config(1))).await;
        let extends = f.queue.extends.lock().unwrap().clone();
        assert!(extends.len() >= 2, "{:?}: {} extensions", f.kind, extends.len());
        for pair in extends.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= VISIBILITY / 3 && gap < VISIBILITY / 3 + Duration::from_secs(1), "{:?}: {gap:?}", f.kind);
        }
        match f.kind {
            TaskKind::Infer => assert_eq!((summary.units_done, f.done().await.is_some()), (1, true)),
            TaskKind::Train => assert_eq!(summary.units_failed, 1, "the trainer exits 1"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_cancels_either_handler_and_nothing_is_written() {
    for f in both(Some(0), FOREVER).await {
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(f.worker(config(3)).run(shutdown.clone()));
        // Once the first extension is refused, stop the worker: the
        // message stays leased on the local queue's real clock, and this
        // worker would only meet it again.
        for _ in 0..600 {
            if !f.queue.extends.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(!f.queue.extends.lock().unwrap().is_empty(), "{:?}: no lease extension within 10 minutes", f.kind);
        shutdown.cancel();
        let summary = running.await.unwrap().unwrap();
        assert_eq!(summary.units_released, 1, "{:?}: {summary:?}", f.kind);
        assert_eq!((summary.units_done, summary.units_failed), (0, 0));
        assert!(f.done().await.is_none());
        assert!(f.written().is_empty(), "{:?} wrote {:?}", f.kind, f.written());
        // The message was neither acked nor released: it is another
        // worker's now.
        assert_eq!((f.queue.acks.load(Ordering::SeqCst), f.queue.releases.load(Ordering::SeqCst)), (0, 0));
        if f.kind == TaskKind::Train {
            // The trainer was killed (or never got to start), not left running.
            let script = std::fs::read_to_string(f.dir.path().join("trainer.sh")).unwrap();
            let mark = script.trim().rsplit(' ').next().unwrap().to_string();
            let running = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).split('\0').any(|arg| arg == mark))
            });
            assert!(!running, "the trainer (sleep {mark}) still runs");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_past_its_timeout_releases_what_either_handler_holds() {
    for f in both(None, FOREVER).await {
        let worker = f.worker(WorkerConfig { drain_timeout: Duration::from_secs(5), ..config(3) });
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        f.queue.received.notified().await;
        shutdown.cancel();
        let summary = running.await.unwrap().unwrap();
        assert_eq!(summary.units_released, 1, "{:?}: {summary:?}", f.kind);
        assert_eq!(f.queue.releases.load(Ordering::SeqCst), 1);
        assert!(f.written().is_empty(), "{:?} wrote {:?}", f.kind, f.written());
        assert_eq!(f.queue.depth().await.unwrap().visible, 1, "{:?}: released for another worker", f.kind);
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_within_its_timeout_lets_the_held_shard_finish() {
    let f = infer_fixture(None).await;
    // On the paused clock, heartbeats run time forward while the shard is
    // scored in real time: a timeout of years is one the shard meets.
    let years = Duration::from_secs(10 * 365 * 86_400);
    let worker = f.worker(WorkerConfig { drain_timeout: years, ..config(3) });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    f.queue.received.notified().await;
    shutdown.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!((summary.units_done, summary.units_released), (1, 0));
    assert!(f.done().await.is_some());
}

/// A task of the other kind naming the fixture's job and output.
fn wrong_kind(f: &Fixture, job: JobId) -> Task {
    match f.kind {
        TaskKind::Infer => Task::Train(TrainTask {
            v: TASK_VERSION,
            job,
            trial: f.unit.clone(),
            output: f.url("out/"),
            params: Default::default(),
            deadline_unix_ms: None,
        }),
        TaskKind::Train => Task::Infer(ShardTask {
            v: TASK_VERSION,
            job,
            shard: f.unit.clone(),
            input: ShardInput {
                url: f.url("in/a.csv"),
                format: Format::Csv,
                range: Some([0, 1]),
                columns: Some(vec!["id".into()]),
                row_groups: None,
                version: None,
                delimiter: None,
                compression: None,
                skip_header: false,
            },
            model: ModelRef { url: f.url("model.onnx"), sha256: "00".into() },
            output: f.url("out/"),
            id_column: "id".into(),
            max_bad_rows: 0,
            max_line_bytes: hourglass_core::task::DEFAULT_MAX_LINE_BYTES,
            keep_columns: Vec::new(),
            keep_all: false,
            output_format: Default::default(),
            deadline_unix_ms: None,
        }),
    }
}

#[tokio::test(start_paused = true)]
async fn poison_and_tasks_of_the_wrong_kind_go_to_the_dead_letter_queue() {
    for f in both(None, "exit 1\n").await {
        // Only the two bad messages: the fixture's own task is acked away.
        let own = f.queue.inner.receive(1, Duration::ZERO, VISIBILITY).await.unwrap();
        f.queue.inner.ack_batch(&[own[0].receipt.clone()]).await.unwrap();
        let job = f.ledger.read_any_job().await.unwrap().unwrap().job().clone();
        let bodies = ["{not json".to_string(), wrong_kind(&f, job).encode()];
        f.queue.send_batch(&bodies).await.unwrap();
        let summary = run(f.worker(config(1))).await;
        assert_eq!(f.queue.dead.load(Ordering::SeqCst), 2, "{:?}: {summary:?}", f.kind);
        assert_eq!(f.queue.depth().await.unwrap().dead, Some(2), "{:?}", f.kind);
        assert!(f.written().is_empty(), "{:?} wrote {:?}", f.kind, f.written());
    }
}

/// A trial already done is acked without running its trainer; a batch
/// shard's first delivery skips that check (a message sent twice is rare)
/// and the write path finds the record before writing anything.
#[tokio::test(start_paused = true)]
async fn a_unit_already_done_is_acked_and_nothing_is_written() {
    for f in both(None, "exit 1\n").await {
        let record = f.ledger.read_any_job().await.unwrap().unwrap().job().clone();
        let done = DoneRecord {
            v: LEDGER_VERSION,
            job: record,
            shard: f.unit.clone(),
            rows: 1,
            bad_rows: 0,
            seconds: 1.0,
            started_at_ms: 1,
            finished_at_ms: 2,
            worker: "earlier".into(),
            attempt: 1,
            output: f.url("elsewhere"),
            sha256: String::new(),
            trial: None,
            device: None,
            usage: None,
        };
        assert!(f.ledger.create_done(&done).await.unwrap());
        let summary = run(f.worker(config(1))).await;
        assert_eq!((summary.units_done, summary.units_failed), (0, 0), "{:?}", f.kind);
        assert_eq!(f.queue.acks.load(Ordering::SeqCst), 1);
        if f.kind == TaskKind::Train {
            assert!(f.queue.extends.lock().unwrap().is_empty(), "no lease was held for work");
        }
        assert_eq!(f.queue.dead.load(Ordering::SeqCst), 0, "{:?}", f.kind);
        assert!(f.written().is_empty(), "{:?} wrote {:?}", f.kind, f.written());
        assert_eq!(f.done().await.unwrap().worker, "earlier");
    }
}
