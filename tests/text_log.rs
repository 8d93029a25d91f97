//! The text log format under callers who choose what it prints: values they chose stay
//! inside quotes, and malformed requests are counted but logged at a bounded rate.

#[path = "api/db.rs"]
#[allow(dead_code)]
mod db;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "common/log_capture.rs"]
mod log_capture;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use helpers::*;
use log_capture::Capture;
use serde_json::json;

impl Capture {
    /// The captured lines, without terminal colours.
    fn lines(&self) -> Vec<String> {
        let log = self.text();
        log.lines().map(strip_ansi).collect()
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The field names of a text log line, as a log parser sees them: `name=` outside quotes.
fn field_names(line: &str) -> Vec<String> {
    let (mut names, mut word, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                word.clear();
            }
            '=' if !word.is_empty() => names.push(std::mem::take(&mut word)),
            c if c.is_alphanumeric() || c == '_' => word.push(c),
            _ => word.clear(),
        }
    }
    names
}

fn unsigned_token(header: serde_json::Value, claims: serde_json::Value) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    )
}

#[tokio::test]
async fn caller_chosen_kid_and_iss_cannot_forge_fields_and_malformed_requests_are_rate_limited() {
    let capture = Capture::default();
    let sink = capture.clone();
    sts_bridge::telemetry::init_with_writer("text", "info", move || sink.clone());
    let app = spawn_app().await;
    let forged = r#"x" outcome="issued" subject="auth0|admin"#;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |iss: &str| json!({"iss": iss, "sub": "auth0|eve", "aud": "x", "iat": now, "exp": now + 600});
    let by_kid = unsigned_token(
        json!({"alg": "RS256", "typ": "JWT", "kid": forged}),
        claims(&app.issuer.issuer()),
    );
    let by_iss = unsigned_token(
        json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}),
        claims(&format!("https://evil.example/ {forged}")),
    );
    for token in [&by_kid, &by_iss] {
        assert_eq!(app.exchange(token).await.status(), 400);
    }
    let refusals: Vec<String> = capture
        .lines()
        .into_iter()
        .filter(|l| l.contains("malformed request refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    for line in &refusals {
        assert!(
            line.contains("auth0|admin"),
            "the forged text is not logged: {line}"
        );
        let names = field_names(line);
        let outcomes = names.iter().filter(|n| *n == "outcome").count();
        assert_eq!(outcomes, 1, "a caller forged a field: {line}");
        assert!(!names.contains(&"subject".to_owned()), "{line}");
    }

    // A flood of garbage: every request counted, only a bounded number logged.
    let before = capture.lines().len();
    for _ in 0..60 {
        assert_eq!(app.exchange("not-a-jwt").await.status(), 400);
    }
    let logged = capture.lines()[before..]
        .iter()
        .filter(|l| l.contains("malformed request refused"))
        .count();
    assert!((1..=40).contains(&logged), "{logged} lines for 60 requests");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        value(r#"sts_bridge_malformed_requests_total{error="invalid_grant"}"#),
        62.0
    );
    assert_eq!(
        value(r#"sts_bridge_log_lines_suppressed_total{kind="malformed_request"}"#),
        (60 - logged) as f64
    );
}
