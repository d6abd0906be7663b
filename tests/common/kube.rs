//! kubectl against the test API servers `scripts/with-kube` starts, as an
//! administrator or as the scaler's service account, and the real scaler
//! binary run against them.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// One tier of `scripts/with-kube`: a directory with `admin.kubeconfig`,
/// `scaler.kubeconfig` and `kubectl`.
pub struct Kube {
    pub dir: PathBuf,
}

impl Kube {
    /// The tier named by `var` (`HOURGLASS_TEST_KUBE`,
    /// `HOURGLASS_TEST_CLUSTER`); panics when it is unset, so a test run
    /// without the servers fails instead of skipping.
    pub fn from_env(var: &str) -> Self {
        let dir = std::env::var(var).unwrap_or_else(|_| {
            panic!(
                "{var} is not set: run these tests under scripts/with-kube (make test does), \
                 which starts etcd, kube-apiserver and the cluster tier"
            )
        });
        Kube { dir: dir.into() }
    }

    pub fn kubeconfig(&self, who: &str) -> String {
        self.dir.join(format!("{who}.kubeconfig")).to_string_lossy().into_owned()
    }

    pub fn kubectl_as(&self, who: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(self.dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig(who))
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_as("admin", args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn apply(&self, manifest: &str) {
        self.admin(&["apply", "-f", "-"], Some(manifest));
    }

    pub fn apply_file(&self, rel: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
        self.admin(&["apply", "-f", path.to_str().unwrap()], None);
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.admin(&all, None)).unwrap()
    }

    pub fn replicas(&self, deployment: &str) -> i64 {
        self.json(&["get", "deployment", deployment, "-n", "batch"])["spec"]["replicas"].as_i64().unwrap()
    }

    pub fn set_replicas(&self, deployment: &str, n: u32) {
        self.admin(&["scale", "deployment", deployment, "-n", "batch", &format!("--replicas={n}")], None);
    }

    /// Events on a Deployment with a reason, oldest first.
    pub fn events(&self, deployment: &str, reason: &str) -> Vec<String> {
        let selector = format!("involvedObject.name={deployment},reason={reason}");
        let list = self.json(&["get", "events", "-n", "batch", "--field-selector", &selector]);
        list["items"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap_or("").to_owned()).collect()
    }

    /// `kubectl auth can-i` as the scaler's service account itself.
    pub fn scaler_can(&self, args: &[&str]) -> bool {
        let mut all = vec!["auth", "can-i"];
        all.extend(args);
        let out = self.kubectl_as("scaler", &all, None);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match answer.as_str() {
            "yes" => true,
            "no" => false,
            other => panic!("can-i {args:?}: {other:?} {}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// Runs one tick of the real scaler binary as the scaler's service
    /// account, on the shipped worker and placeholder Deployments.
    pub fn scaler_once(&self, queue: &str, extra: &[&str]) -> Output {
        let kubeconfig = self.kubeconfig("scaler");
        let mut args = vec![
            "scaler",
            "--once",
            "--kubeconfig",
            &kubeconfig,
            "--queue",
            queue,
            "--deployment",
            "batch/hourglass-worker",
            "--placeholders",
            "batch/hourglass-capacity",
        ];
        args.extend(extra);
        super::hourglass(&args)
    }
}

/// The scaler's stdout, after checking it succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "scaler failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
