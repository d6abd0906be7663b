//! `hourglass --version`: the crate version, the git revision it was built
//! from (by `build.rs`), and the ONNX Runtime it would load.

use hourglass_core::metrics::BuildInfo;

/// The git revision, `unknown` when built outside a checkout.
pub const REVISION: &str = env!("HOURGLASS_GIT_REVISION");

pub fn info() -> BuildInfo {
    BuildInfo { version: env!("CARGO_PKG_VERSION").into(), revision: REVISION.into() }
}

/// The short `-V` line.
pub fn short() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("HOURGLASS_GIT_REVISION"), ")")
}

/// The `--version` text: the short line, then the ONNX Runtime this binary
/// finds (path and version) or why it finds none.
pub fn long() -> String {
    let ort = match hourglass_runtime::library_info() {
        Ok((path, version)) => format!("onnxruntime {version} ({})", path.display()),
        Err(e) => format!("onnxruntime: not found ({e})"),
    };
    format!("{}\n{ort}", short())
}
