//! Execution devices: the ONNX Runtime execution provider a process asks
//! for (`--device cpu|cuda[:N]|tensorrt[:N]`), what happens when it cannot
//! have it (`--ep-fallback error|cpu`), strict placement (no node of a
//! model quietly left on the CPU), TensorRT's engine cache, and which device
//! each model really runs on.
//!
//! ONNX Runtime's own default is the worst one for a batch fleet: a GPU
//! provider that fails to register is logged and the session runs on the
//! CPU, ten times slower, with nobody told. Here a provider is registered
//! on its own so its error is seen, and then either the process stops with
//! that error (`error`, the default) or it falls back to the CPU *visibly*:
//! a warning, `hourglass_ep_fallback_total`, and `cpu` as the device in use
//! in logs, metrics, serve metadata and done records.
//!
//! `select::select` runs once at start, before any work is leased: it commits a
//! tiny probe model on the requested device, so a provider that registers
//! but cannot run (no driver, no GPU) shows then, not on the first shard.
//! Its answer is the device every later model load asks for.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// Rows per CPU batch when `--batch-size` is not given (see
/// `Device::default_batch_size`).
pub const DEFAULT_CPU_BATCH_SIZE: usize = 8192;

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA provider on GPU N.
    Cuda(u32),
    /// TensorRT on GPU N, with CUDA for the nodes TensorRT does not take.
    TensorRt(u32),
}

impl Device {
    pub fn is_gpu(&self) -> bool {
        !matches!(self, Device::Cpu)
    }

    /// `cpu`, `cuda` or `tensorrt`: the device class the scaler keys a
    /// per-pod rate on and metrics label with.
    pub fn class(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
            Device::TensorRt(_) => "tensorrt",
        }
    }

    /// Rows per batch when `--batch-size` is not given. A CPU batch stays
    /// in cache (8,192 × 39 floats ≈ 1.2 MiB); a GPU wants far more rows per
    /// call to amortise the copy to the device and the kernel launches, and
    /// 65,536 × 39 floats is still only 10 MiB of device memory.
    pub fn default_batch_size(&self) -> usize {
        match self {
            Device::Cpu => DEFAULT_CPU_BATCH_SIZE,
            _ => 65_536,
        }
    }

    /// The most rows `serve` batches into one call when
    /// `--max-batch-size` is not given.
    pub fn default_serve_batch_size(&self) -> usize {
        match self {
            Device::Cpu => 256,
            _ => 4096,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::TensorRt(n) => write!(f, "tensorrt:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, index) = match s.split_once(':') {
            Some((k, n)) => {
                let n = n.parse::<u32>().map_err(|_| format!("{s:?}: the GPU index after ':' must be a number"))?;
                (k.to_string(), n)
            }
            None => (s.clone(), 0),
        };
        match kind.as_str() {
            "cpu" if !s.contains(':') => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(index)),
            "tensorrt" | "trt" => Ok(Device::TensorRt(index)),
            _ => Err(format!("{s:?}: expected cpu, cuda[:N] or tensorrt[:N]")),
        }
    }
}

/// What to do when the requested GPU provider cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Stop with an error naming the device and the reason.
    #[default]
    Error,
    /// Run on the CPU, with a warning, a metric and `cpu` reported as the
    /// device in use.
    Cpu,
}

impl std::str::FromStr for Fallback {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Fallback::Error),
            "cpu" => Ok(Fallback::Cpu),
            other => Err(format!("{other:?}: expected error or cpu")),
        }
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fallback::Error => "error",
            Fallback::Cpu => "cpu",
        })
    }
}

/// How a process places its models.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceOptions {
    /// The device to run on.
    pub device: Device,
    /// What the user asked for, when `device` is a fallback from it.
    pub requested: Option<Device>,
    pub fallback: Fallback,
    /// Refuse a model with any node the GPU provider cannot take, instead
    /// of running those nodes on the CPU.
    pub strict: bool,
    /// TensorRT engines and timing caches, one folder per model sha256;
    /// `None`: `default_engine_cache()`.
    pub engine_cache: Option<PathBuf>,
}

impl DeviceOptions {
    pub fn new(device: Device, fallback: Fallback, strict: bool, engine_cache: Option<PathBuf>) -> Self {
        Self { device, requested: None, fallback, strict, engine_cache }
    }

    /// What the user asked for (the device itself unless it fell back).
    pub fn requested(&self) -> Device {
        self.requested.unwrap_or(self.device)
    }

    /// Where TensorRT engines for the model with this sha256 are kept.
    pub fn engine_cache_for(&self, sha256: &str) -> PathBuf {
        self.engine_cache.clone().unwrap_or_else(default_engine_cache).join(sha256)
    }
}

