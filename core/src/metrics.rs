//! The Prometheus endpoint every long-running binary exposes: a
//! `prometheus-client` registry served as text on `GET /metrics`, and the
//! probes, by a small hyper 1 HTTP/1 server: `/healthz` (liveness: the
//! process makes progress; restart it otherwise) and `/readyz` (readiness:
//! it can do its work now), each `200 ok` or `503` with the reason.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use prometheus_client;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the probes ask of a process. Each answer is cheap (no IO): the
/// process records what it observed, the probe reads it.
pub trait Health: Send + Sync {
    /// Liveness: `Err(reason)` when the process is stuck and only a restart
    /// helps.
    fn live(&self) -> Result<(), String> {
        Ok(())
    }
    /// Readiness: `Err(reason)` while it cannot do its work (a model not
    /// loaded yet, a queue it cannot reach).
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
    /// Another JSON document served on the same port (the scaler's `/keda`):
    /// `None` for a path it does not serve (404), `Err(reason)` while it
    /// has nothing current to say (503).
    fn json(&self, _path: &str) -> Option<Result<String, String>> {
        None
    }
}

/// For processes whose liveness and readiness are their being up.
pub struct Up;

impl Health for Up {}

/// What `hourglass_build_info` says about the running binary.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: String,
    /// The git revision it was built from (`unknown` outside a checkout).
    pub revision: String,
}

/// Registers `hourglass_build_info{version, revision} 1`: which build runs
/// where, for dashboards and for joins in alert queries.
pub fn register_build_info(registry: &mut Registry, info: &BuildInfo) {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let family = Family::<Vec<(String, String)>, Gauge>::default();
    family
        .get_or_create(&vec![("version".into(), info.version.clone()), ("revision".into(), info.revision.clone())])
        .set(1);
    registry.register("hourglass_build_info", "The running binary's version and git revision", family);
}

/// How long a scraper may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds `addr` and serves `registry` and the probes until the task is
/// dropped. Returns the bound address (port 0 picks a free one) once
/// listening.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Arc<dyn Health>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    continue;
                }
            };
            let (registry, health) = (registry.clone(), health.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(req, registry.clone(), health.clone()));
                // The endpoints read no body; a client that never finishes its
                // headers (slow loris) is cut off instead of holding a task.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
                }
            });
        }
    });
    Ok((local, task))
}

async fn respond(
    req: Request<Incoming>,
    registry: Arc<Registry>,
    health: Arc<dyn Health>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, content_type.parse().expect("static header"));
        Ok(response)
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &registry) {
                Ok(()) => reply(StatusCode::OK, CONTENT_TYPE, text),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("encoding metrics: {e}\n")),
            }
        }
        (&Method::GET, path @ ("/healthz" | "/readyz")) => {
            match if path == "/healthz" { health.live() } else { health.ready() } {
                Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                Err(reason) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{reason}\n")),
            }
        }
        (&Method::GET, path) => match health.json(path) {
            Some(Ok(body)) => reply(StatusCode::OK, "application/json", body),
            Some(Err(reason)) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{reason}\n")),
            None => reply(StatusCode::NOT_FOUND, "text/plain", "not found; try /metrics\n".into()),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found; try /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_registry_as_openmetrics_text() {
        let mut registry = Registry::default();
        let gauge: Gauge = Gauge::default();
        gauge.set(7);
        registry.register("hourglass_test_things", "Things", gauge);
        struct NotReady;
        impl Health for NotReady {
            fn ready(&self) -> Result<(), String> {
                Err("model not loaded yet".into())
            }
        }
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), Arc::new(registry), Arc::new(NotReady)).await.unwrap();
        let body = get(addr, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("hourglass_test_things 7"), "{body}");
        assert!(body.contains("# EOF"), "{body}");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let ready = get(addr, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("model not loaded yet"), "{ready}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }

    // Paused time: the header timeout passes at once once the server idles.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let (addr, task) =
            serve("127.0.0.1:0".parse().unwrap(), Arc::new(Registry::default()), Arc::new(Up)).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        assert!(started.elapsed() >= HEADER_READ_TIMEOUT, "closed after {:?}", started.elapsed());
        assert!(started.elapsed() < HEADER_READ_TIMEOUT * 2, "held for {:?}", started.elapsed());
        // Still serving.
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        task.abort();
    }
}
