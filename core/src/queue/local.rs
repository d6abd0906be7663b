//! The local queue: one SQLite file, safe for several processes on one
//! machine (WAL journal, immediate transactions, a busy timeout), durable
//! across crashes, with SQS's lease semantics and a dead-letter table.

use super::{BatchOutcome, Depth, LongPoll, MAX_BATCH, MAX_WAIT, Message, Queue, check_send_batch};
use crate::{Error, ErrorKind, MessageId, Receipt, Result};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default max receives before a message is dead-lettered by the queue
/// itself. Workers give up earlier (`--max-attempts`, default 3) and write a
/// failed record; this is the backstop for workers that die every time.
pub const DEFAULT_MAX_RECEIVES: u32 = 10;
/// How often an empty long poll looks again. The queue is a local file, so
/// polling is cheap; 50 ms keeps idle workers responsive.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Concurrent processes wait this long for the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT UNIQUE,
    sent_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at_ms, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

pub use super::DeadLetter;

#[derive(Debug, Clone)]
pub struct LocalQueue {
    name: String,
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    max_receives: u32,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn nonce() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

impl LocalQueue {
    /// Opens (creating if needed) the queue at `path`. `max_receives`, when
    /// given, is stored as the queue's redrive limit.
    pub fn open(path: impl AsRef<Path>, max_receives: Option<u32>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let name = format!("local://{}", path.display());
        let qerr =
            |op: &'static str, e: &dyn std::fmt::Display| Error::queue(op, name.clone(), ErrorKind::Permanent, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| qerr("open", &e))?;
        }
        let conn = Connection::open(&path).map_err(|e| qerr("open", &e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| qerr("open", &e))?;
        // Several processes opening a new queue at once (a worker, the
        // scaler and the watcher of one machine) race to switch it to WAL
        // and create the tables; SQLite answers the loser "database is
        // locked" at once, without its busy handler. Try again until the
        // busy timeout.
        let started = Instant::now();
        let mut wait = Duration::from_millis(5);
        loop {
            let init = conn
                .pragma_update(None, "journal_mode", "WAL")
                .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
                .and_then(|()| conn.execute_batch(SCHEMA));
            match init {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                        && started.elapsed() < BUSY_TIMEOUT =>
                {
                    #[allow(clippy::disallowed_methods)] // Opening is synchronous: it waits its own thread.
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(qerr("open", &e)),
            }
        }
        if let Some(n) = max_receives {
            if n == 0 {
                return Err(Error::invalid(name, "max_receives must be at least 1"));
            }
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('max_receives', ?1)",
                params![n.to_string()],
            )
            .map_err(|e| qerr("open", &e))?;
        }
        let stored: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'max_receives'", [], |r| r.get(0))
            .optional()
            .map_err(|e| qerr("open", &e))?;
        let max_receives = stored.and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_MAX_RECEIVES);
        Ok(Self { name, path, conn: Arc::new(Mutex::new(conn)), max_receives })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_receives(&self) -> u32 {
        self.max_receives
    }

