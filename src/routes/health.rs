//! `GET /healthz` (the process is up) and `GET /readyz` (it can validate tokens).

use super::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

/// Liveness: answers while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: every trusted issuer's signing keys are loaded.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let missing: Vec<&str> = state
        .broker
        .validator()
        .key_sets()
        .filter(|(_, keys)| !keys.is_loaded())
        .map(|(issuer, _)| issuer)
        .collect();
    if missing.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(json!({
                "status": "not_ready",
                "reason": format!("signing keys not loaded yet for {}", missing.join(", ")),
            }))
    }
}