/// `$XDG_CACHE_HOME/hourglass/tensorrt`, else `~/.cache/hourglass/tensorrt`,
/// else under the temporary directory. Building a TensorRT engine takes
/// seconds to minutes per model; a cache that outlives the process (a
/// node's disk, a volume in the chart) pays that once per model and GPU.
pub fn default_engine_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("hourglass").join("tensorrt")
}

/// Registers the execution providers for `device` on a session builder:
/// the error says why a provider cannot be used, with the fix.
pub(crate) fn register(
    builder: &mut ort::session::builder::SessionBuilder,
    options: &DeviceOptions,
    sha256: &str,
) -> std::result::Result<(), String> {
    use ort::ep::ExecutionProvider;
    preload_gpu_libraries();
    // TF32 off: matrix products keep float32 precision, so scores match the
    // CPU's to 1e-5 (the golden check); TF32 would trade that for speed.
    let cuda = |n: u32| ort::ep::CUDA::default().with_device_id(n as i32).with_tf32(false);
    match options.device {
        Device::Cpu => Ok(()),
        Device::Cuda(n) => cuda(n).register(builder).map_err(|e| explain(options.device, &e.to_string())),
        Device::TensorRt(n) => {
            let cache = options.engine_cache_for(sha256);
            let path = cache.display().to_string();
            ort::ep::TensorRT::default()
                .with_device_id(n as i32)
                .with_engine_cache(true)
                .with_engine_cache_path(&path)
                .with_timing_cache(true)
                .with_timing_cache_path(&path)
                .register(builder)
                .map_err(|e| explain(options.device, &e.to_string()))?;
            // Engines are written when the session commits: the folder is
            // made only once TensorRT is there to fill it.
            std::fs::create_dir_all(&cache)
                .map_err(|e| format!("the TensorRT engine cache {} cannot be created: {e}", cache.display()))?;
            // Nodes TensorRT does not take go to CUDA, not the CPU.
            cuda(n).register(builder).map_err(|e| explain(Device::Cuda(n), &e.to_string()))
        }
    }
}

/// ONNX Runtime's registration error, with what it means and the fix.
pub(crate) fn explain(device: Device, error: &str) -> String {
    let library = crate::library::find_library().map(|p| p.display().to_string()).unwrap_or_default();
    let hint = if error.contains("not enabled in this build") || error.contains("not available in this build") {
        format!(
            "the ONNX Runtime loaded ({library}) is the CPU build: run `make setup-gpu` (onnxruntime-gpu into .venv-gpu) \
             or set ORT_DYLIB_PATH to onnxruntime-gpu's libonnxruntime.so.1.31.1"
        )
    } else if error.contains("libcuda.so") {
        "no NVIDIA driver here (libcuda.so.1 comes with the driver, not a wheel): run on a GPU node".to_string()
    } else if error.contains("libnvinfer") || error.contains("libnvonnxparser") {
        "TensorRT 10 is missing: `make setup-gpu GPU_TENSORRT=1` (tensorrt-cu13-libs) or put it on LD_LIBRARY_PATH"
            .to_string()
    } else if error.contains("cannot open shared object file") {
        "a CUDA 13 / cuDNN 9 library is missing: run `make setup-gpu` (the pinned nvidia wheels into .venv-gpu) \
         or put CUDA 13 and cuDNN 9 on LD_LIBRARY_PATH"
            .to_string()
    } else {
        "see `hourglass doctor --device DEVICE`".to_string()
    };
    let provider = match device {
        Device::Cpu => "CPU",
        Device::Cuda(_) => "CUDA",
        Device::TensorRt(_) => "TensorRT",
    };
    format!("{provider} execution provider unavailable: {}; {hint}", ort_message(error).trim_end_matches('.'))
}

/// ONNX Runtime's message without the source location and status code it
/// starts with (`/onnxruntime_src/…cc:2043 … [ONNXRuntimeError] : 1 : FAIL : `).
fn ort_message(error: &str) -> &str {
    let error = error.trim();
    match error.find("[ONNXRuntimeError] : ") {
        Some(i) => error[i..].splitn(4, " : ").nth(3).unwrap_or(error).trim(),
        None => error,
    }
}

/// The CUDA, cuDNN and TensorRT libraries the pip wheels install
/// (`site-packages/nvidia/*/lib`, `site-packages/tensorrt_libs`), in the
/// order they depend on each other.
const GPU_LIBRARIES: &[&str] = &[
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libnvrtc.so.13",
    "libcurand.so.10",
    "libcufft.so.12",
    "libcudnn.so.9",
    "libcudnn_graph.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_adv.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
    "libnvinfer.so.10",
    "libnvinfer_plugin.so.10",
    "libnvonnxparser.so.10",
];

