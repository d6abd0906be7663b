//! A real Prometheus (Debian's, from `scripts/tools`) for metrics tests.

// Tests wait for processes by polling from plain threads.
#![allow(clippy::disallowed_methods)]

use super::{http_get, tool};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Percent-encodes a query parameter.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Prometheus scraping `targets` every second, adding `labels` to
    /// every series (as a PodMonitor adds `namespace`).
    pub fn start(targets: &[&str], labels: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        let labels = labels.iter().map(|(k, v)| format!("{k}: '{v}'")).collect::<Vec<_>>().join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: hourglass\n    static_configs:\n      - targets: [{list}]\n        labels: {{{labels}}}\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus { child, addr, _dir: dir };
        p.wait_until("prometheus ready", || matches!(http_get(&p.addr, "/-/ready"), Ok((200, _))).then_some(()));
        p
    }

    /// An instant query's samples as (labels, value).
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let (status, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", url_encode(promql))).unwrap();
        assert_eq!(status, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["metric"].clone(), s["value"][1].as_str().unwrap().parse().unwrap()))
            .collect()
    }

    pub fn wait_until<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(v) = f() {
                return v;
            }
            let log = std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "{what}: not within 3 minutes; prometheus log:\n{log}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
