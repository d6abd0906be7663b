//! ONNX Runtime alone, the ceiling every pipeline is measured against: the
//! one loop that keeps `threads` threads calling the model, for a number
//! of calls or for a time, with nothing else in the way (no IO, no
//! decoding, inputs already in memory).

use std::time::{Duration, Instant};

/// When the loop stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this many calls in all, spread over the threads.
    Calls(usize),
    /// When this much time has passed.
    Elapsed(Duration),
}

/// Runs `call(i)` (the i-th call of its thread's share; it returns the rows
/// it scored) on `threads` threads until `until`; returns the rows scored
/// and the wall time they took.
pub fn measure<E, F>(threads: usize, until: Until, call: F) -> Result<(u64, Duration), E>
where
    F: Fn(usize) -> Result<u64, E> + Sync,
    E: Send,
{
    let threads = threads.max(1);
    let started = Instant::now();
    let call = &call;
    let rows = std::thread::scope(|s| -> Result<u64, E> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<u64, E> {
                    let mut rows = 0u64;
                    match until {
                        Until::Calls(calls) => {
                            for c in (t..calls).step_by(threads) {
                                rows += call(c)?;
                            }
                        }
                        Until::Elapsed(d) => {
                            let mut c = t;
                            while started.elapsed() < d {
                                rows += call(c)?;
                                c += threads;
                            }
                        }
                    }
                    Ok(rows)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok(total)
    })?;
    Ok((rows, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_call_is_made_once_across_the_threads() {
        let seen = AtomicUsize::new(0);
        let (rows, _) = measure::<(), _>(3, Until::Calls(10), |c| {
            seen.fetch_or(1 << c, Ordering::Relaxed);
            Ok(2)
        })
        .unwrap();
        assert_eq!(rows, 20);
        assert_eq!(seen.load(Ordering::Relaxed), (1 << 10) - 1);
    }

    #[test]
    fn a_failing_call_fails_the_measurement() {
        let r = measure(2, Until::Elapsed(Duration::from_secs(5)), |c| if c == 3 { Err("boom") } else { Ok(1) });
        assert_eq!(r.unwrap_err(), "boom");
    }
}
