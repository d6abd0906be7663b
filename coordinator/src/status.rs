//! Job status, derived from the ledger alone: shards done, failed and
//! pending, rows, throughput, ETA and slack against the deadline, and every
//! failure with its reason.

use crate::{Error, Result};
use hourglass_core::ledger::{Ledger, now_ms};
use hourglass_core::queue::Queue;
use hourglass_core::{BlobUrl, JobId, store};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Shards remain to be done.
    Running,
    /// Every shard is done and `_SUCCESS` is written.
    Succeeded,
    /// Every shard is done, failed or lost, and some failed or were lost:
    /// the job cannot finish without a fix and a resubmit.
    Failed,
}

impl JobState {
    /// The exit code of `status`, `submit --wait` and `status --watch`:
    /// what an orchestrator (CronJob, Airflow, Argo) branches on.
    pub fn exit_code(self) -> u8 {
        match self {
            JobState::Succeeded => 0,
            JobState::Failed => EXIT_FAILED,
            JobState::Running => EXIT_RUNNING,
        }
    }
}

/// The job failed: some shard has a failed record or was lost.
pub const EXIT_FAILED: u8 = 3;
/// The job is still running (plain `status`).
pub const EXIT_RUNNING: u8 = 4;
/// The ledger (or the queue) could not be read, or holds no job.
pub const EXIT_UNREADABLE: u8 = 5;
/// `verify`: outputs do not match inputs one to one.
pub const EXIT_MISMATCH: u8 = 6;

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub shard: String,
    pub error_kind: String,
    pub message: String,
    pub attempts: u32,
    /// A failed trial's last trainer output lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// A unit found in the dead-letter queue, with the worker's reason.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLettered {
    pub shard: String,
    pub reason: String,
}

/// How many dead-letter messages `status --queue` reads for reasons.
const DEAD_LETTERS_PEEKED: usize = 100;

/// One trial of a training job, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TrialStatus {
    pub trial: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// `done`, `failed` or `pending`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub metrics: std::collections::BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trainer_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: JobId,
    pub output: String,
    pub state: JobState,
    pub shards_total: u64,
    pub shards_done: u64,
    pub shards_failed: u64,
    pub shards_pending: u64,
    pub rows_done: u64,
    pub rows_estimate: u64,
    pub bad_rows: u64,
    pub elapsed_secs: f64,
    pub rows_per_sec: f64,
    pub eta_secs: Option<f64>,
    pub deadline_unix_ms: Option<u64>,
    /// Deadline minus the projected finish; negative means late.
    pub slack_secs: Option<f64>,
    pub failures: Vec<Failure>,
    /// Shards with neither a done nor a failed record while the queue holds
    /// no message at all: their messages are gone (dead-lettered by the
    /// queue's redrive, or deleted), so nothing will ever finish them.
    pub shards_lost: u64,
    /// Messages in the queue's dead-letter queue (all jobs), when known.
    pub dead_letters: Option<u64>,
    /// This job's units in the dead-letter queue with no failed record,
    /// and why they were dead-lettered (the store refused the record, say).
    /// A unit submitted again after it was dead-lettered is listed too
    /// (the old message stays there), so these do not count as lost by
    /// themselves: `shards_lost` still needs an empty queue.
    pub dead_lettered: Vec<DeadLettered>,
    /// Input files with no rows, planned as no shard.
    pub skipped_files: Vec<hourglass_core::ledger::SkippedFile>,
    /// Records under the prefix that belong to another job (ignored).
    pub foreign_records: u64,
    /// Each planned shard's state in shard order, for the live view.
    #[serde(skip)]
    pub shard_states: Vec<ShardState>,
    /// `infer` (a batch job: its units are shards) or `train` (a training
    /// job: its units are trials).
    pub kind: hourglass_core::task::TaskKind,
    /// A training job's trials, in plan order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<TrialStatus>,
    /// A training job's promotion decision, once every trial is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<hourglass_core::train::PromotionRecord>,
    /// Pod-seconds of the done units by node kind (`INSTANCE/CAPACITY`).
    pub usage: hourglass_core::cost::UsageTotals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    Done,
    Failed,
    Pending,
}

