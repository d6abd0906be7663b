//! An output store that refuses writes (a full disk): no temporary file is
//! left behind, the job ends instead of looping, and the real cause reaches
//! `status`, whether the store still takes the small failed record or
//! refuses it too. The output lies on a small tmpfs (root: `make test` and
//! CI run as root; a failed mount fails the test, it does not skip).

// The test polls the ledger from a plain thread, with a bound.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

/// A tmpfs of `size` mounted at `dir` until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        let out = out.expect("running mount");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs at {} failed (this test needs root, as make test has): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if name.starts_with(".hourglass-tmp-") {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

/// Fills the filesystem at `dir` until it takes no more bytes.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 4096];
    while f.write_all(&block).and_then(|_| f.flush()).is_ok() {}
    // Byte by byte into the last partial block.
    while f.write_all(&[7]).is_ok() {}
    path
}

/// A job of four shards of ~400 KB of CSV output each, submitted with its
/// output on a tmpfs of `size`; the scratch and the mount.
fn job_on_tmpfs(size: &str) -> (Scratch, Tmpfs) {
    let s = Scratch::new();
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let from = i as u64 * 20_000;
        write_csv(&s.path(&format!("input/{name}.csv")), from, from + 20_000, None);
    }
    let disk = Tmpfs::mount(&s.path("output"), size);
    let out = submit(&s, &["--output-format", "csv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (s, disk)
}

#[test]
fn a_full_output_disk_fails_the_job_with_its_cause_and_leaves_no_temp_files() {
    let (s, _disk) = job_on_tmpfs("700k");
    let started = Instant::now();
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "2s", "--max-attempts", "2"]);
    // Bounded: the worker runs out of work instead of redelivering forever.
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert!(started.elapsed() < LONG);
    assert_eq!(temp_files(&s.path("output")), Vec::<String>::new());
    let st = status_json_of(&s.output(), &["--queue", &s.queue()]);
    assert_eq!(st["state"], "failed", "{st}");
    let failures = st["failures"].as_array().unwrap();
    assert!(!failures.is_empty(), "{st}");
    for f in failures {
        let message = f["message"].as_str().unwrap();
        assert!(message.contains("No space left on device"), "{f}");
        assert_ne!(f["error_kind"], "lost", "{f}");
    }
    let log = w.log.join("\n");
    assert!(!log.contains("OOM kill or spot interruption"), "{log}");
}

#[test]
fn a_store_that_refuses_even_the_failed_record_dead_letters_with_the_cause_and_records_it_later() {
    let (s, _disk) = job_on_tmpfs("256k");
    let filler = fill(&s.path("output"));
    let mut w = WorkerProc::spawn(&s, &["--max-attempts", "2"]);
    for _ in 0..4 {
        w.wait_for_line("dead-lettering with the cause", LONG);
    }
    assert_eq!(temp_files(&s.path("output")), Vec::<String>::new());
    // The queue knows why: status names the cause of every shard.
    let st = status_json_of(&s.output(), &["--queue", &s.queue()]);
    assert_eq!((st["state"].as_str(), st["shards_lost"].as_u64()), (Some("failed"), Some(4)), "{st}");
    let dead = st["dead_lettered"].as_array().unwrap();
    assert_eq!(dead.len(), 4, "{st}");
    for d in dead {
        assert!(d["reason"].as_str().unwrap().contains("No space left on device"), "{d}");
    }
    let text = hourglass(&["status", &s.output(), "--queue", &s.queue()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("No space left on device"));
    // Space again: the worker writes the failed records it kept.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let st = status_json(&s);
        if st["failures"].as_array().unwrap().len() == 4 {
            for f in st["failures"].as_array().unwrap() {
                assert!(f["message"].as_str().unwrap().contains("No space left on device"), "{f}");
            }
            assert_eq!(st["state"], "failed");
            break;
        }
        assert!(Instant::now() < deadline, "failed records not written once the disk had space: {st}");
        std::thread::sleep(Duration::from_millis(500));
    }
    w.signal("TERM");
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
}
