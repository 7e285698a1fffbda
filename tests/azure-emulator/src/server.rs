//! The HTTPS server: builder, handle, accept loop, routing by service, request logging.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::arm::state::{AdvanceCtx, ArmState, HookJob, HookWhat};
use crate::clock::{Clock, rfc3339_now};
use crate::config::EmulatorConfig;
use crate::faults::{FaultControl, FaultState};
use crate::graph::directory::Directory;
use crate::hook::{ClusterBackingHook, VmBackingHook};
use crate::http::{Req, Resp, split_path};
use crate::keyvault::VaultState;
use crate::log::{LogEntry, RequestLog};
use crate::token::TokenSigner;
use crate::{acr, arcdp, arm, control, entra, graph, keyvault, redact, tls};

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    pub(crate) clock: Clock,
    /// How LRO responses say when to poll again.
    pub(crate) wait_hint: crate::lro::WaitHint,
    pub(crate) base_url: String,
    pub(crate) ca_pem_path: PathBuf,
    pub(crate) signer: TokenSigner,
    pub(crate) faults: FaultControl,
    pub(crate) log: RequestLog,
    arm: Mutex<ArmState>,
    vault: Mutex<VaultState>,
    directory: Mutex<Directory>,
    hook: RwLock<Option<Arc<dyn VmBackingHook>>>,
    cluster_hook: RwLock<Option<Arc<dyn ClusterBackingHook>>>,
    graph_forbidden: AtomicBool,
    /// The Arc data plane refuses agents (503) while set: an agent that connects late.
    pub(crate) arc_refuse: AtomicBool,
}

impl Shared {
    pub(crate) fn lock_arm(&self) -> MutexGuard<'_, ArmState> {
        self.arm.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_vault(&self) -> MutexGuard<'_, VaultState> {
        self.vault.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_directory(&self) -> MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a new principal stays invisible to ARM (Entra replication).
    pub(crate) fn principal_replication(&self) -> std::time::Duration {
        self.clock.scaled(self.config.principal_replication_secs)
    }

    pub(crate) fn hook_is_set(&self) -> bool {
        self.hook.read().map(|h| h.is_some()).unwrap_or(false)
    }

    pub(crate) fn cluster_hook_is_set(&self) -> bool {
        self.cluster_hook
            .read()
            .map(|h| h.is_some())
            .unwrap_or(false)
    }

    pub(crate) fn graph_forbidden(&self) -> bool {
        self.graph_forbidden.load(Ordering::SeqCst)
    }

    pub(crate) fn set_graph_forbidden(&self, f: bool) {
        self.graph_forbidden.store(f, Ordering::SeqCst);
    }

    pub(crate) fn advance_ctx(&self) -> AdvanceCtx<'_> {
        AdvanceCtx {
            registration_propagation: self.clock.scaled(self.config.registration_propagation_secs),
            base_url: &self.base_url,
            tenant: &self.config.tenant_id,
        }
    }

    /// Tells the hooks a backed VM or managed cluster was deleted.
    /// With `op_id`, that operation waits for the release.
    pub(crate) fn spawn_release(self: &Arc<Self>, resource_id: String, op_id: Option<String>) {
        let is_cluster = resource_id
            .to_ascii_lowercase()
            .contains("/providers/microsoft.containerservice/managedclusters/");
        let vm_hook = self.hook.read().ok().and_then(|h| h.clone());
        let cluster_hook = self.cluster_hook.read().ok().and_then(|h| h.clone());
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            match (is_cluster, vm_hook, cluster_hook) {
                (true, _, Some(h)) => h.cluster_deleted(resource_id).await,
                (false, Some(h), _) => h.vm_deleted(resource_id).await,
                _ => {}
            }
            if let Some(id) = op_id {
                let mut st = shared.lock_arm();
                if let Some(op) = st.ops.get_mut(&id) {
                    op.hooks_pending = op.hooks_pending.saturating_sub(1);
                }
            }
        });
    }

    /// Runs the VM hook's power action for `job`; the operation waits for it.
    pub(crate) fn spawn_power(self: &Arc<Self>, job: crate::arm::state::PowerJob) {
        let hook = self.hook.read().ok().and_then(|h| h.clone());
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let result = match hook {
                Some(h) => h.vm_power(job.resource_id, job.change).await,
                None => Ok(()),
            };
            let mut st = shared.lock_arm();
            if let Some(op) = st.ops.get_mut(&job.op_id) {
                if let Err(e) = result {
                    op.hook_error = Some(e);
                }
                op.hooks_pending = op.hooks_pending.saturating_sub(1);
            }
        });
    }

    /// Runs the VM hook for `job` and records its result on the operation.
    pub(crate) fn spawn_hook(self: &Arc<Self>, job: HookJob) {
        let hook = self.hook.read().ok().and_then(|h| h.clone());
        let cluster_hook = self.cluster_hook.read().ok().and_then(|h| h.clone());
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let result = match (job.what, hook, cluster_hook) {
                (HookWhat::Vm(vm), Some(h), _) => h.vm_created(vm).await.map(Backed::Vm),
                (HookWhat::Cluster(c), _, Some(h)) => {
                    h.cluster_reconciled(c).await.map(Backed::Cluster)
                }
                _ => Err("the backing hook was removed".to_string()),
            };
            let mut st = shared.lock_arm();
            match result {
                Ok(Backed::Vm(backing)) => {
                    st.backings.insert(job.resource_key, backing);
                }
                Ok(Backed::Cluster(backing)) => {
                    st.cluster_backings.insert(job.resource_key, backing);
                }
                Err(e) => {
                    if let Some(op) = st.ops.get_mut(&job.op_id) {
                        op.hook_error = Some(e);
                    }
                }
            }
            if let Some(op) = st.ops.get_mut(&job.op_id) {
                op.hooks_pending = op.hooks_pending.saturating_sub(1);
            }
        });
    }
}

