//! Reading a request body: bounded in size and time, refused before reading when its
//! headers already say it cannot be accepted.

use super::error::ApiError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use std::time::Duration;

/// What a route accepts as a body.
pub struct BodyRules {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Time the caller has to send the whole body.
    pub timeout: Duration,
}

/// Reads the body of `req` under `rules`.
///
/// A `Content-Encoding` other than identity is 415 (nothing here decompresses, so such a
/// body would be parsed as raw bytes); a `Content-Length` over the limit is 413 before
/// any byte is read; a body not complete within the timeout is 408. The connection is
/// closed after 408 and 413, since the rest of the body was never read.
pub async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    rules: &BodyRules,
) -> Result<web::Bytes, ApiError> {
    check_encoding(req)?;
    let max = rules.max_bytes;
    let too_large = || {
        ApiError::invalid_request_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {max} bytes"),
        )
        .closing()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(rules.timeout, payload.to_bytes_limited(max)).await {
        Err(_) => Err(ApiError::invalid_request_status(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body was not complete within {} ms",
                rules.timeout.as_millis()
            ),
        )
        .closing()),
        Ok(Err(_)) => Err(too_large()),
        Ok(Ok(read)) => {
            read.map_err(|_| ApiError::invalid_request("the request body could not be read"))
        }
    }
}

fn check_encoding(req: &HttpRequest) -> Result<(), ApiError> {
    let identity = req.headers().get_all(header::CONTENT_ENCODING).all(|v| {
        v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
    });
    if identity {
        return Ok(());
    }
    Err(ApiError::invalid_request_status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Encoding is not accepted; send the body uncompressed",
    ))
}

/// The lower-cased media type of `Content-Type`, without parameters; `default` when absent.
pub fn media_type(req: &HttpRequest, default: &str) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(default)
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}
