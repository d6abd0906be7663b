//! Tracing setup shared by every binary: human-readable logs by default,
//! JSON lines with `--log-format json`; the level from `--log-level` /
//! `HOURGLASS_LOG`, else `RUST_LOG`, else the command's default (moved by
//! `-v`/`-q`).

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; use text or json")),
        }
    }
}

/// Installs the global subscriber; logs go to stderr so stdout stays for
/// command output (`status --json`).
pub fn init(format: LogFormat) {
    let _ = init_with_default(format, "info", false);
}

/// As `init`, with `level` (a level or an `EnvFilter` directive list): the
/// filter when `explicit`, else only when `RUST_LOG` is unset. An explicit
/// level that is not a valid filter is an error.
pub fn init_with_default(format: LogFormat, level: &str, explicit: bool) -> Result<(), String> {
    let from_env = if explicit { None } else { EnvFilter::try_from_default_env().ok() };
    let filter = match from_env {
        Some(f) => f,
        None => EnvFilter::try_new(level).map_err(|e| format!("--log-level {level:?}: {e}"))?,
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    Ok(())
}