/// The job at `output`, from its ledger. With the job's `queue`, shards
/// whose messages are gone are reported as lost and the dead-letter depth
/// is shown.
pub async fn status(output: &BlobUrl, queue: Option<&dyn Queue>) -> Result<JobStatus> {
    status_of(&Ledger::new(store::open(output)?, output), queue).await
}

/// `status` of a ledger on any store (`bench ledger` counts and delays
/// its requests).
pub async fn status_of(ledger: &Ledger, queue: Option<&dyn Queue>) -> Result<JobStatus> {
    let any = ledger.read_any_job().await?.ok_or_else(|| {
        Error::Invalid(format!("no job at {}: {} is missing", ledger.root(), ledger.root().join("_hourglass/job.json")))
    })?;
    let job_id = any.job().clone();
    let units = any.units();
    // Complete buckets come as summaries, the rest as records: a 100k-shard
    // job is 100 listings and summaries, not 100k GETs.
    let view = ledger.done_view(&any).await?;
    let failed = ledger.failed_records().await?;
    let planned: std::collections::BTreeSet<_> = units.iter().map(|(s, _)| (*s).clone()).collect();
    let foreign_records = view.foreign + failed.iter().filter(|f| f.job != job_id).count() as u64;
    let done = &view.records;
    let done_ids = &view.ids;
    let done_count = done_ids.len();
    let failed: Vec<_> = failed
        .into_iter()
        .filter(|f| f.job == job_id && planned.contains(&f.shard) && !done_ids.contains(&f.shard))
        .collect();
    let mut success = ledger.success().await?;
    if let hourglass_core::ledger::AnyJob::Infer(job) = &any
        && success.is_none()
        && done_count == units.len()
    {
        // A worker died between its done record and `_SUCCESS`: repair.
        // (A training job's last step, the promotion, is the workers':
        // the undeleted message of the last trial brings it back.)
        ledger.try_finalize(job).await?;
        success = ledger.success().await?;
    }
    let total = units.len() as u64;
    let rows_done: u64 = view.rows();
    let now = now_ms();
    // Throughput counts from the first shard started, not from submit: a
    // job queued before its workers came up is not slow.
    let first_start = view.first_start_ms().unwrap_or(any.submitted_at_ms());
    let end = if success.is_some() { view.last_finish_ms().unwrap_or(now) } else { now };
    let elapsed_secs = end.saturating_sub(first_start) as f64 / 1000.0;
    let rows_per_sec = if elapsed_secs > 0.0 { rows_done as f64 / elapsed_secs } else { 0.0 };
    // Estimate what remains from the plan of the shards not yet done.
    let remaining: u64 = units.iter().filter(|(s, _)| !done_ids.contains(*s)).map(|(_, r)| r).sum();
    let open_shards = units.len() - done_count - failed.len();
    let (mut shards_lost, mut dead_letters, mut dead_lettered) = (0u64, None, Vec::new());
    if let Some(queue) = queue {
        let depth = queue.depth().await?;
        dead_letters = depth.dead;
        if depth.dead != Some(0) {
            let failed_ids: std::collections::BTreeSet<_> = failed.iter().map(|f| &f.shard).collect();
            let mut named = std::collections::BTreeSet::new();
            for d in queue.peek_dead_letters(DEAD_LETTERS_PEEKED).await? {
                // The body's own job and unit fields, not a full decode: a
                // task this release refuses to decode is named too.
                let Ok(body) = serde_json::from_str::<serde_json::Value>(&d.body) else { continue };
                let unit = body.get("shard").or_else(|| body.get("trial")).and_then(|u| u.as_str());
                let (Some(job), Some(unit)) = (body.get("job").and_then(|j| j.as_str()), unit) else { continue };
                let Ok(unit) = hourglass_core::ShardId::parse(unit) else { continue };
                if job != job_id.as_str() || done_ids.contains(&unit) || failed_ids.contains(&unit) {
                    continue;
                }
                if named.insert(unit.clone()) {
                    dead_lettered.push(DeadLettered { shard: unit.to_string(), reason: d.reason });
                }
            }
        }
        // Nothing queued, leased or delayed, yet shards without a result:
        // their messages are gone. A shared queue with other work in it
        // cannot say which job a message is for, so then nothing is lost.
        if success.is_none() && open_shards > 0 && depth.visible + depth.in_flight + depth.delayed == 0 {
            shards_lost = open_shards as u64;
        }
    }
    let state = if success.is_some() {
        JobState::Succeeded
    } else if (!failed.is_empty() || shards_lost > 0) && open_shards as u64 == shards_lost {
        JobState::Failed
    } else {
        JobState::Running
    };
    let eta_secs = match state {
        JobState::Succeeded => Some(0.0),
        JobState::Failed => None,
        JobState::Running if rows_per_sec > 0.0 => Some(remaining as f64 / rows_per_sec),
        JobState::Running => None,
    };
    let failed_ids: std::collections::BTreeSet<_> = failed.iter().map(|f| f.shard.clone()).collect();
    let shard_states = units
        .iter()
        .map(|(s, _)| {
            if done_ids.contains(*s) {
                ShardState::Done
            } else if failed_ids.contains(*s) {
                ShardState::Failed
            } else {
                ShardState::Pending
            }
        })
        .collect();
    let deadline = any.deadline_unix_ms();
    let (trials, promotion) = match &any {
        hourglass_core::ledger::AnyJob::Train(job) => {
            let trials = job
                .trials
                .iter()
                .map(|t| {
                    let d = done.iter().find(|d| d.shard == t.trial);
                    let r = d.and_then(|d| d.trial.as_ref());
                    TrialStatus {
                        trial: t.trial.to_string(),
                        params: t.params.clone(),
                        state: if d.is_some() {
                            "done"
                        } else if failed_ids.contains(&t.trial) {
                            "failed"
                        } else {
                            "pending"
                        },
                        version: r.map(|r| r.version),
                        metrics: r.map(|r| r.metrics.clone()).unwrap_or_default(),
                        trainer_seconds: r.map(|r| r.trainer_seconds),
                        seconds: d.map(|d| d.seconds),
                    }
                })
                .collect();
            (trials, ledger.read_promotion().await?)
        }
        hourglass_core::ledger::AnyJob::Infer(_) => (vec![], None),
    };
    let slack_secs = match (deadline, state) {
        (Some(d), JobState::Succeeded) => Some((d as f64 - end as f64) / 1000.0),
        (Some(d), _) => eta_secs.map(|eta| (d as f64 - now as f64) / 1000.0 - eta),
        _ => None,
    };
    Ok(JobStatus {
        usage: view.usage(),
        kind: any.kind(),
        trials,
        promotion,
        job: job_id,
        output: ledger.root().to_string(),
        state,
        shards_total: total,
        shards_done: done_count as u64,
        shards_failed: failed.len() as u64,
        shards_pending: total - done_count as u64 - failed.len() as u64 - shards_lost,
        rows_done,
        rows_estimate: any.rows_estimate(),
        bad_rows: view.bad_rows(),
        elapsed_secs,
        rows_per_sec,
        eta_secs,
        deadline_unix_ms: deadline,
        slack_secs,
        failures: failed
            .into_iter()
            .map(|f| Failure {
                shard: f.shard.to_string(),
                error_kind: f.error_kind,
                message: f.message,
                attempts: f.attempts,
                log_tail: f.log_tail,
            })
            .collect(),
        shards_lost,
        dead_letters,
        dead_lettered,
        skipped_files: match &any {
            hourglass_core::ledger::AnyJob::Infer(job) => job.skipped_files.clone(),
            hourglass_core::ledger::AnyJob::Train(_) => vec![],
        },
        foreign_records,
        shard_states,
    })
}

