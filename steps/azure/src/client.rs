//! The ARM client: one azure_core pipeline per token audience, transport-level retries of
//! idempotent requests, the shared throttling limiter, correlation ids and LRO polling.

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions as CoreOptions, Context, Method, Pipeline, PipelineSendOptions, Request,
    RetryOptions, Transport, Url, UserAgentOptions,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

use crate::credential;
use crate::lro::{self, Begun, LroKind, LroPoller, LroStatus};
use crate::models::{ErrorResponse, OperationStatus};
use crate::{AzureError, CloudConfig, CredentialConfig, Endpoints, Limiter, limiter_for};

/// Which token a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// Resource Manager (the ARM scope).
    Arm,
    /// Microsoft Graph.
    Graph,
    /// Key Vault: the scope is learned from the vault's 401 challenge.
    KeyVault,
    /// No token (ACR token exchange, which carries its own credentials in the body).
    Anonymous,
}

/// How to build an [`ArmClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The cloud and its endpoints.
    pub cloud: CloudConfig,
    /// How to authenticate.
    pub credential: CredentialConfig,
    /// The subscription the limiter is keyed by (and ARM paths usually name).
    pub subscription: String,
    /// Transport-level retries of one idempotent request.
    pub max_transport_retries: u32,
    /// The longest delay the client waits in line (Retry-After, throttling) before giving
    /// the error back to the engine, which then retries the step with that delay.
    pub max_inline_wait: Duration,
    /// Environment variables for the credential chain; `None`: the process environment.
    pub env: Option<HashMap<String, String>>,
}

impl ClientOptions {
    /// Options for a subscription in a cloud, with defaults for the rest.
    pub fn new(cloud: CloudConfig, credential: CredentialConfig, subscription: &str) -> Self {
        Self {
            cloud,
            credential,
            subscription: subscription.to_string(),
            max_transport_retries: 4,
            max_inline_wait: Duration::from_secs(20),
            env: None,
        }
    }
}

/// A response: status, headers (names lower-cased), body and our correlation id.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The `x-ms-correlation-request-id` we sent.
    pub correlation_id: String,
    /// The URL (without query), for messages.
    pub url: String,
}

impl ArmResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The delay the service asked for: `retry-after-ms`, `x-ms-retry-after-ms`, then
    /// `Retry-After` (seconds).
    pub fn retry_after(&self) -> Option<Duration> {
        for h in ["retry-after-ms", "x-ms-retry-after-ms"] {
            if let Some(ms) = self.header(h).and_then(|v| v.trim().parse::<u64>().ok()) {
                return Some(Duration::from_millis(ms));
            }
        }
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, if it is JSON.
    pub fn json_value(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body decoded into a model.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AzureError> {
        serde_json::from_slice(&self.body).map_err(|e| AzureError::Decode {
            url: self.url.clone(),
            message: e.to_string(),
        })
    }

    /// The error this (non-success) response stands for.
    pub fn error(&self) -> AzureError {
        let (code, message) = match serde_json::from_slice::<ErrorResponse>(&self.body) {
            Ok(ErrorResponse { error: Some(e) }) => (
                e.code
                    .clone()
                    .unwrap_or_else(|| format!("Http{}", self.status)),
                e.describe(),
            ),
            _ => (
                format!("Http{}", self.status),
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(300)
                    .collect(),
            ),
        };
        AzureError::Service {
            status: self.status,
            code,
            message,
            correlation_id: self.correlation_id.clone(),
            retry_after: self.retry_after(),
        }
    }

    /// Itself when successful, else its error.
    pub fn ok(self) -> Result<ArmResponse, AzureError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(self.error())
        }
    }
}

struct Inner {
    endpoints: Endpoints,
    subscription: String,
    arm: Pipeline,
    graph: Pipeline,
    plain: Pipeline,
    credential: Arc<dyn TokenCredential>,
    limiter: Arc<Limiter>,
    vault_scopes: Mutex<HashMap<String, String>>,
    max_retries: u32,
    max_wait: Duration,
}

/// The client. Cheap to clone; share one per subscription and cloud.
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("arm_url", &self.inner.endpoints.arm_url)
            .field("subscription", &self.inner.subscription)
            .finish()
    }
}

