//! A fixed pool of CPU threads for decoding, inference and encoding, so the
//! async runtime only ever waits on IO. Jobs come back through a oneshot;
//! a panic in a job is re-raised in the awaiting task, never swallowed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// CPU pool threads are named `hourglass-cpu-N` (seen in `top -H`, and by
/// `bench` when it splits CPU time between the pool and the rest).
pub const THREAD_NAME_PREFIX: &str = "hourglass-cpu-";

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, Clone)]
pub struct CpuPool {
    // The lease loop admits at most `concurrency + prefetch_shards` shards,
    // so at most that many jobs wait here: the channel needs no bound of
    // its own.
    tx: mpsc::Sender<Job>,
    threads: usize,
    /// Threads waiting for a job, and jobs sent but not yet taken.
    idle: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
}

impl CpuPool {
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (idle, queued) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for i in 0..threads {
            let (rx, idle, queued) = (rx.clone(), idle.clone(), queued.clone());
            std::thread::Builder::new()
                .name(format!("{THREAD_NAME_PREFIX}{i}"))
                .spawn(move || {
                    loop {
                        idle.fetch_add(1, Ordering::SeqCst);
                        let job = {
                            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                            guard.recv()
                        };
                        idle.fetch_sub(1, Ordering::SeqCst);
                        match job {
                            Ok(job) => {
                                queued.fetch_sub(1, Ordering::SeqCst);
                                job();
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawning a cpu pool thread");
        }
        Self { tx, threads, idle, queued }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether a thread is waiting with no job queued for it: a job sent
    /// now starts at once. Only a hint: another sender may take it first.
    pub fn has_idle_thread(&self) -> bool {
        self.queued.load(Ordering::SeqCst) == 0 && self.idle.load(Ordering::SeqCst) > 0
    }

    fn send(&self, job: Job) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(job).expect("cpu pool threads live as long as the pool");
    }

    /// Runs `f` on the pool without waiting for it: long-lived loops (a
    /// serving instance) that hold a pool thread until they return.
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        self.send(Box::new(f));
    }

    /// Runs `f` on the pool and awaits its result.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        self.send(job);
        match rx.await.expect("cpu pool jobs always answer") {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