static PRELOADED: LazyLock<Vec<PathBuf>> = LazyLock::new(|| {
    let Ok(library) = crate::library::find_library() else { return Vec::new() };
    let dirs = wheel_library_dirs(&library);
    let mut loaded = Vec::new();
    for name in GPU_LIBRARIES {
        if let Some(path) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            match ort::util::preload_dylib(&path) {
                Ok(()) => loaded.push(path),
                Err(e) => tracing::debug!(library = %path.display(), error = %e, "could not preload"),
            }
        }
    }
    loaded
});

/// Loads the GPU libraries that sit in the ONNX Runtime library's own
/// venv, so the CUDA and TensorRT providers find them without
/// LD_LIBRARY_PATH (as `onnxruntime.preload_dylibs()` does in Python).
/// Libraries found elsewhere (LD_LIBRARY_PATH, the system) still work.
pub fn preload_gpu_libraries() -> &'static [PathBuf] {
    &PRELOADED
}

/// `…/site-packages/onnxruntime/capi/libonnxruntime.so.*` →
/// `…/site-packages/nvidia/*/lib` and `…/site-packages/tensorrt_libs`.
pub fn wheel_library_dirs(library: &Path) -> Vec<PathBuf> {
    let Some(site) = library.parent().and_then(Path::parent).and_then(Path::parent) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(site.join("nvidia"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("lib"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let trt = site.join("tensorrt_libs");
    if trt.is_dir() {
        dirs.push(trt);
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("CUDA:1".parse::<Device>().unwrap(), Device::Cuda(1));
        assert_eq!("tensorrt:2".parse::<Device>().unwrap(), Device::TensorRt(2));
        assert_eq!("trt".parse::<Device>().unwrap(), Device::TensorRt(0));
        for bad in ["gpu", "cuda:x", "cpu:0", "", "cuda:-1"] {
            assert!(bad.parse::<Device>().is_err(), "{bad:?} parsed");
        }
        for d in [Device::Cpu, Device::Cuda(3), Device::TensorRt(0)] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
        assert_eq!("cpu".parse::<Fallback>().unwrap(), Fallback::Cpu);
        assert!("warn".parse::<Fallback>().is_err());
    }

    #[test]
    fn gpu_batches_are_larger_by_default() {
        assert!(Device::Cuda(0).default_batch_size() > Device::Cpu.default_batch_size());
        assert!(Device::TensorRt(0).default_serve_batch_size() > Device::Cpu.default_serve_batch_size());
    }

    #[test]
    fn engine_cache_is_per_model() {
        let o = DeviceOptions::new(Device::TensorRt(0), Fallback::Error, false, Some("/c".into()));
        assert_eq!(o.engine_cache_for("abc"), PathBuf::from("/c/abc"));
        assert_ne!(o.engine_cache_for("abc"), o.engine_cache_for("def"));
    }

    /// The layout `make setup-gpu` (a venv) and the Dockerfile's `gpu`
    /// target (one site-packages at /opt/ort) both give: the libraries sit
    /// beside `onnxruntime/`.
    #[test]
    fn finds_the_wheels_libraries_beside_onnxruntime() {
        let site = tempfile::tempdir().unwrap();
        let capi = site.path().join("onnxruntime/capi");
        for d in [capi.clone(), site.path().join("nvidia/cu13/lib"), site.path().join("nvidia/cudnn/lib")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(site.path().join("nvidia/cu13/include")).unwrap();
        let dirs = wheel_library_dirs(&capi.join("libonnxruntime.so.1.31.1"));
        assert_eq!(dirs, vec![site.path().join("nvidia/cu13/lib"), site.path().join("nvidia/cudnn/lib")]);
        std::fs::create_dir_all(site.path().join("tensorrt_libs")).unwrap();
        assert_eq!(wheel_library_dirs(&capi.join("libonnxruntime.so.1.31.1")).len(), 3);
    }

    #[test]
    fn explains_registration_errors() {
        let e = explain(
            Device::Cuda(0),
            "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory",
        );
        assert!(e.starts_with("CUDA execution provider unavailable: Failed to load library"), "{e}");
        assert!(e.contains("libcublasLt.so.13") && e.contains("make setup-gpu"), "{e}");
        let e = explain(Device::TensorRt(0), "TensorRT execution provider is not enabled in this build.");
        assert!(e.contains("CPU build"), "{e}");
    }
}
