//! Azure Resource Manager: authentication, throttling and fault injection, correlation and
//! rate-limit headers, then dispatch to the resource modules.

mod aks;
mod authorization;
mod compute;
mod error;
mod kinds;
mod kubernetes;
pub(crate) mod metadata;
mod msi;
mod network;
mod path;
mod resources;
mod rp;
pub(crate) mod state;
mod storage;
mod vm_size;

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;
use tokio::time::Instant;

pub(crate) use error::ArmError;
pub(crate) use kubernetes::{connect as connect_cluster, oidc_document, report_flux};
use path::Route;
pub(crate) use resources::seed;

use crate::clock::retry_after_secs;
use crate::faults::{Injected, RateVerdict};
use crate::http::Req;
use crate::http::Resp;
use crate::server::Shared;
use crate::token::{TokenError, audience_ok, bearer};

/// Audiences ARM accepts.
pub(crate) const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
];

/// Per-request values the handlers need.
pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) req: &'a Req,
    pub(crate) now: Instant,
    pub(crate) hook_set: bool,
    /// A managed-cluster backing hook is installed.
    pub(crate) cluster_hook_set: bool,
}

impl Ctx<'_> {
    pub(crate) fn api_version(&self) -> Option<&str> {
        self.req.query_param("api-version")
    }

    /// Requires an api-version from `accepted`; else the ARM error for `what`.
    pub(crate) fn check_api_version(
        &self,
        accepted: &[&str],
        ty: &str,
        rp_type: bool,
    ) -> Result<String, ArmError> {
        let Some(v) = self.api_version() else {
            return Err(ArmError::missing_api_version());
        };
        if accepts(accepted, v) {
            return Ok(v.to_string());
        }
        let list = accepted.join(", ");
        Err(if rp_type {
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "NoRegisteredProviderFound",
                format!(
                    "No registered resource provider found for location 'eastus' and API version '{v}' for type '{}'. The supported api-versions are '{list}'. The supported locations are 'eastus, eastus2, westus, westus2, westeurope, northeurope'.",
                    ty.split_once('/').map_or(ty, |(_, t)| t)
                ),
            )
        } else {
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!("The api-version '{v}' is invalid. The supported versions are '{list}'."),
            )
        })
    }

    pub(crate) fn url(&self, path: &str, api_version: &str) -> String {
        format!("{}{path}?api-version={api_version}", self.shared.base_url)
    }
}

/// Whether `v` is an api-version of `known`: one of them, or a well-formed version
/// (`YYYY-MM-DD`, optionally `-preview`, `-privatepreview`, `-beta`) dated between the oldest and
/// the newest of them. The newest is the spec folder's version (shared/azure-specs): the
/// emulator takes the published range rather than a short list, so a client pinned to a
/// version between two the list happens to name is served.
pub(crate) fn accepts(known: &[&str], v: &str) -> bool {
    if known.iter().any(|a| a.eq_ignore_ascii_case(v)) {
        return true;
    }
    let Some(date) = api_version_date(v) else {
        return false;
    };
    let dates = known.iter().filter_map(|k| api_version_date(k));
    let (Some(oldest), Some(newest)) = (dates.clone().min(), dates.max()) else {
        return false;
    };
    oldest <= date && date <= newest
}

/// The date of a well-formed api-version.
fn api_version_date(v: &str) -> Option<(u16, u8, u8)> {
    let (date, suffix) = v.split_at_checked(10)?;
    if !["", "-preview", "-privatepreview", "-beta"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(suffix))
    {
        return None;
    }
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (u16, u8, u8) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// Serves one ARM request.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    let correlation = req
        .header("x-ms-correlation-request-id")
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = path::parse(&req.segs);
    let mut resp = serve(shared, req, &route);
    resp.set_header("x-ms-request-id", uuid::Uuid::new_v4().to_string());
    resp.set_header("x-ms-correlation-request-id", correlation);
    if let Some(c) = req.header("x-ms-client-request-id") {
        resp.set_header("x-ms-client-request-id", c);
    }
    resp.set_header("cache-control", "no-cache");
    resp
}

fn unauthorized(shared: &Shared, code: &str, message: &str) -> Resp {
    ArmError::new(StatusCode::UNAUTHORIZED, code, message)
        .into_resp()
        .with_header(
            "WWW-Authenticate",
            format!(
                "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"{message}\"",
                shared.base_url, shared.config.tenant_id
            ),
        )
}

