//! KServe v2 over gRPC: `inference.GRPCInferenceService` (liveness,
//! readiness, server and model metadata, `ModelInfer` with typed contents
//! or `raw_input_contents`), answered from the same [`Server`] as HTTP.
//! Outputs go back in `raw_output_contents`, as Triton sends them.

use super::limits::{Charge, InflightBytes};
use super::{Given, GivenInput, Refusal, ServeError, Server};
use bytes::Bytes;
use http_body::Frame;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// The generated protocol types, server and client.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::*;

/// The largest message either way (a request of ~1M FP32 values is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// HTTP/2 flow-control window and frame size (the defaults, 64 KiB and
/// 16 KiB, split a 256-row request into frames and window updates).
pub const WINDOW: u32 = 4 << 20;
pub const FRAME: u32 = 1 << 20;

/// Binds `addr` and serves gRPC until `stop` is cancelled; then stops
/// accepting and waits for open calls to finish.
pub async fn serve(
    server: Arc<Server>,
    addr: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let inflight = server.inflight().clone();
    let service = Budgeted {
        inner: GrpcInferenceServiceServer::new(Grpc { server })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        inflight,
    };
    let task = tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            // Tensor payloads are tens of KiB: whole in one frame, no
            // window updates per request.
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW * 4)
            .max_frame_size(FRAME)
            .serve_with_incoming_shutdown(service, incoming, stop.cancelled_owned())
            .await
        {
            tracing::warn!(error = %e, "the gRPC server stopped");
        }
    });
    Ok((bound, task))
}

struct Grpc {
    server: Arc<Server>,
}

/// The generated service behind the server's in-flight budget: a call's
/// request frames are drawn from the budget as they arrive, before tonic
/// buffers and decodes them, and held until the call is answered. Past the
/// budget the call ends with `RESOURCE_EXHAUSTED` and nothing more of it
/// is buffered.
#[derive(Clone)]
struct Budgeted<S> {
    inner: S,
    inflight: InflightBytes,
}

impl<S: NamedService> NamedService for Budgeted<S> {
    const NAME: &'static str = S::NAME;
}

type HttpRequest = http::Request<tonic::body::Body>;

impl<S> tower_service::Service<HttpRequest> for Budgeted<S>
where
    S: tower_service::Service<HttpRequest>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let held = Arc::new(Mutex::new(Charge::default()));
        let inflight = self.inflight.clone();
        let counted = req.map(|inner| tonic::body::Body::new(Counted { inner, inflight, held: held.clone() }));
        let answer = self.inner.call(counted);
        Box::pin(async move {
            let r = answer.await;
            drop(held);
            r
        })
    }
}

/// A request body whose data frames are charged to the budget.
struct Counted {
    inner: tonic::body::Body,
    inflight: InflightBytes,
    held: Arc<Mutex<Charge>>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    match this.inflight.take(data.len(), "the request message") {
                        Ok(c) => this.held.lock().unwrap_or_else(|p| p.into_inner()).merge(c),
                        Err(e) => return Poll::Ready(Some(Err(status(e)))),
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn status(e: ServeError) -> Status {
    match e.kind {
        Refusal::BadRequest => Status::invalid_argument(e.message),
        Refusal::NotFound => Status::not_found(e.message),
        Refusal::Busy | Refusal::TooLarge => Status::resource_exhausted(e.message),
        Refusal::Timeout => Status::deadline_exceeded(e.message),
        Refusal::Unavailable => Status::unavailable(e.message),
        Refusal::Internal => Status::internal(e.message),
    }
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: self.server.is_ready() }))
    }

    async fn model_ready(&self, req: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        self.server.loaded(&r.name, version(&r.version)).map_err(status)?;
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "hourglass".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let m = self.server.metadata(&r.name, version(&r.version)).map_err(status)?;
        let tensors = |ts: Vec<super::TensorMeta>| -> Vec<TensorMetadata> {
            ts.into_iter()
                .map(|t| TensorMetadata { name: t.name, datatype: t.datatype.into(), shape: t.shape })
                .collect()
        };
        // The protocol's message has no parameters: the device (and the
        // sha256) travel as response metadata.
        let (sha256, device) = (m.sha256.clone(), m.device.clone());
        let mut response = Response::new(ModelMetadataResponse {
            name: m.name,
            versions: vec![m.version],
            platform: "onnxruntime_onnx".into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        });
        for (key, value) in [("hourglass-sha256", sha256), ("hourglass-device", device)] {
            if let Ok(v) = value.parse() {
                response.metadata_mut().insert(key, v);
            }
        }
        Ok(response)
    }

    async fn model_infer(&self, req: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let r = req.into_inner();
        let arrival = self.server.arrival(&r.model_name);
        let raw = &r.raw_input_contents;
        if !raw.is_empty() && raw.len() != r.inputs.len() {
            return Err(Status::invalid_argument(format!(
                "raw_input_contents has {} entries for {} inputs; give one per input, in order",
                raw.len(),
                r.inputs.len()
            )));
        }
        let mut given = Vec::with_capacity(r.inputs.len());
        for (i, input) in r.inputs.iter().enumerate() {
            let data = if let Some(bytes) = raw.get(i) {
                Given::Raw(bytes)
            } else if let Some(c) = &input.contents {
                if !c.fp32_contents.is_empty() {
                    Given::F32(&c.fp32_contents)
                } else if !c.int64_contents.is_empty() {
                    Given::I64(&c.int64_contents)
                } else {
                    Given::Missing
                }
            } else {
                Given::Missing
            };
            given.push(GivenInput { name: &input.name, datatype: &input.datatype, shape: input.shape.clone(), data });
        }
        let outputs: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
        let answer = self
            .server
            .infer(&r.model_name, version(&r.model_version), given, &outputs, arrival)
            .await
            .map_err(status)?;
        let mut tensors = Vec::with_capacity(answer.outputs.len());
        let mut raw_out = Vec::with_capacity(answer.outputs.len());
        for t in answer.outputs {
            let datatype = t.data.datatype();
            let mut bytes = Vec::new();
            t.data.extend_le_bytes(&mut bytes);
            tensors.push(InferOutputTensor {
                name: t.name,
                datatype: datatype.into(),
                shape: t.shape,
                parameters: Default::default(),
                contents: None,
            });
            raw_out.push(bytes.into());
        }
        Ok(Response::new(ModelInferResponse {
            model_name: answer.model,
            model_version: answer.version,
            id: r.id,
            parameters: Default::default(),
            outputs: tensors,
            raw_output_contents: raw_out,
        }))
    }
}
