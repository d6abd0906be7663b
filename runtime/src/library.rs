//! Finding and loading ONNX Runtime: the shared library from
//! `ORT_DYLIB_PATH` or a project venv (`.venv`, or `.venv-gpu` first when a
//! GPU is asked for), the process-wide environment, and what the loaded
//! library is (its version, its built-in execution providers).

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The ONNX Runtime build `ort` 2.0.0-rc.15 (`api-31`) is written against.
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Whether the GPU build (`.venv-gpu`, from `make setup-gpu`) is looked for
/// first. Set before the library is first loaded.
static PREFER_GPU: AtomicBool = AtomicBool::new(false);

/// The venvs the library is looked for in: the CPU wheel's (`make setup`)
/// and the GPU wheel's (`make setup-gpu`).
pub const CPU_VENV: &str = ".venv";
pub const GPU_VENV: &str = ".venv-gpu";

/// Asks for the GPU build of ONNX Runtime (a GPU device was requested):
/// `find_library` then looks in `.venv-gpu` before `.venv`. No effect once
/// the library is loaded, nor when ORT_DYLIB_PATH names one.
pub fn prefer_gpu_library(gpu: bool) {
    if gpu {
        PREFER_GPU.store(true, Ordering::Relaxed);
    }
}

/// Where the library is: `ORT_DYLIB_PATH`, else the project venv found next
/// to the current directory or the executable (walking up: `.venv-gpu`
/// first when a GPU device is requested, else `.venv` first), else an
/// error that says how to get it.
pub fn find_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::RuntimeLibrary(format!("ORT_DYLIB_PATH={} does not name a file", p.display())))
        };
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        starts.push(dir.to_path_buf());
    }
    let venvs = if PREFER_GPU.load(Ordering::Relaxed) { [GPU_VENV, CPU_VENV] } else { [CPU_VENV, GPU_VENV] };
    for start in &starts {
        for dir in start.ancestors() {
            for venv in venvs {
                if let Some(p) = venv_library(&dir.join(venv)) {
                    return Ok(p);
                }
            }
        }
    }
    Err(Error::RuntimeLibrary(format!(
        "ONNX Runtime not found: run `make setup` (installs onnxruntime==1.31.1 into .venv), \
         or set ORT_DYLIB_PATH to {ORT_LIBRARY} (it ships in the onnxruntime wheel under onnxruntime/capi/)"
    )))
}

fn venv_library(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    for entry in lib.flatten() {
        let p = entry.path().join("site-packages/onnxruntime/capi").join(ORT_LIBRARY);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// The process-wide ONNX Runtime environment, loaded on first use.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    let env = ENVIRONMENT.get_or_init(|| {
        let path = find_library().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("failed to load ONNX Runtime from {}: {e}", path.display()))?;
        builder
            .with_name("hourglass")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("failed to start ONNX Runtime from {}: {e}", path.display()))
    });
    env.as_ref().map_err(|e| Error::RuntimeLibrary(e.clone()))
}

/// The ONNX Runtime library this process loads (its path) and its version:
/// from the versioned file name (`libonnxruntime.so.1.31.1`), else the
/// library's build info.
pub fn library_info() -> Result<(PathBuf, String)> {
    environment()?;
    let path = find_library()?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let version = match name.split_once(".so.") {
        Some((_, v)) if v.starts_with(|c: char| c.is_ascii_digit()) => v.to_string(),
        _ => ort::info().trim_start_matches("ORT Build Info: ").to_string(),
    };
    Ok((path, version))
}

/// The execution providers the loaded library was built with
/// (`CPUExecutionProvider`, `CUDAExecutionProvider`, …). Built with is not
/// usable: a GPU provider may still fail to register for want of a driver
/// or a library.
// The one call ort does not wrap publicly; the C API's contract is in
// onnxruntime_c_api.h (GetAvailableProviders / ReleaseAvailableProviders).
#[allow(unsafe_code)]
pub fn available_providers() -> Result<Vec<String>> {
    environment()?;
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut len: std::ffi::c_int = 0;
    // SAFETY: the environment is initialised (above), so the API table is
    // valid; the call fills `list` with `len` C strings owned by ONNX
    // Runtime until `ReleaseAvailableProviders`.
    let status = unsafe { (api.GetAvailableProviders)(&mut list, &mut len) };
    if !status.0.is_null() {
        // SAFETY: a non-null status from the call above, released once.
        unsafe { (api.ReleaseStatus)(status.0) };
        return Err(Error::RuntimeLibrary("ONNX Runtime could not list its execution providers".into()));
    }
    let mut out = Vec::with_capacity(len.max(0) as usize);
    for i in 0..len.max(0) as usize {
        // SAFETY: `i < len`, and each entry is a NUL-terminated string that
        // lives until the release below; it is copied out here.
        let name = unsafe { std::ffi::CStr::from_ptr(*list.add(i)) };
        out.push(name.to_string_lossy().into_owned());
    }
    // SAFETY: `list` and `len` are what GetAvailableProviders returned,
    // released exactly once; no borrow of them outlives this line.
    let status = unsafe { (api.ReleaseAvailableProviders)(list, len) };
    if !status.0.is_null() {
        // SAFETY: a non-null status from the call above, released once.
        unsafe { (api.ReleaseStatus)(status.0) };
    }
    Ok(out)
}
