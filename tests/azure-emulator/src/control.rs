//! `/_emulator/*`: the unauthenticated control endpoints (request log, faults, Graph mode,
//! Arc agents refused, health) for tests written in other languages.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::faults::{FaultRule, WriteLimit};
use crate::http::{Req, Resp};
use crate::server::Shared;

fn bad(msg: String) -> Resp {
    Resp::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"code": "BadRequest", "message": msg}}),
    )
}

pub(crate) fn handle(shared: &Shared, req: &Req) -> Resp {
    let rest: Vec<String> = req.segs[1..]
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let faults = &shared.faults;
    match (req.method.clone(), rest.as_slice()) {
        (Method::GET, ["health"]) => Resp::json(
            StatusCode::OK,
            &json!({
                "status": "ok",
                "baseUrl": shared.base_url,
                "caPemPath": shared.ca_pem_path,
                "tenantId": shared.config.tenant_id,
                "subscriptionId": shared.config.subscriptions.first()
            }),
        ),
        (Method::GET, ["requests"]) => {
            Resp::json(StatusCode::OK, &json!({"value": shared.log.entries()}))
        }
        (Method::DELETE, ["requests"]) => {
            shared.log.clear();
            Resp::empty(StatusCode::NO_CONTENT)
        }
        (Method::GET, ["faults"]) => Resp::json(
            StatusCode::OK,
            &json!({"rules": faults.rules(), "writeLimit": faults.write_limit(), "seed": faults.seed()}),
        ),
        (Method::POST, ["faults"]) => match serde_json::from_slice::<FaultRule>(&req.body) {
            Ok(rule) => {
                let id = faults.add(rule);
                Resp::json(StatusCode::CREATED, &json!({"id": id}))
            }
            Err(e) => bad(format!("invalid fault rule: {e}")),
        },
        (Method::DELETE, ["faults"]) => {
            faults.clear();
            Resp::empty(StatusCode::NO_CONTENT)
        }
        (Method::DELETE, ["faults", id]) => match id.parse::<u64>() {
            Ok(id) if faults.remove(id) => Resp::empty(StatusCode::NO_CONTENT),
            _ => Resp::json(
                StatusCode::NOT_FOUND,
                &json!({"error": {"code": "NotFound", "message": "no such rule"}}),
            ),
        },
        (Method::PUT, ["faults", "write-limit"]) => {
            match serde_json::from_slice::<Option<WriteLimit>>(&req.body) {
                Ok(limit) => {
                    faults.set_write_limit(limit);
                    Resp::json(StatusCode::OK, &json!({"writeLimit": limit}))
                }
                Err(e) => bad(format!("invalid write limit: {e}")),
            }
        }
        (Method::PUT, ["faults", "seed"]) => {
            match serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v.get("seed").and_then(Value::as_u64))
            {
                Some(seed) => {
                    faults.set_seed(seed);
                    Resp::json(StatusCode::OK, &json!({"seed": seed}))
                }
                None => bad("expected {\"seed\": <u64>}".into()),
            }
        }
        (Method::PUT, ["arc-agents"]) => {
            match serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v.get("refuse").and_then(Value::as_bool))
            {
                Some(f) => {
                    shared
                        .arc_refuse
                        .store(f, std::sync::atomic::Ordering::SeqCst);
                    Resp::json(StatusCode::OK, &json!({"refuse": f}))
                }
                None => bad("expected {\"refuse\": <bool>}".into()),
            }
        }
        (Method::PUT, ["graph"]) => {
            match serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v.get("forbidden").and_then(Value::as_bool))
            {
                Some(f) => {
                    shared.set_graph_forbidden(f);
                    Resp::json(StatusCode::OK, &json!({"forbidden": f}))
                }
                None => bad("expected {\"forbidden\": <bool>}".into()),
            }
        }
        _ => Resp::json(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": "NotFound", "message": "unknown control endpoint"}}),
        ),
    }
}
