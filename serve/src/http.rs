//! KServe v2 over HTTP/1.1: health, server and model metadata, `infer` with
//! JSON tensors or the binary tensor data extension
//! (`Inference-Header-Content-Length`), and `/metrics`.

use super::limits::Charge;
use super::{Answer, Given, GivenInput, Refusal, ServeError, Server};
use bytes::{Bytes, BytesMut};
use hourglass_runtime::ColumnData;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves until `stop` is cancelled; then stops
/// accepting, lets open connections finish, and returns.
pub async fn serve(
    server: Arc<Server>,
    addr: SocketAddr,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let open = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue }
                },
                _ = stop.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let (server, registry, permit) = (server.clone(), registry.clone(), open.clone().acquire_owned().await);
            let stop = stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| {
                    let (server, registry) = (server.clone(), registry.clone());
                    async move { Ok::<_, std::convert::Infallible>(handle(&server, req, &registry).await) }
                });
                // A client that sends its headers slowly is cut off (slow
                // loris); a slow body is bounded in `read_body`.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "connection ended") } }
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        // Every connection done: in-flight requests answered.
        let _ = open.acquire_many(Semaphore::MAX_PERMITS as u32).await;
    });
    Ok((bound, task))
}

async fn handle(server: &Server, req: Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match (req.method(), parts.as_slice()) {
        (&Method::GET, ["v2", "health", "live"]) => empty(StatusCode::OK),
        (&Method::GET, ["v2", "health", "ready"]) => {
            empty(if server.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE })
        }
        (&Method::GET, ["v2"]) => json_response(
            StatusCode::OK,
            &json!({"name": "hourglass", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
        ),
        (&Method::GET, ["metrics"]) => {
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, registry);
            bytes_response(StatusCode::OK, "text/plain; version=0.0.4", text.into_bytes(), None)
        }
        (&Method::GET, ["v2", "models", name, rest @ ..]) => match split_version(rest) {
            (version, []) => match server.metadata(name, version) {
                Ok(m) => json_response(StatusCode::OK, &metadata_json(&m)),
                Err(e) => refuse(e),
            },
            (version, ["ready"]) => match server.loaded(name, version) {
                Ok(_) => empty(StatusCode::OK),
                Err(e) => refuse(e),
            },
            _ => error(StatusCode::NOT_FOUND, format!("no route {path}")),
        },
        (&Method::POST, ["v2", "models", name, rest @ ..]) => match split_version(rest) {
            (version, ["infer"]) => infer(server, name, version, req).await,
            _ => error(StatusCode::NOT_FOUND, format!("no route {path}")),
        },
        _ => error(StatusCode::NOT_FOUND, format!("no route {} {path}", req.method())),
    }
}

/// `versions/V/rest…` → (Some(V), rest…).
fn split_version<'a, 'b>(rest: &'b [&'a str]) -> (Option<&'a str>, &'b [&'a str]) {
    match rest {
        ["versions", v, tail @ ..] => (Some(*v), tail),
        tail => (None, tail),
    }
}

fn metadata_json(m: &super::ModelMeta) -> Value {
    let tensors = |ts: &[super::TensorMeta]| -> Vec<Value> {
        ts.iter().map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})).collect()
    };
    json!({
        "name": m.name,
        "versions": [m.version],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
        "parameters": {"sha256": m.sha256, "device": m.device},
    })
}

/// The request's JSON head. Tensor data stays as received text
/// ([`RawValue`]) until the model's datatype and the shape are checked, so
/// no declared size allocates anything.
#[derive(Deserialize)]
struct InferRequest<'a> {
    id: Option<Value>,
    #[serde(borrow)]
    inputs: Option<Vec<InferInput<'a>>>,
    outputs: Option<Vec<RequestedOutput>>,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct InferInput<'a> {
    name: Option<String>,
    shape: Option<Vec<Value>>,
    datatype: Option<String>,
    parameters: Option<Parameters>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: Option<String>,
    parameters: Option<Parameters>,
}

/// The protocol's parameters: any keys; those read here are typed.
#[derive(Deserialize, Default)]
struct Parameters {
    binary_data_size: Option<Value>,
    binary_data_output: Option<bool>,
    binary_data: Option<bool>,
}