/// Columns every line of the live views keeps within when the terminal's
/// width is unknown: one less than an 80-column terminal, so no line wraps
/// and a redraw moves up exactly the lines it drew.
pub const VIEW_COLUMNS: usize = 79;

/// `line` cut to `columns` characters, marking the cut with `…`.
fn fit_to(line: &str, columns: usize) -> String {
    let columns = columns.max(2);
    if line.chars().count() <= columns {
        return line.to_string();
    }
    let mut out: String = line.chars().take(columns - 1).collect();
    out.push('…');
    out
}

fn fit(line: &str) -> String {
    fit_to(line, VIEW_COLUMNS)
}

/// Each line of `text` cut to one less than `columns`, for a terminal that
/// wide.
pub fn fit_line(text: &str, columns: usize) -> String {
    text.lines().map(|l| fit_to(l, columns.saturating_sub(1)) + "\n").collect()
}

/// Redraws a view in place on a terminal: each frame moves up to the first
/// line the last frame drew, clears to the end of the screen and draws.
/// Every line is cut to one less than the terminal's width, so none wraps;
/// when the size changes (a resize would re-wrap what is on screen), the
/// screen is cleared instead.
#[derive(Debug, Default)]
pub struct LiveView {
    drawn_lines: usize,
    size: Option<(usize, usize)>,
}

