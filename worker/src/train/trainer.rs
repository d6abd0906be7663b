//! Runs one trainer process: the trainer contract, from the worker's side.
//!
//! The trainer is a command the worker was configured with (`--trainer
//! NAME=COMMAND`), started in its own process group with the trial's
//! inputs in environment variables:
//!
//! | variable | value |
//! |---|---|
//! | `HOURGLASS_TRAIN_FILES` | staged training files, one path per line |
//! | `HOURGLASS_HOLDOUT_FILES` | staged holdout files, one path per line |
//! | `HOURGLASS_DATA_FORMAT` | `parquet` or `csv` |
//! | `HOURGLASS_LABEL` | the label column |
//! | `HOURGLASS_FEATURES` | feature columns in model input order, comma-separated |
//! | `HOURGLASS_PARAMS` | the trial's parameters, a JSON object |
//! | `HOURGLASS_OUTPUT_DIR` | an empty directory for the trainer's outputs |
//! | `HOURGLASS_THREADS` | CPU threads the trainer may use |
//! | `HOURGLASS_JOB`, `HOURGLASS_TRIAL` | ids, for the trainer's own logs |
//!
//! It prints progress as JSON lines on stdout (`{"progress": 0.4,
//! "iteration": 40}`; any other line is plain log) and exits 0 after
//! writing to the output directory: `model.onnx` (feature names in the
//! `hourglass.feature_names` metadata), `metrics.json` (an object of
//! numbers) and `holdout_predictions.txt` (its own prediction for each
//! holdout row, one number per line, files in the order given, rows in
//! file order).
//!
//! The worker keeps the lease while it runs and ends the whole process
//! group: SIGKILL when the lease is lost (another worker owns the trial
//! now), SIGTERM then SIGKILL after a grace when the worker drains or the
//! trial runs past `max_train_time`.

use crate::lease::Lease;
use std::collections::VecDeque;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tracing::{info, warn};

/// Lines of trainer output kept for a failed record.
pub const LOG_TAIL_LINES: usize = 40;
/// Trainer output kept in the trial's log object; past it, the oldest
/// lines are dropped (the tail is what explains a failure).
pub const LOG_MAX_BYTES: usize = 1 << 20;
/// How long a trainer has to exit after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(10);

/// One trainer run's inputs.
pub struct TrainerRun {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub max_time: Duration,
    /// Cancelled when the lease is lost (kill at once) or the worker drains
    /// past its timeout (terminate, then kill).
    pub lease: Lease,
}

/// How a trainer run ended.
#[derive(Debug)]
pub struct TrainerExit {
    pub seconds: f64,
    /// The whole output, at most `LOG_MAX_BYTES` of its newest lines.
    pub log: String,
}

/// Why a run did not finish cleanly; the worker maps these to errors.
#[derive(Debug)]
pub enum TrainerEnd {
    Failed { message: String, log: String },
    TimedOut { log: String },
    LeaseLost,
    Abandoned,
}

/// The last `LOG_TAIL_LINES` lines of a log.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

struct Log {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Log {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > LOG_MAX_BYTES
            && let Some(old) = self.lines.pop_front()
        {
            self.bytes -= old.len() + 1;
        }
    }

    fn text(&self) -> String {
        let mut s = String::with_capacity(self.bytes);
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

fn signal_group(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
        && let Err(e) = rustix::process::kill_process_group(pid, signal)
        && e != rustix::io::Errno::SRCH
    {
        warn!(pid = pid.as_raw_nonzero().get(), error = %e, "could not signal the trainer's process group");
    }
}

/// Runs the trainer to its end. Progress lines are logged as they come.
pub async fn run(t: TrainerRun) -> std::result::Result<TrainerExit, TrainerEnd> {
    let started = Instant::now();
    let Some((program, args)) = t.command.split_first() else {
        return Err(TrainerEnd::Failed { message: "the trainer command is empty".into(), log: String::new() });
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(t.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Err(TrainerEnd::Failed {
                message: format!("cannot start trainer {program:?}: {e}"),
                log: String::new(),
            });
        }
    };
    let pid = child.id().expect("a child just spawned has a pid");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Log { lines: VecDeque::new(), bytes: 0 }));
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out_log = log.clone();
    let out = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim_start().starts_with('{')
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(p) = v.get("progress").and_then(|p| p.as_f64())
            {
                info!(progress = p, event = %line, "trainer progress");
            }
            out_log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let err_log = log.clone();
    let err = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            err_log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    use rustix::process::Signal;
    enum Why {
        Exited(std::io::Result<std::process::ExitStatus>),
        LeaseLost,
        Abandoned,
        TimedOut,
    }
    let cancel = t.lease.cancel_token();
    let why = tokio::select! {
        s = child.wait() => Why::Exited(s),
        _ = cancel.cancelled() => if t.lease.is_lost() { Why::LeaseLost } else { Why::Abandoned },
        _ = tokio::time::sleep(t.max_time) => Why::TimedOut,
    };
    let ended = match why {
        Why::Exited(s) => Ok(s),
        Why::LeaseLost => {
            signal_group(pid, Signal::KILL);
            Err(Why::LeaseLost)
        }
        other => {
            signal_group(pid, Signal::TERM);
            if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
                warn!("trainer ignored SIGTERM; killing it");
            }
            Err(other)
        }
    };
    // Reap the child, and anything left in its group holding the pipes.
    signal_group(pid, Signal::KILL);
    let _ = child.wait().await;
    for reader in [out, err] {
        if let Err(e) = reader.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let log = log.lock().unwrap_or_else(|p| p.into_inner()).text();
    match ended {
        Ok(Ok(s)) if s.success() => Ok(TrainerExit { seconds: started.elapsed().as_secs_f64(), log }),
        Ok(Ok(s)) => Err(TrainerEnd::Failed { message: format!("the trainer exited with {s}"), log }),
        Ok(Err(e)) => Err(TrainerEnd::Failed { message: format!("waiting for the trainer failed: {e}"), log }),
        Err(Why::LeaseLost) => Err(TrainerEnd::LeaseLost),
        Err(Why::Abandoned) => Err(TrainerEnd::Abandoned),
        Err(_) => Err(TrainerEnd::TimedOut { log }),
    }
}