/// Reads a body frame by frame, drawing each frame's bytes from the
/// server's in-flight budget as it arrives (never by a declared length),
/// up to `limit` bytes and within `within`.
async fn read_body(
    server: &Server,
    mut body: Incoming,
    limit: usize,
    within: Duration,
) -> Result<(Bytes, Charge), Response<Full<Bytes>>> {
    let mut charge = Charge::default();
    let mut buf = BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| error(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            if buf.len() + data.len() > limit {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is over {limit} bytes (the message limit or --max-inflight-bytes); send fewer rows per request"
                    ),
                ));
            }
            charge.merge(server.inflight().take(data.len(), "the request body").map_err(refuse)?);
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(within, read).await {
        Ok(Ok(())) => Ok((buf.freeze(), charge)),
        Ok(Err(response)) => Err(response),
        Err(_) => Err(error(StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive within {within:?}"))),
    }
}

async fn infer(server: &Server, name: &str, version: Option<&str>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let arrival = server.arrival(name);
    let header_len = match req.headers().get("inference-header-content-length") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("Inference-Header-Content-Length {v:?} is not a byte count"),
                );
            }
        },
    };
    let limit = super::grpc::MAX_MESSAGE_BYTES;
    // Refused before a byte is read: a declared length over the limit.
    if let Some(n) = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && n > limit as u64
    {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body ({n} bytes) is over {} MiB; send fewer rows per request", limit >> 20),
        );
    }
    // A body larger than the whole budget could never be taken: 413, not 429.
    let cap = limit.min(server.inflight().limit());
    let (body, _body_charge) = match read_body(server, req.into_body(), cap, server.body_timeout()).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let (head, mut binary) = match header_len {
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(n) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Inference-Header-Content-Length {n} exceeds the body's {} bytes", body.len()),
            );
        }
        None => (&body[..], &body[body.len()..]),
    };
    let req: InferRequest<'_> = match serde_json::from_slice(head) {
        Ok(v) => v,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("the request is not a KServe v2 inference request: {e}"));
        }
    };
    let Some(list) = &req.inputs else {
        return error(StatusCode::BAD_REQUEST, "the request has no \"inputs\" array".into());
    };
    let mut given = Vec::with_capacity(list.len());
    for input in list {
        let Some(input_name) = input.name.as_deref() else {
            return error(StatusCode::BAD_REQUEST, "an input has no \"name\"".into());
        };
        let shape: Option<Vec<i64>> = input.shape.as_ref().and_then(|dims| dims.iter().map(|d| d.as_i64()).collect());
        let Some(shape) = shape else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("input {input_name:?}: bad or missing \"shape\" (a list of integers)"),
            );
        };
        // Binary data comes in the order the inputs are listed.
        let size = input.parameters.as_ref().and_then(|p| p.binary_data_size.as_ref());
        let data = if let Some(size) = size {
            let Some(size) = size.as_u64() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("input {input_name:?}: binary_data_size {size} is not a byte count"),
                );
            };
            if size > binary.len() as u64 {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "input {input_name:?}: binary_data_size {size} but only {} bytes follow the header",
                        binary.len()
                    ),
                );
            }
            let (mine, rest) = binary.split_at(size as usize);
            binary = rest;
            Given::Raw(mine)
        } else if let Some(data) = input.data {
            Given::Json(data)
        } else {
            Given::Missing
        };
        given.push(GivenInput { name: input_name, datatype: input.datatype.as_deref().unwrap_or(""), shape, data });
    }
    let binary_default = req.parameters.as_ref().and_then(|p| p.binary_data_output).unwrap_or(false);
    let mut requested: Vec<(&str, bool)> = Vec::new();
    for o in req.outputs.iter().flatten() {
        let Some(n) = o.name.as_deref() else {
            return error(StatusCode::BAD_REQUEST, "a requested output has no \"name\"".into());
        };
        requested.push((n, o.parameters.as_ref().and_then(|p| p.binary_data).unwrap_or(binary_default)));
    }
    let names: Vec<&str> = requested.iter().map(|(n, _)| *n).collect();
    match server.infer(name, version, given, &names, arrival).await {
        Ok(answer) => respond(answer, req.id.clone(), &requested, binary_default),
        Err(e) => refuse(e),
    }
}

fn respond(
    answer: Answer,
    id: Option<Value>,
    requested: &[(&str, bool)],
    binary_default: bool,
) -> Response<Full<Bytes>> {
    let mut entries = Vec::new();
    let mut binary = Vec::new();
    for t in answer.outputs {
        let as_binary = requested.iter().find(|(n, _)| *n == t.name).map(|(_, b)| *b).unwrap_or(binary_default);
        let mut entry = json!({"name": t.name, "datatype": t.data.datatype(), "shape": t.shape});
        if as_binary {
            let before = binary.len();
            t.data.extend_le_bytes(&mut binary);
            entry["parameters"] = json!({"binary_data_size": binary.len() - before});
        } else {
            entry["data"] = match &t.data {
                ColumnData::F32(v) => json!(v),
                ColumnData::F64(v) => json!(v),
                ColumnData::I32(v) => json!(v),
                ColumnData::I64(v) => json!(v),
            };
        }
        entries.push(entry);
    }
    let mut head = json!({"model_name": answer.model, "model_version": answer.version, "outputs": entries});
    if let Some(id) = id {
        head["id"] = id;
    }
    let head = serde_json::to_vec(&head).expect("JSON serializes");
    if binary.is_empty() {
        return bytes_response(StatusCode::OK, "application/json", head, None);
    }
    let len = head.len();
    let mut body = head;
    body.extend(binary);
    bytes_response(StatusCode::OK, "application/octet-stream", body, Some(len))
}

fn refuse(e: ServeError) -> Response<Full<Bytes>> {
    let status = match e.kind {
        Refusal::BadRequest => StatusCode::BAD_REQUEST,
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::Busy => StatusCode::TOO_MANY_REQUESTS,
        Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.message)
}

fn bytes_response(
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    header_len: Option<usize>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, content_type.parse().expect("static header"));
    if let Some(n) = header_len {
        r.headers_mut().insert("inference-header-content-length", n.into());
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    bytes_response(status, "application/json", serde_json::to_vec(v).expect("JSON serializes"), None)
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    bytes_response(status, "application/json", Vec::new(), None)
}

/// The protocol's error body: `{"error": "..."}`.
fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}