impl LiveView {
    /// The bytes that replace the last frame with `view` on a terminal of
    /// `columns` × `rows`; `view`'s lines must already fit (see
    /// [`JobStatus::live_view_sized`]).
    pub fn frame(&mut self, view: &str, columns: usize, rows: usize) -> String {
        let mut out = String::new();
        if self.size.is_some_and(|s| s != (columns, rows)) {
            out.push_str("\x1b[H\x1b[2J");
        } else if self.drawn_lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn_lines));
        }
        out.push_str("\r\x1b[J");
        out.push_str(view);
        self.drawn_lines = view.lines().count();
        self.size = Some((columns, rows));
        out
    }
}

/// `1234567` → `1.2M`: counts in a few characters.
fn compact(n: f64) -> String {
    match n.abs() {
        x if x >= 1e9 => format!("{:.1}G", n / 1e9),
        x if x >= 1e6 => format!("{:.1}M", n / 1e6),
        x if x >= 1e4 => format!("{:.0}k", n / 1e3),
        _ => format!("{n:.0}"),
    }
}

fn secs(s: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s.abs().round() as u64)).to_string()
}

impl JobStatus {
    /// A one-line progress bar for `--watch` and the demo, within
    /// `VIEW_COLUMNS`.
    pub fn progress_line(&self) -> String {
        const WIDTH: usize = 12;
        let frac = if self.shards_total == 0 { 1.0 } else { self.shards_done as f64 / self.shards_total as f64 };
        let filled = (frac * WIDTH as f64).round() as usize;
        let eta = self.eta_secs.map(|e| format!(" eta {}", secs(e))).unwrap_or_default();
        let slack = self
            .slack_secs
            .map(|s| if s >= 0.0 { format!(" slack {}", secs(s)) } else { format!(" LATE by {}", secs(s)) })
            .unwrap_or_default();
        let failed = match self.shards_failed + self.shards_lost {
            0 => String::new(),
            n => format!(" {n} failed"),
        };
        fit(&format!(
            "[{}{}] {:>3.0}% {}/{} shards{failed} {} rows {}/s{eta}{slack}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            frac * 100.0,
            self.shards_done,
            self.shards_total,
            compact(self.rows_done as f64),
            compact(self.rows_per_sec)
        ))
    }

    /// The live view `status --watch` redraws: the summary, the recent
    /// rate (rows/s since the last refresh, when known) and a map of every
    /// shard (`#` done, `!` failed, `.` pending; one cell stands for several
    /// shards on big jobs, showing the worst of them).
    pub fn live_view(&self, recent_rows_per_sec: Option<f64>) -> String {
        self.live_view_sized(recent_rows_per_sec, VIEW_COLUMNS + 1, usize::MAX)
    }

    /// The live view for a terminal of `columns` × `rows`: every line within
    /// `columns - 1`, at most `rows - 1` lines (a frame taller than the
    /// screen scrolls, and the next could not move back up to its top), so
    /// the shard map shrinks or is cut first.
    pub fn live_view_sized(&self, recent_rows_per_sec: Option<f64>, columns: usize, rows: usize) -> String {
        let width = columns.saturating_sub(1).max(20);
        let lines: Vec<String> =
            self.live_view_lines(recent_rows_per_sec, width).lines().map(|l| fit_to(l, width)).collect();
        let max = rows.saturating_sub(1).max(1);
        let mut out: String = lines.iter().take(max).map(|l| format!("{l}\n")).collect();
        if lines.len() > max
            && let Some(last) = out.trim_end().rfind('\n')
        {
            out.truncate(last + 1);
            out.push_str(&fit_to(
                &format!("… {} more lines (a taller terminal shows them)", lines.len() - max + 1),
                width,
            ));
            out.push('\n');
        }
        out
    }

