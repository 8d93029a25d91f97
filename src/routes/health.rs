//! `GET /healthz` (the process is up), `GET /readyz` (it can validate and record), and
//! `GET /metrics` (Prometheus).

use super::AppState;
use crate::identity::KeysNotReady;
use actix_web::{web, HttpResponse};
use serde_json::json;

/// Liveness: answers while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: every trusted issuer's signing keys are loaded, the store answers and the
/// record writer runs.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if let Some(cause) = state.broker.audit().writer.stopped() {
        return not_ready(format!(
            "the issuance writer stopped and is being restarted: {cause}"
        ));
    }
    let store = &state.broker.audit().store;
    let store_up = tokio::time::timeout(std::time::Duration::from_secs(2), store.ping())
        .await
        .unwrap_or(false);
    if !store_up {
        return not_ready(format!(
            "the issuance store ({}) does not answer",
            store.engine()
        ));
    }
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for (issuer, keys) in state.broker.validator().key_sets() {
        let with_cause = |cause: Option<String>| match cause {
            Some(cause) => format!("{issuer} ({cause})"),
            None => issuer.to_owned(),
        };
        match keys.readiness() {
            Ok(()) => {}
            Err(KeysNotReady::NeverLoaded(cause)) => missing.push(with_cause(cause)),
            Err(KeysNotReady::Stale(age, cause)) => stale.push(format!(
                "{}, not refreshed for {} s",
                with_cause(cause),
                age.as_secs()
            )),
        }
    }
    let mut reasons = Vec::new();
    if !missing.is_empty() {
        reasons.push(format!(
            "signing keys not loaded yet for {}",
            missing.join("; ")
        ));
    }
    if !stale.is_empty() {
        reasons.push(format!(
            "signing keys older than their maximum age for {}",
            stale.join("; ")
        ));
    }
    if reasons.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        not_ready(reasons.join("; "))
    }
}

fn not_ready(reason: String) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "5"))
        .json(json!({ "status": "not_ready", "reason": reason }))
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let broker = &state.broker;
    let entries = broker.cached_entries().await;
    let body = broker
        .metrics()
        .render(entries, broker.audit().writer.queue_depth());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