pub(crate) fn authenticate(shared: &Shared, req: &Req) -> Option<Resp> {
    let Some(token) = bearer(&req.headers) else {
        return Some(unauthorized(
            shared,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    match shared.signer.verify(token) {
        Err(TokenError::Expired) => Some(unauthorized(
            shared,
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        )),
        Err(_) => Some(unauthorized(
            shared,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )),
        Ok(claims) => {
            let base = shared.base_url.as_str();
            let mut accepted: Vec<&str> = ARM_AUDIENCES.to_vec();
            accepted.push(base);
            if audience_ok(&claims, &accepted) {
                None
            } else {
                Some(unauthorized(
                    shared,
                    "InvalidAuthenticationTokenAudience",
                    "The access token has been obtained for wrong audience or resource. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.azure.com/'.",
                ))
            }
        }
    }
}

fn serve(shared: &Arc<Shared>, req: &Req, route: &Route) -> Resp {
    if let Some(resp) = authenticate(shared, req) {
        return resp;
    }
    let write = !req.is_read();
    let rtype = route.resource_type();
    let injected = shared
        .faults
        .with_state(|f| f.check_request(&rtype, req.method.as_str()));
    match injected {
        Some(Injected::Throttled { retry_after_secs }) => {
            return ArmError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("Too many requests for '{rtype}'. Please retry after {retry_after_secs} seconds (injected fault)."),
            )
            .into_resp()
            .with_header("Retry-After", retry_after_secs.to_string());
        }
        Some(Injected::ServerError { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = match status.as_u16() {
                503 => "ServiceUnavailable",
                502 => "BadGateway",
                504 => "GatewayTimeout",
                _ => "InternalServerError",
            };
            return ArmError::new(
                status,
                code,
                "The server encountered an internal error. Please retry the request (injected fault).",
            )
            .into_resp();
        }
        None => {}
    }
    let (scope, scope_key) = match route.subscription() {
        Some(s) => ("subscription", s.to_ascii_lowercase()),
        None => ("tenant", "tenant".to_string()),
    };
    let header = format!(
        "x-ms-ratelimit-remaining-{scope}-{}",
        if write { "writes" } else { "reads" }
    );
    let verdict = shared
        .faults
        .with_state(|f| f.rate(&shared.clock, &scope_key, write));
    let remaining = match verdict {
        RateVerdict::Exceeded { retry_after } => {
            let secs = retry_after_secs(retry_after);
            let kind = if write { "write" } else { "read" };
            return ArmError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "SubscriptionRequestsThrottled",
                format!(
                    "Number of '{kind}' requests for subscription '{scope_key}' actor '{}' exceeded. Please try again after '{secs}' seconds after the last request.",
                    shared.config.principals.first().map_or("", |p| p.object_id.as_str())
                ),
            )
            .into_resp()
            .with_header("Retry-After", secs.to_string())
            .with_header(&header, "0");
        }
        RateVerdict::Allowed { remaining } => remaining,
    };
    let hook_set = shared.hook_is_set();
    let ctx = Ctx {
        shared,
        req,
        now: shared.clock.now(),
        hook_set,
        cluster_hook_set: shared.cluster_hook_is_set(),
    };
    let (mut resp, jobs, released, power) = {
        let mut st = shared.lock_arm();
        st.advance(ctx.now, &shared.advance_ctx());
        let resp = dispatch(&ctx, &mut st, route).unwrap_or_else(ArmError::into_resp);
        (
            resp,
            std::mem::take(&mut st.pending_hooks),
            std::mem::take(&mut st.released),
            std::mem::take(&mut st.pending_power),
        )
    };
    for job in power {
        shared.spawn_power(job);
    }
    for job in jobs {
        shared.spawn_hook(job);
    }
    for (id, op) in released {
        shared.spawn_release(id, op);
    }
    resp.set_header(&header, remaining.to_string());
    resp
}

fn dispatch(ctx: &Ctx<'_>, st: &mut state::ArmState, route: &Route) -> Result<Resp, ArmError> {
    match route {
        Route::SubscriptionList | Route::Subscription { .. } | Route::TenantList => {
            resources::subscriptions(ctx, st, route)
        }
        Route::GroupList { sub } => resources::group_list(ctx, st, sub),
        Route::Group { sub, rg } => resources::group(ctx, st, sub, rg),
        Route::ProviderList { sub } => resources::provider_list(ctx, st, sub),
        Route::Provider { sub, ns } => resources::provider(ctx, st, sub, ns, None),
        Route::ProviderAction { sub, ns, action } => {
            resources::provider(ctx, st, sub, ns, Some(action))
        }
        Route::Operation { sub, op, result } => resources::operation(ctx, st, sub, op, *result),
        Route::Resource(p) => rp::handle(ctx, st, p),
        Route::Unknown => Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The requested path '{}' was not found.", ctx.req.path),
        )),
    }
}

/// The `{"value": [...]}` list envelope.
pub(crate) fn list_body(items: Vec<serde_json::Value>) -> serde_json::Value {
    json!({ "value": items })
}