fn pipeline(transport: &Transport, auth: Option<(Arc<dyn TokenCredential>, String)>) -> Pipeline {
    let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
    if let Some((credential, scope)) = auth {
        per_try.push(Arc::new(BearerTokenAuthorizationPolicy::new(
            credential,
            [scope],
        )));
    }
    let options = CoreOptions {
        transport: Some(transport.clone()),
        retry: RetryOptions::none(),
        user_agent: UserAgentOptions {
            application_id: Some("siteflow".into()),
        },
        ..Default::default()
    };
    Pipeline::new(
        Some("siteflow-azure"),
        Some(env!("CARGO_PKG_VERSION")),
        options,
        Vec::new(),
        per_try,
        None,
    )
}

fn method_of(m: &str) -> Result<Method, AzureError> {
    Ok(match m {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => return Err(AzureError::Config(format!("unsupported method {other}"))),
    })
}

/// Resources API version of the provider registration calls.
const PROVIDERS_API: &str = "2025-04-01";
/// How long a request waits for the registration of a provider it needs.
const REGISTRATION_WAIT: Duration = Duration::from_secs(300);

/// The delay before registration check `n`: 1 s doubling up to the SDKs' 10 s.
fn registration_poll(n: u32) -> Duration {
    Duration::from_secs((1u64 << n.min(4)).min(10))
}

/// The namespace a `409 MissingSubscriptionRegistration` names: its detail's `target`, else
/// the last `/providers/<namespace>` of the URL (as azure-mgmt-core finds it).
fn missing_registration(resp: &ArmResponse) -> Option<String> {
    if resp.status != 409 {
        return None;
    }
    let e = serde_json::from_slice::<ErrorResponse>(&resp.body)
        .ok()?
        .error?;
    if e.code.as_deref() != Some("MissingSubscriptionRegistration") {
        return None;
    }
    e.details
        .iter()
        .find_map(|d| d.target.clone())
        .or_else(|| {
            let path = resp.url.split('?').next()?;
            let lower = path.to_ascii_lowercase();
            let at = lower.rfind("/providers/")? + "/providers/".len();
            path[at..].split('/').next().map(str::to_string)
        })
        .filter(|ns| !ns.is_empty())
}

fn backoff(retry: u32) -> Duration {
    Duration::from_millis((200u64 << retry.min(5)).min(5_000))
}

fn header_i64(resp: &ArmResponse, name: &str) -> Option<i64> {
    resp.header(name).and_then(|v| v.trim().parse().ok())
}

/// `resource="https://vault.azure.net"` or `scope="…"` from a `WWW-Authenticate` challenge.
fn challenge_scope(header: &str) -> Option<String> {
    let param = |name: &str| {
        header.split([',', ' ']).find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches('"').to_string())
        })
    };
    if let Some(s) = param("scope") {
        return Some(s);
    }
    param("resource").map(|r| format!("{}/.default", r.trim_end_matches('/')))
}

impl ArmClient {
    /// Builds a client: transport, credential and pipelines.
    pub fn new(options: ClientOptions) -> Result<Self, AzureError> {
        let endpoints = options.cloud.endpoints()?;
        let http = crate::transport::http_client(
            options
                .cloud
                .ca_pem_file
                .as_deref()
                .map(std::path::Path::new),
        )?;
        let transport = Transport::new(Arc::new(http));
        let env = options
            .env
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        let credential = credential::build(
            &options.credential,
            &env,
            &endpoints,
            options.cloud.name,
            &transport,
        )?;
        Ok(Self::with_credential(
            endpoints, credential, transport, &options,
        ))
    }

    fn with_credential(
        endpoints: Endpoints,
        credential: Arc<dyn TokenCredential>,
        transport: Transport,
        options: &ClientOptions,
    ) -> Self {
        let arm = pipeline(
            &transport,
            Some((credential.clone(), endpoints.arm_scope.clone())),
        );
        let graph = pipeline(
            &transport,
            Some((credential.clone(), endpoints.graph_scope.clone())),
        );
        let plain = pipeline(&transport, None);
        ArmClient {
            inner: Arc::new(Inner {
                // One limiter per ARM endpoint and subscription, shared process-wide.
                limiter: limiter_for(&format!("{}|{}", endpoints.arm_url, options.subscription)),
                subscription: options.subscription.clone(),
                endpoints,
                arm,
                graph,
                plain,
                credential,
                vault_scopes: Mutex::new(HashMap::new()),
                max_retries: options.max_transport_retries,
                max_wait: options.max_inline_wait,
            }),
        }
    }

