//! A minimal in-process OTLP trace receiver for integration tests: OTLP/HTTP
//! (`POST /v1/traces`, `application/x-protobuf`) or OTLP/gRPC (`TraceService/Export`),
//! bound to 127.0.0.1:0, storing every span it receives.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An attribute value, flattened.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Other(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// An integer, or a string holding one (see [`Span::num_attr`]).
    pub fn as_num(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// A span event.
#[derive(Clone, Debug)]
pub struct Event {
    pub name: String,
    pub attributes: BTreeMap<String, Value>,
}

/// One received span, ids in lowercase hex (empty parent: a root span).
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub attributes: BTreeMap<String, Value>,
    pub events: Vec<Event>,
    /// `Status.code`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// The resource's `service.name`.
    pub service_name: Option<String>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }
    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }
    /// An integer attribute, also when exported as its decimal string:
    /// tracing-opentelemetry 0.34 has no `record_u64`, so unsigned `tracing` fields
    /// (e.g. `attempt = attempt` with a `u32`) arrive as strings.
    pub fn num_attr(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_num)
    }
}

#[derive(Default)]
struct Store {
    spans: Vec<Span>,
    /// Requests that were not a well-formed OTLP export.
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Store>>;

/// The wire protocol the receiver speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

impl Protocol {
    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` value.
    pub fn env_value(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    endpoint: String,
    store: Shared,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 and an OS-chosen port.
    pub fn start(protocol: Protocol) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        let store: Shared = Arc::default();
        let addr = match protocol {
            Protocol::HttpProtobuf => {
                let listener = rt
                    .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                    .expect("bind the OTLP/HTTP receiver");
                let addr = listener.local_addr().expect("local addr");
                rt.spawn(serve_http(listener, store.clone()));
                addr
            }
            Protocol::Grpc => {
                let incoming = rt
                    .block_on(async {
                        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
                    })
                    .expect("bind the OTLP/gRPC receiver");
                let addr = incoming.local_addr().expect("local addr");
                let svc = TraceServiceServer::new(GrpcReceiver {
                    store: store.clone(),
                });
                rt.spawn(async move {
                    let _ = tonic::transport::Server::builder()
                        .serve_with_incoming(svc, incoming)
                        .await;
                });
                addr
            }
        };
        Receiver {
            endpoint: format!("http://{addr}"),
            store,
            rt: Some(rt),
        }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.store.lock().unwrap().spans.clone()
    }

    /// Malformed requests received so far.
    pub fn errors(&self) -> Vec<String> {
        self.store.lock().unwrap().errors.clone()
    }

    /// Polls until `done` holds for the received spans, at most `limit`; returns them
    /// either way (the caller asserts).
    pub fn wait_for(&self, limit: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + limit;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value(v: &Option<AnyValue>) -> Value {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Value::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => Value::Int(*i),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
        other => Value::Other(format!("{other:?}")),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(&kv.value)))
        .collect()
}

fn record(store: &Shared, req: ExportTraceServiceRequest) {
    let mut spans = vec![];
    for rs in req.resource_spans {
        let service_name = rs.resource.as_ref().and_then(|r| {
            attributes(&r.attributes)
                .get("service.name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    attributes: attributes(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| Event {
                            name: e.name.clone(),
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                    status_code: s.status.as_ref().map_or(0, |st| st.code),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    store.lock().unwrap().spans.extend(spans);
}

async fn serve_http(listener: tokio::net::TcpListener, store: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let store = store.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle_http(req, store.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle_http(
    req: Request<Incoming>,
    store: Shared,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    let what = format!("{} {}", req.method(), req.uri().path());
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" {
        store
            .lock()
            .unwrap()
            .errors
            .push(format!("unexpected {what}"));
        return Ok(reply(StatusCode::NOT_FOUND, vec![]));
    }
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if ctype != "application/x-protobuf" {
        store
            .lock()
            .unwrap()
            .errors
            .push(format!("{what}: content-type {ctype:?}"));
        return Ok(reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, vec![]));
    }
    let body = req.into_body().collect().await?.to_bytes();
    match ExportTraceServiceRequest::decode(body) {
        Ok(r) => {
            record(&store, r);
            Ok(reply(
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            ))
        }
        Err(e) => {
            store.lock().unwrap().errors.push(format!("{what}: {e}"));
            Ok(reply(StatusCode::BAD_REQUEST, vec![]))
        }
    }
}

struct GrpcReceiver {
    store: Shared,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record(&self.store, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}
