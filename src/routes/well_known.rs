//! The bridge's own issuer: OpenID Provider metadata and the JWKS Google verifies
//! assertions with.

use super::{not_found, AppState};
use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// `GET <issuer path>/.well-known/openid-configuration`.
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    match &state.assertion {
        Some(minter) => public_json(minter.discovery()),
        None => not_found().await,
    }
}

/// `GET <issuer path>/.well-known/jwks.json`.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    match &state.assertion {
        Some(minter) => public_json(minter.jwks()),
        None => not_found().await,
    }
}

/// Public documents may be cached briefly; a rotation is seen within five minutes.
fn public_json(body: impl serde::Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(body)
}