    /// The resolved endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// The subscription.
    pub fn subscription(&self) -> &str {
        &self.inner.subscription
    }

    /// The credential (for token exchanges such as ACR's).
    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        self.inner.credential.clone()
    }

    /// A token for a scope, as a string.
    pub async fn token(&self, scope: &str) -> Result<String, AzureError> {
        self.inner
            .credential
            .get_token(&[scope], None)
            .await
            .map(|t| t.token.secret().to_string())
            .map_err(|e| AzureError::Credential(e.to_string()))
    }

    /// `{arm_url}{path}?api-version={v}`.
    pub fn arm_url(&self, path: &str, api_version: &str) -> String {
        format!(
            "{}{}?api-version={}",
            self.inner.endpoints.arm_url, path, api_version
        )
    }

    /// Sends a request and returns the response whatever its status (after transport-level
    /// retries for idempotent methods, and after registering a resource provider the
    /// subscription lacks).
    pub async fn send_raw(
        &self,
        service: Service,
        method: &str,
        url: &str,
        body: Option<&Value>,
        extra_headers: &[(&str, String)],
    ) -> Result<ArmResponse, AzureError> {
        let send = || self.send_traced(service.clone(), method, url, body, extra_headers);
        let resp = send().await?;
        let Some(ns) = (service == Service::Arm)
            .then(|| missing_registration(&resp))
            .flatten()
        else {
            return Ok(resp);
        };
        // As Azure's SDKs do: register the namespace, wait until it is, send again. Right
        // after a registration the provider may still refuse for a short while: send again
        // until the deadline.
        let deadline = tokio::time::Instant::now() + REGISTRATION_WAIT;
        self.register_provider(&ns, deadline).await?;
        let mut n = 0;
        loop {
            let resp = send().await?;
            if missing_registration(&resp).is_none() || tokio::time::Instant::now() >= deadline {
                return Ok(resp);
            }
            tokio::time::sleep(registration_poll(n)).await;
            n += 1;
        }
    }

    /// One request in its own `azure.request` span (transport-level retries included).
    async fn send_traced(
        &self,
        service: Service,
        method: &str,
        url: &str,
        body: Option<&Value>,
        extra_headers: &[(&str, String)],
    ) -> Result<ArmResponse, AzureError> {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let path = url.split('?').next().unwrap_or(url).to_string();
        let span = tracing::info_span!(
            "azure.request",
            http.request.method = method,
            url.path = %path,
            az.correlation_id = %correlation_id,
            http.response.status_code = tracing::field::Empty,
            retries = tracing::field::Empty,
        );
        self.send_inner(
            service,
            method,
            url,
            body,
            extra_headers,
            &correlation_id,
            &span,
        )
        .instrument(span.clone())
        .await
    }

    /// Registers provider namespace `ns` on the subscription (a POST, as
    /// `azure.register-providers` sends) and waits until its `registrationState` is
    /// `Registered`, or `deadline`.
    async fn register_provider(
        &self,
        ns: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), AzureError> {
        let path = format!("/subscriptions/{}/providers/{ns}", self.inner.subscription);
        tracing::info!(namespace = ns, "registering the resource provider");
        let register = self.arm_url(&format!("{path}/register"), PROVIDERS_API);
        self.send_traced(Service::Arm, "POST", &register, None, &[])
            .await?
            .ok()?;
        let mut n = 0;
        loop {
            let state = self
                .send_traced(
                    Service::Arm,
                    "GET",
                    &self.arm_url(&path, PROVIDERS_API),
                    None,
                    &[],
                )
                .await?
                .ok()?
                .json_value()
                .and_then(|v| v["registrationState"].as_str().map(str::to_string))
                .unwrap_or_default();
            if state.eq_ignore_ascii_case("Registered") {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AzureError::Service {
                    status: 409,
                    code: "MissingSubscriptionRegistration".into(),
                    message: format!(
                        "registering the resource provider {ns} did not end within {} s (registrationState {state})",
                        REGISTRATION_WAIT.as_secs()
                    ),
                    correlation_id: String::new(),
                    retry_after: Some(Duration::from_secs(10)),
                });
            }
            tokio::time::sleep(registration_poll(n)).await;
            n += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_inner(
        &self,
        service: Service,
        method: &str,
        url: &str,
        body: Option<&Value>,
        extra_headers: &[(&str, String)],
        correlation_id: &str,
        span: &tracing::Span,
    ) -> Result<ArmResponse, AzureError> {
        let idempotent = matches!(method, "GET" | "PUT" | "DELETE" | "HEAD");
        let write = !matches!(method, "GET" | "HEAD");
        let limited = service == Service::Arm;
        let mut retry = 0u32;
        loop {
            if limited {
                let wait = self.inner.limiter.delay(write);
                if wait > self.inner.max_wait {
                    return Err(AzureError::Service {
                        status: 429,
                        code: "SubscriptionRequestsThrottled".into(),
                        message: format!(
                            "ARM asked this process to wait {} s before sending more requests",
                            wait.as_secs()
                        ),
                        correlation_id: correlation_id.to_string(),
                        retry_after: Some(wait),
                    });
                }
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let result = self
                .send_once(
                    service.clone(),
                    method,
                    url,
                    body,
                    extra_headers,
                    correlation_id,
                )
                .await;
            let retriable_status = |s: u16| s == 408 || s == 429 || s >= 500;
            match result {
                Ok(resp) => {
                    span.record("http.response.status_code", resp.status);
                    if limited {
                        self.inner.limiter.observe_remaining(
                            header_i64(&resp, "x-ms-ratelimit-remaining-subscription-reads"),
                            header_i64(&resp, "x-ms-ratelimit-remaining-subscription-writes"),
                        );
                    }
                    if resp.status == 429 && limited {
                        self.inner
                            .limiter
                            .throttled(resp.retry_after().unwrap_or(Duration::from_secs(5)));
                    }
                    if retriable_status(resp.status) && idempotent && retry < self.inner.max_retries
                    {
                        let after = resp.retry_after().unwrap_or_else(|| backoff(retry));
                        if after <= self.inner.max_wait {
                            retry += 1;
                            span.record("retries", retry);
                            tracing::debug!(status = resp.status, ?after, "retrying");
                            // A 429 already blocks the limiter for `after`.
                            if resp.status != 429 || !limited {
                                tokio::time::sleep(after).await;
                            }
                            continue;
                        }
                    }
                    return Ok(resp);
                }
                Err(AzureError::Transport { .. })
                    if idempotent && retry < self.inner.max_retries =>
                {
                    tokio::time::sleep(backoff(retry)).await;
                    retry += 1;
                    span.record("retries", retry);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once(
        &self,
        service: Service,
        method: &str,
        url: &str,
        body: Option<&Value>,
        extra_headers: &[(&str, String)],
        correlation_id: &str,
    ) -> Result<ArmResponse, AzureError> {
        let parsed = Url::parse(url).map_err(|e| AzureError::Config(format!("{url}: {e}")))?;
        let mut req = Request::new(parsed.clone(), method_of(method)?);
        req.insert_header("x-ms-correlation-request-id", correlation_id.to_string());
        req.insert_header("accept", "application/json");
        for (k, v) in extra_headers {
            req.insert_header(k.to_ascii_lowercase(), v.clone());
        }
        if let Some(b) = body {
            req.insert_header("content-type", "application/json");
            req.set_body(serde_json::to_vec(b).unwrap_or_default());
        }
        let pipeline = match &service {
            Service::Arm => &self.inner.arm,
            Service::Graph => &self.inner.graph,
            Service::KeyVault => {
                let host = parsed.host_str().unwrap_or_default().to_string();
                let known = self
                    .inner
                    .vault_scopes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&host)
                    .cloned();
                if let Some(scope) = known {
                    let token = self.token(&scope).await?;
                    req.insert_header("authorization", format!("Bearer {token}"));
                }
                &self.inner.plain
            }
            Service::Anonymous => &self.inner.plain,
        };
        let ctx = Context::new();
        let sent = pipeline
            .send(
                &ctx,
                &mut req,
                Some(PipelineSendOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            )
            .await;
        let raw = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(match e.kind() {
                    azure_core::error::ErrorKind::Credential => {
                        AzureError::Credential(e.to_string())
                    }
                    _ => AzureError::Transport {
                        url: url.split('?').next().unwrap_or(url).to_string(),
                        message: e.to_string(),
                    },
                });
            }
        };
        let (status, headers, resp_body) = raw.deconstruct();
        let resp = ArmResponse {
            status: u16::from(status),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.as_str().to_string()))
                .collect(),
            body: resp_body.to_vec(),
            correlation_id: correlation_id.to_string(),
            url: url.split('?').next().unwrap_or(url).to_string(),
        };
        if service == Service::KeyVault
            && resp.status == 401
            && !req
                .headers()
                .iter()
                .any(|(k, _)| k.as_str() == "authorization")
            && let Some(scope) = resp.header("www-authenticate").and_then(challenge_scope)
        {
            self.inner
                .vault_scopes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(parsed.host_str().unwrap_or_default().to_string(), scope);
            return Box::pin(self.send_once(
                service,
                method,
                url,
                body,
                extra_headers,
                correlation_id,
            ))
            .await;
        }
        Ok(resp)
    }

    /// POSTs a form (`application/x-www-form-urlencoded`) without a token and without
    /// transport retries (the ACR token exchange).
    pub async fn post_form(
        &self,
        url: &str,
        pairs: &[(&str, &str)],
    ) -> Result<ArmResponse, AzureError> {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let parsed = Url::parse(url).map_err(|e| AzureError::Config(format!("{url}: {e}")))?;
        let mut req = Request::new(parsed, Method::Post);
        req.insert_header("x-ms-correlation-request-id", correlation_id.clone());
        req.insert_header("content-type", "application/x-www-form-urlencoded");
        req.insert_header("accept", "application/json");
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter())
            .finish();
        req.set_body(body);
        let span = tracing::info_span!("azure.request", http.request.method = "POST", url.path = %url, az.correlation_id = %correlation_id);
        let ctx = Context::new();
        let raw = self
            .inner
            .plain
            .send(
                &ctx,
                &mut req,
                Some(PipelineSendOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            )
            .instrument(span)
            .await
            .map_err(|e| AzureError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let (status, headers, resp_body) = raw.deconstruct();
        Ok(ArmResponse {
            status: u16::from(status),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.as_str().to_string()))
                .collect(),
            body: resp_body.to_vec(),
            correlation_id,
            url: url.to_string(),
        })
    }

    /// Sends a request; non-success statuses become errors.
    pub async fn send(
        &self,
        service: Service,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<ArmResponse, AzureError> {
        self.send_raw(service, method, url, body, &[]).await?.ok()
    }

    /// GETs an ARM resource: `None` on 404.
    pub async fn get_opt<T: DeserializeOwned>(&self, url: &str) -> Result<Option<T>, AzureError> {
        let resp = self.send_raw(Service::Arm, "GET", url, None, &[]).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        resp.ok()?.json().map(Some)
    }

    /// Starts a write: finished at once, or an operation to poll.
    pub async fn begin(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Begun, AzureError> {
        let resp = self.send(Service::Arm, method, url, body).await?;
        Ok(lro::begun(
            method,
            url,
            resp,
            Duration::from_secs(10).min(self.inner.max_wait),
        ))
    }

    /// Polls an operation once.
    pub async fn poll(&self, poller: &LroPoller) -> Result<LroStatus, AzureError> {
        let default_wait = Duration::from_secs(10).min(self.inner.max_wait);
        let resp = self
            .send_raw(Service::Arm, "GET", &poller.poll_url, None, &[])
            .await?;
        match poller.kind {
            LroKind::AsyncOperation => {
                let resp = resp.ok()?;
                let op: OperationStatus = resp.json()?;
                match op.status.to_ascii_lowercase().as_str() {
                    "succeeded" => {
                        if poller.method == "PUT" || poller.method == "PATCH" {
                            let r = self
                                .send(Service::Arm, "GET", &poller.resource_url, None)
                                .await?;
                            Ok(LroStatus::Succeeded(r.json_value()))
                        } else {
                            Ok(LroStatus::Succeeded(None))
                        }
                    }
                    "failed" | "canceled" | "cancelled" => {
                        let e = op.error.unwrap_or_default();
                        Err(AzureError::OperationFailed {
                            status: op.status.clone(),
                            message: e.describe(),
                            code: e.code.unwrap_or_else(|| op.status.clone()),
                            correlation_id: resp.correlation_id.clone(),
                        })
                    }
                    _ => Ok(LroStatus::InProgress(
                        resp.retry_after().unwrap_or(default_wait),
                    )),
                }
            }
            LroKind::Location => match resp.status {
                202 => Ok(LroStatus::InProgress(
                    resp.retry_after().unwrap_or(default_wait),
                )),
                200 | 201 => {
                    if poller.method == "PUT" || poller.method == "PATCH" {
                        let r = self
                            .send(Service::Arm, "GET", &poller.resource_url, None)
                            .await?;
                        Ok(LroStatus::Succeeded(r.json_value()))
                    } else {
                        Ok(LroStatus::Succeeded(resp.json_value()))
                    }
                }
                204 => Ok(LroStatus::Succeeded(None)),
                _ => {
                    let err = resp.error();
                    match err {
                        AzureError::Service {
                            status,
                            code,
                            message,
                            correlation_id,
                            ..
                        } if status < 500 && status != 429 && status != 408 => {
                            Err(AzureError::OperationFailed {
                                status: "Failed".into(),
                                code,
                                message,
                                correlation_id,
                            })
                        }
                        other => Err(other),
                    }
                }
            },
            LroKind::ProvisioningState => {
                let resp = resp.ok()?;
                let v = resp.json_value().unwrap_or(Value::Null);
                let state = v
                    .pointer("/properties/provisioningState")
                    .and_then(Value::as_str)
                    .unwrap_or("Succeeded")
                    .to_string();
                match state.to_ascii_lowercase().as_str() {
                    "succeeded" => Ok(LroStatus::Succeeded(Some(v))),
                    "failed" | "canceled" | "cancelled" => Err(AzureError::OperationFailed {
                        status: state.clone(),
                        code: format!("Provisioning{state}"),
                        message: format!("the resource's provisioningState is {state}"),
                        correlation_id: resp.correlation_id.clone(),
                    }),
                    _ => Ok(LroStatus::InProgress(
                        resp.retry_after().unwrap_or(default_wait),
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use azure_core::http::headers::Headers;
    use azure_core::http::{AsyncRawResponse, HttpClient, StatusCode};
    use azure_core::time::OffsetDateTime;

    /// Answers with scripted statuses and records what it was sent.
    #[derive(Debug, Default)]
    struct Scripted {
        statuses: Mutex<Vec<u16>>,
        seen: Mutex<Vec<(String, HashMap<String, String>)>>,
    }

    #[async_trait::async_trait]
    impl HttpClient for Scripted {
        async fn execute_request(&self, req: &Request) -> azure_core::Result<AsyncRawResponse> {
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()))
                .collect();
            self.seen
                .lock()
                .unwrap()
                .push((format!("{:?}", req.method()), headers));
            let status = {
                let mut s = self.statuses.lock().unwrap();
                if s.is_empty() { 200 } else { s.remove(0) }
            };
            let mut h = Headers::new();
            h.insert("retry-after-ms", "1");
            h.insert("x-ms-ratelimit-remaining-subscription-reads", "11999");
            Ok(AsyncRawResponse::from_bytes(
                StatusCode::from(status),
                h,
                b"{}".to_vec(),
            ))
        }
    }

    #[derive(Debug)]
    struct Fixed;

    #[async_trait::async_trait]
    impl TokenCredential for Fixed {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            Ok(AccessToken::new(
                "tok".to_string(),
                OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
            ))
        }
    }

    fn scripted(statuses: &[u16]) -> (ArmClient, Arc<Scripted>) {
        let http = Arc::new(Scripted {
            statuses: Mutex::new(statuses.to_vec()),
            ..Default::default()
        });
        let endpoints = CloudConfig::default().endpoints().unwrap();
        let opts = ClientOptions::new(
            CloudConfig::default(),
            CredentialConfig::default(),
            "sub-scripted",
        );
        let client = ArmClient::with_credential(
            endpoints,
            Arc::new(Fixed),
            Transport::new(http.clone()),
            &opts,
        );
        (client, http)
    }

    #[tokio::test]
    async fn requests_carry_user_agent_correlation_id_and_token() {
        let (client, http) = scripted(&[]);
        let url = client.arm_url("/subscriptions/s/resourcegroups/x", "2025-04-01");
        client.send(Service::Arm, "GET", &url, None).await.unwrap();
        let seen = http.seen.lock().unwrap();
        let h = &seen[0].1;
        assert!(h["user-agent"].contains("siteflow"), "{h:?}");
        assert_eq!(h["authorization"], "Bearer tok");
        assert_eq!(h["x-ms-correlation-request-id"].len(), 36);
    }

    /// Records the `az.correlation_id` of every span opened.
    struct Spans(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct V<'a>(&'a Mutex<Vec<String>>);
            impl tracing::field::Visit for V<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "az.correlation_id" {
                        self.0.lock().unwrap().push(format!("{v:?}"));
                    }
                }
            }
            attrs.record(&mut V(&self.0));
        }
    }

    #[tokio::test]
    async fn the_correlation_id_is_a_span_attribute() {
        use tracing_subscriber::layer::SubscriberExt;
        let ids = Arc::new(Mutex::new(Vec::new()));
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(Spans(ids.clone())),
        );
        let (client, http) = scripted(&[]);
        let url = client.arm_url("/subscriptions/s/resourcegroups/x", "2025-04-01");
        client.send(Service::Arm, "GET", &url, None).await.unwrap();
        let sent = http.seen.lock().unwrap()[0].1["x-ms-correlation-request-id"].clone();
        assert_eq!(*ids.lock().unwrap(), vec![sent]);
    }

    #[tokio::test]
    async fn idempotent_requests_are_retried_and_posts_are_not() {
        let (client, http) = scripted(&[503, 429, 500]);
        let url = client.arm_url("/subscriptions/s/resourcegroups/x", "2025-04-01");
        let r = client
            .send(Service::Arm, "DELETE", &url, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        {
            let seen = http.seen.lock().unwrap();
            assert_eq!(seen.len(), 4);
            let ids: std::collections::HashSet<_> = seen
                .iter()
                .map(|(_, h)| h["x-ms-correlation-request-id"].clone())
                .collect();
            assert_eq!(ids.len(), 1, "one correlation id across retries");
        }
        let (client, http) = scripted(&[503]);
        let err = client
            .send(Service::Arm, "POST", &url, None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503));
        assert_eq!(http.seen.lock().unwrap().len(), 1);
        let (client, http) = scripted(&[503, 503, 503, 503, 503, 503]);
        let err = client
            .send(Service::Arm, "GET", &url, None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503));
        assert_eq!(
            http.seen.lock().unwrap().len(),
            5,
            "1 + max_transport_retries"
        );
    }

    #[test]
    fn challenge_scopes() {
        assert_eq!(
            challenge_scope(
                "Bearer authorization=\"https://login/t\", resource=\"https://vault.azure.net\""
            )
            .as_deref(),
            Some("https://vault.azure.net/.default")
        );
        assert_eq!(
            challenge_scope("Bearer authorization=\"x\", scope=\"https://v/.default\"").as_deref(),
            Some("https://v/.default")
        );
        assert_eq!(challenge_scope("Basic realm=x"), None);
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let r = ArmResponse {
            status: 202,
            headers: vec![
                ("retry-after".into(), "3".into()),
                ("retry-after-ms".into(), "40".into()),
            ],
            body: vec![],
            correlation_id: "c".into(),
            url: "u".into(),
        };
        assert_eq!(r.retry_after(), Some(Duration::from_millis(40)));
    }
}
