//! HTTP handlers: parse, call the broker, map errors. Nothing else.

mod admin;
mod body;
mod client_addr;
mod cursor;
mod error;
mod health;
mod introspect;
mod strict_json;
mod token;
mod well_known;

pub use admin::{lift, list_admin_actions, list_issuances, list_revocations, revoke};
pub use client_addr::TrustedProxies;
pub use cursor::CursorKey;
pub use error::ApiError;
pub use health::{healthz, metrics, readyz};
pub use introspect::introspect;
#[cfg(feature = "fuzzing")]
pub use token::fuzzing;
pub use token::{token, MAX_BODY_BYTES};

use crate::assertion::Minter;
use crate::broker::Broker;
use crate::config::{AdminSettings, ClientSettings};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpResponse, Resource, Route};
use serde_json::json;
use std::sync::Arc;

/// State shared by all handlers.
pub struct AppState {
    /// The exchange engine.
    pub broker: Arc<Broker>,
    /// Clients allowed to authenticate with HTTP Basic.
    pub clients: Vec<ClientSettings>,
    /// Client ids a caller may claim without proof.
    pub public_clients: Vec<crate::config::PublicClientSettings>,
    /// Whether a caller must authenticate with HTTP Basic as a confidential client.
    pub require_client_auth: bool,
    /// Seconds a caller is told to wait on 503.
    pub retry_after_secs: u64,
    /// Who may administer.
    pub admin: AdminSettings,
    /// The trusted issuers' exact `iss` values, for revocations naming one.
    pub issuers: Vec<String>,
    /// The bridge's own issuer, when assertion mode is configured.
    pub assertion: Option<Arc<Minter>>,
    /// Time a caller has to send a whole request body.
    pub body_timeout: std::time::Duration,
    /// Bounds the log lines of malformed requests.
    pub malformed_log: crate::telemetry::LogThrottle,
    /// Signs the admin listings' paging cursors.
    pub cursor_key: CursorKey,
    /// Whether error descriptions may name other targets, billing projects and scopes.
    pub verbose_errors: bool,
    /// Time a whole exchange may take.
    pub request_timeout: std::time::Duration,
    /// Proxies whose forwarding headers name the client.
    pub proxies: TrustedProxies,
    /// Exchanges per client address; `None` when rate limits are off.
    pub address_limit: Option<crate::ratelimit::KeyedLimit<std::net::IpAddr>>,
}

/// Which groups of routes one listener serves; every listener answers the health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Served {
    /// `POST /v1/token`.
    pub token: bool,
    /// `/admin/v1/*`.
    pub admin: bool,
    /// `GET /metrics`.
    pub metrics: bool,
}

/// Registers the routes `served` names; with the token endpoint, the bridge's discovery
/// document and JWKS when it has an issuer of its own.
pub fn configure(cfg: &mut web::ServiceConfig, served: Served, issuer: Option<&Minter>) {
    cfg.service(resource("/healthz", "GET", web::get().to(healthz)))
        .service(resource("/readyz", "GET", web::get().to(readyz)));
    if served.token {
        cfg.service(resource("/v1/token", "POST", web::post().to(token)))
            .service(resource(
                "/v1/introspect",
                "POST",
                web::post().to(introspect),
            ));
        if let Some(minter) = issuer {
            cfg.service(resource(
                &minter.discovery_path(),
                "GET",
                web::get().to(well_known::openid_configuration),
            ))
            .service(resource(
                &minter.jwks_path(),
                "GET",
                web::get().to(well_known::jwks),
            ));
        }
    }
    if served.metrics {
        cfg.service(resource("/metrics", "GET", web::get().to(metrics)));
    }
    if served.admin {
        // Nothing the admin API answers, errors included, may be kept by a cache.
        let no_store = DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store"));
        cfg.service(
            web::scope("/admin/v1")
                .wrap(no_store)
                .service(resource("/issuances", "GET", web::get().to(list_issuances)))
                .service(
                    resource("/revocations", "GET, POST", web::post().to(revoke))
                        .route(web::get().to(list_revocations)),
                )
                .service(resource(
                    "/admin-actions",
                    "GET",
                    web::get().to(list_admin_actions),
                ))
                .service(resource(
                    "/revocations/{subject}",
                    "DELETE",
                    web::delete().to(lift),
                ))
                .default_service(web::to(not_found)),
        );
    }
}

/// A path served by one method; other methods get 405 with `Allow`.
fn resource(path: &str, allow: &'static str, route: Route) -> Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move || async move {
            HttpResponse::MethodNotAllowed()
                .insert_header(("Allow", allow))
                .json(json!({
                    "error": "invalid_request",
                    "error_description": format!("this path only answers {allow}"),
                }))
        }))
}

/// Any path the service does not serve.
pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": "not_found",
        "error_description": "no such path; see openapi.yaml for the routes this service serves",
    }))
}
