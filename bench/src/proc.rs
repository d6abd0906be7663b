//! Where a process's CPU and memory go, from `/proc` (Linux; nothing
//! elsewhere): the one sampler `bench` and `bench serve` read threads with.

use std::path::Path;

/// On-CPU nanoseconds of each thread of `/proc/<pid>` (`self` for this
/// process), with the thread's name: the first field of its `schedstat`.
pub fn thread_cpu_ns(proc_dir: &Path) -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir(proc_dir.join("task")) else { return Vec::new() };
    tasks
        .flatten()
        .map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            (comm.trim_end().to_string(), ns)
        })
        .collect()
}

/// The peak resident set so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(proc_dir: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    hwm.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a thread is one of the runtime's CPU pool threads (decoding and
/// inference), by its name.
pub fn is_pool_thread(name: &str) -> bool {
    name.starts_with(hourglass_runtime::pool::THREAD_NAME_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = Path::new("/proc/self");
        let threads = thread_cpu_ns(me);
        assert!(!threads.is_empty());
        assert!(threads.iter().any(|(_, ns)| *ns > 0), "{threads:?}");
        assert!(peak_rss_kib(me).unwrap() > 0);
    }
}