    fn live_view_lines(&self, recent_rows_per_sec: Option<f64>, width: usize) -> String {
        const CELLS: usize = 320;
        // The map's rows fill the width after its 9-column indent.
        let row = width.saturating_sub(9).clamp(8, 64);
        let mut out = self.progress_line();
        out.push('\n');
        if let Some(r) = recent_rows_per_sec {
            out.push_str(&format!("now      {r:.0} rows/s (since the last refresh)\n"));
        }
        out.push_str(&self.render());
        let per_cell = self.shard_states.len().div_ceil(CELLS).max(1);
        out.push_str(&format!(
            "shards   # done  ! failed  . pending{}\n",
            if per_cell > 1 { format!("  (one cell = {per_cell} shards)") } else { String::new() }
        ));
        let cells: Vec<char> = self
            .shard_states
            .chunks(per_cell)
            .map(|c| {
                if c.contains(&ShardState::Failed) {
                    '!'
                } else if c.contains(&ShardState::Pending) {
                    '.'
                } else {
                    '#'
                }
            })
            .collect();
        for line in cells.chunks(row) {
            out.push_str("         ");
            out.extend(line.iter());
            out.push('\n');
        }
        out
    }

    /// The human summary printed by `hourglass status`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("job      {}\noutput   {}\nstate    {:?}\n", self.job, self.output, self.state));
        let units = if self.kind == hourglass_core::task::TaskKind::Train { "trials" } else { "shards" };
        out.push_str(&format!(
            "{units:<8} {} done, {} failed, {} pending, {} total{}\n",
            self.shards_done,
            self.shards_failed,
            self.shards_pending,
            self.shards_total,
            if self.shards_lost > 0 { format!(", {} LOST", self.shards_lost) } else { String::new() }
        ));
        if self.shards_lost > 0 {
            out.push_str(&format!(
                "lost     {} shard(s) have no result and the queue holds no message: killed too often (OOM, spot) and dead-lettered by the queue, or deleted; resubmit to retry them\n",
                self.shards_lost
            ));
        }
        if let Some(d) = self.dead_letters {
            out.push_str(&format!("dlq      {d} message(s) in the dead-letter queue\n"));
        }
        for d in &self.dead_lettered {
            out.push_str(&format!("dead     {} dead-lettered with no failed record: {}\n", d.shard, d.reason));
        }
        for s in &self.skipped_files {
            out.push_str(&format!("skipped  {} ({})\n", s.url, s.reason));
        }
        if self.foreign_records > 0 {
            out.push_str(&format!(
                "warning  {} record(s) under the prefix belong to another job and are ignored\n",
                self.foreign_records
            ));
        }
        out.push_str(&format!(
            "rows     {} done of ~{} planned ({} bad rows skipped)\n",
            self.rows_done, self.rows_estimate, self.bad_rows
        ));
        out.push_str(&format!("speed    {:.0} rows/s over {}\n", self.rows_per_sec, secs(self.elapsed_secs)));
        match self.eta_secs {
            Some(e) => out.push_str(&format!("eta      {}\n", secs(e))),
            None => out.push_str("eta      unknown\n"),
        }
        if let Some(d) = self.deadline_unix_ms {
            let when = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(d));
            let slack = match self.slack_secs {
                Some(s) if s >= 0.0 => format!("slack {}", secs(s)),
                Some(s) => format!("LATE by {}", secs(s)),
                None => "slack unknown".into(),
            };
            out.push_str(&format!("deadline {when} ({slack})\n"));
        }
        for t in &self.trials {
            let metrics: Vec<String> =
                ["auc", "logloss"].iter().filter_map(|m| Some(format!("{m} {:.4}", t.metrics.get(*m)?))).collect();
            out.push_str(&format!(
                "trial    {} {:<7} {}{}{} {}\n",
                t.trial,
                t.state,
                t.version.map(|v| format!("v{v} ")).unwrap_or_default(),
                metrics.join(" "),
                t.trainer_seconds.map(|s| format!(" trainer {s:.1}s")).unwrap_or_default(),
                serde_json::Value::Object(t.params.clone()),
            ));
        }
        if let Some(p) = &self.promotion {
            let best = match (&p.best_trial, p.best_version, p.best_value) {
                (Some(t), Some(v), Some(x)) => {
                    format!(
                        " {} version {v} ({t} {} {x:.4})",
                        if p.promoted { "->" } else { "stays; best is" },
                        p.metric
                    )
                }
                _ => " stays".to_string(),
            };
            out.push_str(&format!("promote  {}{best}: {}\n", p.alias, p.reason));
        }
        let unit = if self.kind == hourglass_core::task::TaskKind::Train { "trial" } else { "shard" };
        for f in &self.failures {
            out.push_str(&format!(
                "failed   {unit} {} after {} attempts [{}]: {}\n",
                f.shard, f.attempts, f.error_kind, f.message
            ));
            if let Some(tail) = &f.log_tail {
                for line in tail.lines() {
                    out.push_str(&format!("         | {line}\n"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(states: Vec<ShardState>) -> JobStatus {
        let done = states.iter().filter(|s| **s == ShardState::Done).count() as u64;
        let failed = states.iter().filter(|s| **s == ShardState::Failed).count() as u64;
        JobStatus {
            usage: Default::default(),
            job: JobId::parse("j-1").unwrap(),
            output: "s3://out/".into(),
            state: JobState::Running,
            shards_total: states.len() as u64,
            shards_done: done,
            shards_failed: failed,
            shards_pending: states.len() as u64 - done - failed,
            rows_done: done * 100,
            rows_estimate: states.len() as u64 * 100,
            bad_rows: 0,
            elapsed_secs: 10.0,
            rows_per_sec: 50.0,
            eta_secs: Some(20.0),
            deadline_unix_ms: Some(now_ms() + 3_600_000),
            slack_secs: Some(3580.0),
            failures: vec![],
            shards_lost: 0,
            dead_letters: None,
            dead_lettered: Vec::new(),
            skipped_files: vec![],
            foreign_records: 0,
            shard_states: states,
            kind: hourglass_core::task::TaskKind::Infer,
            trials: vec![],
            promotion: None,
        }
    }

    #[test]
    fn live_views_fit_80_columns() {
        use ShardState::*;
        let mut s = status(vec![Done; 99_999]);
        s.shards_failed = 1234;
        s.rows_done = 987_654_321_000;
        s.rows_per_sec = 12_345_678.0;
        s.eta_secs = Some(98_765.0);
        s.slack_secs = Some(-98_765.0);
        s.failures = vec![Failure {
            shard: "000001".into(),
            error_kind: "bad_row".into(),
            message: "s3://a-very-long-bucket-name/with/a/deep/prefix/part-00000.csv line 152: ".repeat(3),
            attempts: 3,
            log_tail: None,
        }];
        let line = s.progress_line();
        assert!(line.chars().count() <= VIEW_COLUMNS, "{line}");
        assert!(line.contains("1234 failed") && line.contains("987.7G rows") && line.contains("12.3M/s"), "{line}");
        let view = s.live_view(Some(1e7));
        for l in view.lines() {
            assert!(l.chars().count() <= VIEW_COLUMNS, "{} columns: {l}", l.chars().count());
        }
        assert!(view.lines().any(|l| l.starts_with("failed   shard 000001") && l.ends_with('…')), "{view}");
    }

    #[test]
    fn live_view_maps_every_shard() {
        use ShardState::*;
        let view = status(vec![Done, Done, Failed, Pending]).live_view(Some(1234.0));
        assert!(view.contains("         ##!.\n"), "{view}");
        assert!(view.contains("now      1234 rows/s"), "{view}");
        assert!(view.contains("eta      20s") && view.contains("slack"), "{view}");
        // 1000 shards: 4 per cell, a cell shows its worst shard.
        let mut many = vec![Done; 1000];
        many[5] = Failed;
        many[999] = Pending;
        let view = status(many).live_view(None);
        assert!(view.contains("one cell = 4 shards"), "{view}");
        let map: String = view.lines().filter(|l| l.starts_with("         ")).map(str::trim).collect();
        assert_eq!(map.len(), 250);
        assert_eq!(&map[..3], "#!#");
        assert!(map.ends_with('.'), "{map}");
    }
}