    /// Every message in the dead-letter table, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.with_conn("list dead letters", |c| {
            let mut stmt =
                c.prepare("SELECT id, body, receive_count, reason FROM dead_letters ORDER BY dead_at_ms, id")?;
            let rows = stmt.query_map([], |r| {
                Ok(DeadLetter {
                    id: MessageId::new(r.get::<_, i64>(0)?.to_string()),
                    body: r.get(1)?,
                    receive_count: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Runs `f` with the connection on the blocking pool (SQLite calls block).
    async fn with_conn<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        let name = self.name.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await;
        match res {
            Ok(r) => r.map_err(|e| sql_err(op, &name, e)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::queue(op, name, ErrorKind::Transient, e)),
        }
    }

    fn stale(&self, op: &'static str) -> Error {
        Error::queue(
            op,
            self.name.clone(),
            ErrorKind::NotFound,
            "receipt is stale: the lease expired and the message was received again, or it was deleted",
        )
    }
}

fn sql_err(op: &'static str, name: &str, e: rusqlite::Error) -> Error {
    let kind = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => ErrorKind::Transient,
        Some(rusqlite::ErrorCode::PermissionDenied | rusqlite::ErrorCode::ReadOnly) => ErrorKind::Permission,
        _ => ErrorKind::Permanent,
    };
    Error::queue(op, name, kind, e)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Queue for LocalQueue {
    fn name(&self) -> &str {
        &self.name
    }

    /// Short polls: a receive holds the database, and a stop request is
    /// noticed between polls rather than by dropping one.
    fn long_poll(&self) -> LongPoll {
        LongPoll { wait: Duration::from_secs(1), interruptible: false }
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<BatchOutcome> {
        let (send, outcome) = check_send_batch(&self.name, bodies)?;
        let ok: Vec<String> = send.into_iter().map(|i| bodies[i].clone()).collect();
        self.with_conn("send", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            for body in &ok {
                tx.execute(
                    "INSERT INTO messages (body, visible_at_ms, sent_at_ms) VALUES (?1, ?2, ?2)",
                    params![body, now],
                )?;
            }
            tx.commit()
        })
        .await?;
        Ok(outcome)
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Message>> {
        let max = max.clamp(1, MAX_BATCH);
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let max_receives = self.max_receives;
        loop {
            let got = self
                .with_conn("receive", move |c| {
                    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let now = now_ms();
                    let candidates: Vec<(i64, String, u32)> = {
                        let mut stmt = tx.prepare(
                            "SELECT id, body, receive_count FROM messages WHERE visible_at_ms <= ?1 ORDER BY visible_at_ms, id LIMIT ?2",
                        )?;
                        stmt.query_map(params![now, max as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                            .collect::<rusqlite::Result<_>>()?
                    };
                    let mut out = Vec::new();
                    for (id, body, count) in candidates {
                        if count >= max_receives {
                            tx.execute(
                                "INSERT OR REPLACE INTO dead_letters (id, body, receive_count, reason, dead_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                                params![id, body, count, format!("received {count} times without being acked (max receives {max_receives})"), now],
                            )?;
                            tx.execute("DELETE FROM messages WHERE id = ?1", params![id])?;
                            continue;
                        }
                        let receipt = format!("{id}-{:016x}", nonce());
                        tx.execute(
                            "UPDATE messages SET receive_count = receive_count + 1, receipt = ?2, visible_at_ms = ?3 WHERE id = ?1",
                            params![id, receipt, now + millis(visibility)],
                        )?;
                        out.push(Message { id: MessageId::new(id.to_string()), receipt: Receipt::new(receipt), body, receive_count: count + 1 });
                    }
                    tx.commit()?;
                    Ok(out)
                })
                .await?;
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        let r = receipt.as_str().to_string();
        let n = self
            .with_conn("extend visibility", move |c| {
                c.execute(
                    "UPDATE messages SET visible_at_ms = ?2 WHERE receipt = ?1",
                    params![r, now_ms() + millis(visibility)],
                )
            })
            .await?;
        if n == 0 { Err(self.stale("extend visibility")) } else { Ok(()) }
    }

    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<BatchOutcome> {
        let rs: Vec<String> = receipts.iter().map(|r| r.as_str().to_string()).collect();
        let deleted = self
            .with_conn("ack", move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut deleted = Vec::new();
                for r in &rs {
                    deleted.push(tx.execute("DELETE FROM messages WHERE receipt = ?1", params![r])? > 0);
                }
                tx.commit()?;
                Ok(deleted)
            })
            .await?;
        Ok(BatchOutcome {
            failed: deleted.into_iter().enumerate().filter(|(_, d)| !d).map(|(i, _)| (i, self.stale("ack"))).collect(),
        })
    }

    async fn release(&self, receipt: &Receipt) -> Result<()> {
        let r = receipt.as_str().to_string();
        let n = self
            .with_conn("release", move |c| {
                c.execute("UPDATE messages SET visible_at_ms = ?2 WHERE receipt = ?1", params![r, now_ms()])
            })
            .await?;
        if n == 0 { Err(self.stale("release")) } else { Ok(()) }
    }

    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<()> {
        let r = message.receipt.as_str().to_string();
        let reason = reason.to_string();
        let n = self
            .with_conn("dead-letter", move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let n = tx.execute(
                    "INSERT OR REPLACE INTO dead_letters (id, body, receive_count, reason, dead_at_ms)
                     SELECT id, body, receive_count, ?2, ?3 FROM messages WHERE receipt = ?1",
                    params![r, reason, now_ms()],
                )?;
                tx.execute("DELETE FROM messages WHERE receipt = ?1", params![r])?;
                tx.commit()?;
                Ok(n)
            })
            .await?;
        if n == 0 { Err(self.stale("dead-letter")) } else { Ok(()) }
    }

    async fn max_receives(&self) -> Result<Option<u32>> {
        Ok(Some(self.max_receives))
    }

    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>> {
        let mut all = self.dead_letters().await?;
        all.truncate(max);
        Ok(all)
    }

    async fn depth(&self) -> Result<Depth> {
        self.with_conn("depth", |c| {
            let now = now_ms();
            let (visible, in_flight, delayed): (i64, i64, i64) = c.query_row(
                "SELECT
                    COALESCE(SUM(visible_at_ms <= ?1), 0),
                    COALESCE(SUM(visible_at_ms > ?1 AND receive_count > 0), 0),
                    COALESCE(SUM(visible_at_ms > ?1 AND receive_count = 0), 0)
                 FROM messages",
                params![now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let dead: i64 = c.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?;
            let oldest: Option<i64> = c.query_row("SELECT MIN(sent_at_ms) FROM messages", [], |r| r.get(0))?;
            Ok(Depth {
                visible: visible as u64,
                in_flight: in_flight as u64,
                delayed: delayed as u64,
                dead: Some(dead as u64),
                oldest_age_ms: oldest.map(|t| (now as u64).saturating_sub(t as u64)),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn processes_opening_a_new_queue_at_once_all_succeed() {
        for round in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("queue-{round}.db"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let opens: Vec<_> = (0..8)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        LocalQueue::open(&path, Some(3)).map(|_| ())
                    })
                })
                .collect();
            for o in opens {
                o.join().unwrap().unwrap();
            }
        }
    }

    use super::*;

    fn q(dir: &tempfile::TempDir, max: Option<u32>) -> LocalQueue {
        LocalQueue::open(dir.path().join("q.db"), max).unwrap()
    }

    #[tokio::test]
    async fn lease_ack_release_extend() {
        let dir = tempfile::tempdir().unwrap();
        let q = q(&dir, None);
        q.send_batch(&["a".into(), "b".into()]).await.unwrap();
        let got = q.receive(10, Duration::ZERO, Duration::from_secs(30)).await.unwrap();
        assert_eq!(got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        let depth = q.depth().await.unwrap();
        assert_eq!((depth.visible, depth.in_flight, depth.delayed, depth.dead), (0, 2, 0, Some(0)));
        assert!(depth.oldest_age_ms.is_some());
        assert!(q.receive(10, Duration::from_millis(100), Duration::from_secs(30)).await.unwrap().is_empty());
        q.release(&got[0].receipt).await.unwrap();
        let again = q.receive(10, Duration::ZERO, Duration::from_secs(30)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, 2);
        // The first receipt of "a" is stale now.
        let out = q.ack_batch(&[got[0].receipt.clone(), got[1].receipt.clone()]).await.unwrap();
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].0, 0);
        q.extend(&again[0].receipt, Duration::from_secs(60)).await.unwrap();
        assert!(q.ack_batch(&[again[0].receipt.clone()]).await.unwrap().failed.is_empty());
        assert_eq!(q.depth().await.unwrap().in_flight, 0);
    }

    #[tokio::test]
    async fn expiry_redelivers_and_max_receives_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let q = q(&dir, Some(2));
        q.send_batch(&["p".into()]).await.unwrap();
        for expect in 1..=2 {
            let got = q.receive(1, Duration::from_secs(2), Duration::from_millis(1)).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].receive_count, expect);
        }
        assert!(q.receive(1, Duration::from_millis(50), Duration::from_millis(1)).await.unwrap().is_empty());
        let dead = q.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].reason.contains("max receives 2"), "{}", dead[0].reason);
    }
}
