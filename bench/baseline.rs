//! Configuration A: the verify limit. One RS256 `jsonwebtoken` verification (aws-lc-rs
//! backend) of the posted `subject_token` per request, and a fixed answer.

use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;

const BODY: &str = r#"{"access_token":"ya29.baseline","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3599}"#;

struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

async fn token(body: web::Bytes, verifier: web::Data<Verifier>) -> HttpResponse {
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(form) => form,
        Err(_) => return HttpResponse::BadRequest().finish(),
    };
    let token = form.get("subject_token").map(String::as_str).unwrap_or("");
    match jsonwebtoken::decode::<serde_json::Value>(token, &verifier.key, &verifier.validation) {
        Ok(_) => HttpResponse::Ok()
            .content_type("application/json")
            .body(BODY),
        Err(_) => HttpResponse::BadRequest().finish(),
    }
}

/// Serves the baseline on `port` until killed, verifying with the RSA key in `pem_file`.
pub fn serve(port: u16, pem_file: &str) -> std::io::Result<()> {
    let pem = std::fs::read(pem_file)?;
    let key = DecodingKey::from_rsa_pem(&pem).map_err(std::io::Error::other)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    let verifier = web::Data::new(Verifier { key, validation });
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(verifier.clone())
                .route("/v1/token", web::post().to(token))
        })
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
