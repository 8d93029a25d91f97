//! Tracing set-up and request ids.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const SERVER_REQUEST_ID: HeaderName = HeaderName::from_static("x-server-request-id");

/// Installs the global subscriber on stderr: JSON lines, or human-readable text for
/// development. A second call is a no-op.
pub fn init(format: &str, filter: &str) {
    init_with_writer(format, filter, std::io::stderr);
}

/// Like [`init`], writing to `writer` (tests capture the log this way).
pub fn init_with_writer<W>(format: &str, filter: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// At most `per_second` log lines a second for one kind of line that any caller can cause,
/// so nobody can flood the log; what is left out is counted and reported on the next line.
pub struct LogThrottle {
    per_second: u32,
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle letting `per_second` lines through each second.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: Mutex::new(ThrottleState {
                window: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being the lines left out since the last
    /// one; `None` when this one is to be left out.
    pub fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.window.elapsed() >= Duration::from_secs(1) {
            s.window = Instant::now();
            s.logged = 0;
        }
        if s.logged >= self.per_second {
            s.suppressed += 1;
            return None;
        }
        s.logged += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

/// A caller's `X-Request-Id` when it is short and plain.
fn callers_request_id(req: &ServiceRequest) -> Option<String> {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned)
}

/// The id of the request being served, in the request's extensions: the caller's
/// `X-Request-Id`, or the server's own id when the caller sent none (or an unusable one).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The id the server gave the request, unique whatever the caller sent; in the request's
/// extensions.
#[derive(Debug, Clone)]
pub struct ServerRequestId(pub String);

/// Middleware: tags every log line of a request with both its ids and echoes them back
/// (`X-Request-Id`, `X-Server-Request-Id`).
pub async fn with_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let server_id = uuid::Uuid::new_v4().to_string();
    let id = callers_request_id(&req).unwrap_or_else(|| server_id.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut()
        .insert(ServerRequestId(server_id.clone()));
    // `client` is filled in by Basic authentication or once a token has been validated
    // (as its record names it), `subject` once a token has been validated, `client_addr`
    // by the token route once it has looked past the trusted proxies.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        server_request_id = %server_id,
        method = %req.method(),
        path = req.path(),
        client = tracing::field::Empty,
        subject = tracing::field::Empty,
        client_addr = tracing::field::Empty,
    );
    let mut response = next.call(req).instrument(span).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if let Ok(value) = HeaderValue::from_str(&server_id) {
        response.headers_mut().insert(SERVER_REQUEST_ID, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_its_rate_through_and_counts_the_rest() {
        let throttle = LogThrottle::new(3);
        let admitted: Vec<_> = (0..10).map(|_| throttle.admit()).collect();
        assert_eq!(&admitted[..3], &[Some(0), Some(0), Some(0)]);
        assert!(admitted[3..].iter().all(Option::is_none));
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(throttle.admit(), Some(7));
        assert_eq!(throttle.admit(), Some(0));
    }
}