/// A hook's answer.
enum Backed {
    Vm(crate::hook::VmBacking),
    Cluster(crate::hook::ClusterBacking),
}

/// Entry point: `Emulator::builder()`.
pub struct Emulator;

impl Emulator {
    /// A builder with the default configuration, time scale 1 and a random port.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder {
            config: EmulatorConfig::default(),
            time_scale: 1.0,
            port: 0,
            ip: None,
            hook: None,
            cluster_hook: None,
        }
    }
}

/// Configures and starts an emulator.
pub struct EmulatorBuilder {
    config: EmulatorConfig,
    time_scale: f64,
    port: u16,
    ip: Option<std::net::IpAddr>,
    hook: Option<Arc<dyn VmBackingHook>>,
    cluster_hook: Option<Arc<dyn ClusterBackingHook>>,
}

impl EmulatorBuilder {
    /// Multiplies every emulated duration (0.01: a 4 s LRO takes 40 ms).
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: EmulatorConfig) -> Self {
        self.config = config;
        self
    }

    /// Listens on this port of 127.0.0.1 (0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Listens on this address instead of 127.0.0.1 (the sandbox: an address its test hosts
    /// reach); the base URL and the certificate name it.
    pub fn listen_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Installs a VM backing hook from the start.
    pub fn vm_backing_hook(mut self, hook: Arc<dyn VmBackingHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Installs a managed-cluster backing hook from the start (without one, a managed
    /// cluster's credentials name an API server nobody serves).
    pub fn cluster_backing_hook(mut self, hook: Arc<dyn ClusterBackingHook>) -> Self {
        self.cluster_hook = Some(hook);
        self
    }

    /// Generates the CA, binds, and starts serving.
    pub async fn start(self) -> std::io::Result<EmulatorHandle> {
        let material = tls::generate(self.ip)?;
        let ca_pem_path = tls::write_ca(&material.ca_pem, self.config.ca_pem_path.as_deref())?;
        let ip = self.ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let listener = TcpListener::bind(SocketAddr::from((ip, self.port))).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("https://{}", addr);
        let mut arm_state = ArmState::default();
        arm::seed(&mut arm_state, &self.config);
        let faults = FaultControl {
            state: Arc::new(Mutex::new(FaultState::new(
                self.config.fault_seed,
                self.config.read_limit,
                self.config.write_limit,
                self.config.rate_window_secs,
            ))),
        };
        let shared = Arc::new(Shared {
            graph_forbidden: AtomicBool::new(self.config.graph_forbidden),
            arc_refuse: AtomicBool::new(false),
            clock: Clock::new(self.time_scale),
            wait_hint: crate::lro::WaitHint::new(
                self.config.lro_retry_after_secs,
                self.config.min_retry_after_secs,
                self.time_scale,
            ),
            config: self.config,
            base_url,
            ca_pem_path: ca_pem_path.clone(),
            signer: TokenSigner::new(),
            faults,
            log: RequestLog::default(),
            arm: Mutex::new(arm_state),
            vault: Mutex::new(VaultState::default()),
            directory: Mutex::new(Directory::default()),
            hook: RwLock::new(self.hook),
            cluster_hook: RwLock::new(self.cluster_hook),
        });
        let tls = material.server_config.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(material.server_config);
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&shared)));
        Ok(EmulatorHandle {
            shared,
            addr,
            ca_pem: material.ca_pem,
            tls,
            task: Some(task),
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let shared = Arc::clone(&shared);
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(serve(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Which service a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Control,
    Metadata,
    Entra,
    Arm,
    KeyVault,
    Graph,
    Acr,
    Oidc,
    ArcDataPlane,
    Unknown,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Control => "control",
            Service::Metadata => "metadata",
            Service::Entra => "entra",
            Service::Arm => "arm",
            Service::KeyVault => "keyvault",
            Service::Graph => "graph",
            Service::Acr => "acr",
            Service::Oidc => "oidc",
            Service::ArcDataPlane => "arc",
            Service::Unknown => "unknown",
        }
    }
}

fn classify(segs: &[String]) -> Service {
    let first = segs
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    match first.as_str() {
        "_emulator" => Service::Control,
        "metadata" if segs.len() == 2 && segs[1].eq_ignore_ascii_case("endpoints") => {
            Service::Metadata
        }
        "subscriptions" | "tenants" => Service::Arm,
        "secrets" | "deletedsecrets" => Service::KeyVault,
        "v1.0" | "beta" => Service::Graph,
        "oauth2" | "v2" => Service::Acr,
        "oidc" => Service::Oidc,
        _ if arcdp::is_arc_path(segs) => Service::ArcDataPlane,
        _ if entra::is_entra_path(segs) => Service::Entra,
        _ => Service::Unknown,
    }
}

fn log_body(service: Service, req: &Req) -> (Option<Value>, bool) {
    if req.body.is_empty() {
        return (None, false);
    }
    match service {
        Service::Entra | Service::Acr | Service::Control | Service::ArcDataPlane => (None, true),
        _ => match serde_json::from_slice::<Value>(&req.body) {
            Ok(mut v) => {
                if service == Service::KeyVault {
                    redact::redact_secret_body(&mut v);
                } else {
                    redact::redact_json(&mut v);
                }
                (Some(v), false)
            }
            Err(_) => (None, true),
        },
    }
}

async fn serve(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().map(str::to_string);
    let query = raw_query
        .as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        segs: split_path(&path),
        path,
        query,
        raw_query,
        headers: parts.headers,
        body,
    };
    let timestamp = rfc3339_now();
    let service = classify(&req.segs);
    let resp = match service {
        Service::Control => control::handle(&shared, &req),
        Service::Metadata => arm::metadata::endpoints(&shared.base_url, &req),
        Service::Entra => entra::handle(&shared, &req),
        Service::Arm => arm::handle(&shared, &req),
        Service::KeyVault => keyvault::handle(&shared, &req),
        Service::Graph => graph::handle(&shared, &req),
        Service::Acr => acr::handle(&shared, &req),
        Service::Oidc => match arm::oidc_document(&shared.base_url, &req.segs) {
            Some(doc) => Resp::json(StatusCode::OK, &doc),
            None => Resp::json(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        },
        Service::ArcDataPlane => arcdp::handle(&shared, &req),
        Service::Unknown => Resp::json(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": "NotFound", "message": format!("No emulated service at '{}'.", req.path)}}),
        ),
    };
    if service != Service::Control {
        let (body, withheld) = log_body(service, &req);
        shared.log.push(LogEntry {
            seq: 0,
            timestamp,
            service: service.name().into(),
            method: req.method.to_string(),
            path: req.path.clone(),
            query: req.raw_query.clone(),
            api_version: req.query_param("api-version").map(str::to_string),
            body,
            body_withheld: withheld,
            status: resp.status.as_u16(),
            correlation_id: resp
                .header("x-ms-correlation-request-id")
                .map(str::to_string),
        });
    }
    let mut builder = Response::builder().status(resp.status);
    for (name, value) in &resp.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Full::new(resp.body)).unwrap_or_else(|_| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"response build error")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// A running emulator. Dropping it stops the server.
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    tls: Arc<rustls::ServerConfig>,
    task: Option<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// `https://127.0.0.1:<port>` (no trailing slash): ARM, Entra authority host, Key Vault
    /// URL, Graph and ACR all live here.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS configuration the emulator serves with (its address's certificate, signed by
    /// its CA): other sandbox services on the same address can serve with it too.
    pub fn tls_server_config(&self) -> Arc<rustls::ServerConfig> {
        self.tls.clone()
    }

    /// The CA certificate (PEM file) clients must trust.
    pub fn ca_pem_path(&self) -> &Path {
        &self.shared.ca_pem_path
    }

    /// The CA certificate, PEM text.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The Entra authority: `<base_url>/<tenant>`.
    pub fn authority(&self) -> String {
        format!("{}/{}", self.shared.base_url, self.shared.config.tenant_id)
    }

    /// The configuration in force.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.shared.config.tenant_id
    }

    /// The first (default) subscription id.
    pub fn subscription_id(&self) -> &str {
        self.shared
            .config
            .subscriptions
            .first()
            .map_or("", String::as_str)
    }

    /// The request log.
    pub fn request_log(&self) -> RequestLog {
        self.shared.log.clone()
    }

    /// Fault injection.
    pub fn faults(&self) -> FaultControl {
        self.shared.faults.clone()
    }

    /// Installs (or replaces) the VM backing hook.
    pub fn set_vm_backing_hook(&self, hook: Arc<dyn VmBackingHook>) {
        if let Ok(mut h) = self.shared.hook.write() {
            *h = Some(hook);
        }
    }

    /// Removes the VM backing hook.
    pub fn clear_vm_backing_hook(&self) {
        if let Ok(mut h) = self.shared.hook.write() {
            *h = None;
        }
    }

    /// Makes Graph answer 403 `Authorization_RequestDenied` (or stop doing so).
    pub fn set_graph_forbidden(&self, forbidden: bool) {
        self.shared.set_graph_forbidden(forbidden);
    }

    /// Stops accepting connections and closes the open ones.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
