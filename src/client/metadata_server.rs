//! `sts-bridge metadata-server`: the part of the GCE metadata server that Google's client
//! libraries read for credentials (`GCE_METADATA_HOST`), serving the signed-in person's
//! Google token from sts-bridge. Loopback only: it hands a credential to whoever asks.

use super::auth0_token::{fresh_session, MIN_LEFT_SECS};
use super::exchange::{exchange, Server};
use super::{http_client, ClientError};
use crate::secret::Token;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Google's scope for everything, advertised when no `--scope` is given.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Renew a Google token this long before it expires (google-auth calls a token with less
/// than 3 min 45 s left stale).
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// Most scope sets kept at once.
const MAX_CACHED: usize = 16;
/// Longest query string accepted.
const MAX_QUERY: usize = 4096;
/// Most scopes in one token request.
const MAX_SCOPES: usize = 32;
/// The longest lifetime a Google access token can have (12 hours).
const MAX_LIFETIME_SECS: u64 = 12 * 3600;

/// What the metadata server serves.
pub struct MetadataOptions {
    /// Loopback address to listen on.
    pub listen: SocketAddr,
    /// sts-bridge and the target.
    pub server: Server,
    /// The signed-in profile whose token is exchanged.
    pub profile: String,
    /// Project id to answer `project/project-id` with.
    pub project: Option<String>,
    /// The account's email; the person's from their token when absent.
    pub email: Option<String>,
    /// Scopes advertised for the account (cloud-platform when empty).
    pub scopes: Vec<String>,
}

struct State {
    server: Server,
    profile: String,
    project: Option<String>,
    email: String,
    scopes: Vec<String>,
    http: reqwest::Client,
    /// Google tokens by sorted scope list; one lock, so one refresh at a time.
    tokens: tokio::sync::Mutex<HashMap<Vec<String>, (Token, Instant)>>,
}

/// Runs the metadata server until interrupted.
pub async fn run(opts: MetadataOptions) -> Result<(), ClientError> {
    if !opts.listen.ip().is_loopback() {
        return Err(ClientError::Usage(format!(
            "the metadata server hands out your Google credential to whoever asks: it listens \
             on loopback addresses only, not {}",
            opts.listen
        )));
    }
    // Fails early, with the sign-in's message, rather than at the first client's request.
    let session = fresh_session(&opts.profile, MIN_LEFT_SECS).await?;
    let email = match opts.email {
        Some(e) => e,
        None => person_email(&session.access_token),
    };
    let scopes = if opts.scopes.is_empty() {
        vec![CLOUD_PLATFORM.to_owned()]
    } else {
        opts.scopes
    };
    let state = web::Data::new(State {
        server: opts.server,
        profile: opts.profile,
        project: opts.project,
        email,
        scopes,
        http: http_client(),
        tokens: Default::default(),
    });
    let listener = std::net::TcpListener::bind(opts.listen)
        .map_err(|e| ClientError::Usage(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let data = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(handle))
    })
    .workers(1)
    .listen(listener)
    .map_err(|e| ClientError::Usage(e.to_string()))?
    .run();
    println!("metadata server for {} on http://{addr}", state.email);
    println!("  export GCE_METADATA_HOST={addr} GCE_METADATA_IP={addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server.await.map_err(|e| ClientError::Usage(e.to_string()))
}

/// The `email` claim of the person's access token, else its `sub`: the token is the
/// person's own, read for a display name only, never trusted for anything.
fn person_email(token: &Token) -> String {
    use base64::Engine;
    let claims = token
        .expose()
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    ["email", "sub"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(|v| v.as_str()))
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .unwrap_or("person@sts-bridge.invalid")
        .to_owned()
}

fn answer(status: StatusCode) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder.insert_header(("Metadata-Flavor", "Google"));
    builder
}

fn text(status: StatusCode, body: String) -> HttpResponse {
    answer(status).content_type("application/text").body(body)
}

fn not_found() -> HttpResponse {
    text(StatusCode::NOT_FOUND, "Not Found\n".into())
}

/// Whether the `Host` header names this machine: a loopback address, `localhost`, or the
/// metadata server's own names.
fn local_host(req: &HttpRequest) -> bool {
    let Some(host) = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "localhost" | "metadata" | "metadata.google.internal"
    ) || name
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

async fn handle(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    // Google's server refuses proxied requests: a request a proxy forwarded may come from
    // anyone.
    if req.headers().contains_key("x-forwarded-for") {
        return text(
            StatusCode::FORBIDDEN,
            "Requests with X-Forwarded-For are refused.\n".into(),
        );
    }
    // A web page that rebinds its own name to 127.0.0.1 could otherwise read the person's
    // token: only names that mean this machine are answered.
    if !local_host(&req) {
        return text(
            StatusCode::FORBIDDEN,
            "Only requests for this machine's metadata server are answered.\n".into(),
        );
    }
    if req.path() == "/" {
        return text(StatusCode::OK, "computeMetadata/\n".into());
    }
    let flavored = req
        .headers()
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    if !flavored {
        return text(
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.\n".into(),
        );
    }
    if req.query_string().len() > MAX_QUERY {
        return text(StatusCode::BAD_REQUEST, "Query too long.\n".into());
    }
    let query: HashMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let Some(path) = req.path().strip_prefix("/computeMetadata/v1/") else {
        return not_found();
    };
    match path {
        "project/project-id" => match &state.project {
            Some(p) => text(StatusCode::OK, p.clone()),
            None => not_found(),
        },
        "universe/universe-domain" => text(StatusCode::OK, "googleapis.com".into()),
        "instance/service-accounts" | "instance/service-accounts/" => {
            text(StatusCode::OK, format!("default/\n{}/\n", state.email))
        }
        _ => match path.strip_prefix("instance/service-accounts/") {
            Some(rest) => account(&state, rest, &query).await,
            None => not_found(),
        },
    }
}

/// Paths under `instance/service-accounts/ACCOUNT/`.
async fn account(state: &State, rest: &str, query: &HashMap<String, String>) -> HttpResponse {
    let (name, item) = rest.split_once('/').unwrap_or((rest, ""));
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    if name != "default" && name != state.email {
        return not_found();
    }
    match item {
        "" if query.get("recursive").is_some_and(|v| v == "true") => {
            answer(StatusCode::OK).json(json!({
                "aliases": ["default"],
                "email": state.email,
                "scopes": state.scopes,
            }))
        }
        "" => text(StatusCode::OK, "aliases\nemail\nscopes\ntoken\n".into()),
        "email" => text(StatusCode::OK, state.email.clone()),
        "aliases" => text(StatusCode::OK, "default\n".into()),
        "scopes" => text(StatusCode::OK, format!("{}\n", state.scopes.join("\n"))),
        "token" => token(state, query.get("scopes").map(String::as_str)).await,
        _ => not_found(),
    }
}

/// Parses `?scopes=a,b`: the advertised scopes when absent.
fn requested_scopes(state: &State, scopes: Option<&str>) -> Result<Vec<String>, String> {
    let Some(scopes) = scopes.filter(|s| !s.is_empty()) else {
        return Ok(state.scopes.clone());
    };
    let mut list: Vec<String> = scopes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.len() > MAX_SCOPES {
        return Err(format!("at most {MAX_SCOPES} scopes"));
    }
    if let Some(bad) = list
        .iter()
        .find(|s| s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(format!("scope `{}` is not a scope", bad.escape_debug()));
    }
    list.sort();
    list.dedup();
    Ok(list)
}

async fn token(state: &State, scopes: Option<&str>) -> HttpResponse {
    let scopes = match requested_scopes(state, scopes) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let mut tokens = state.tokens.lock().await;
    let fresh = tokens
        .get(&scopes)
        .filter(|(_, expiry)| expiry.saturating_duration_since(Instant::now()) > REFRESH_AHEAD)
        .cloned();
    let (access_token, expiry) = match fresh {
        Some(found) => found,
        None => match google_token(state, &scopes).await {
            Ok(got) => {
                if tokens.len() >= MAX_CACHED {
                    tokens.clear();
                }
                tokens.insert(scopes, got.clone());
                got
            }
            Err(e) => return refusal(&e),
        },
    };
    let expires_in = expiry.saturating_duration_since(Instant::now()).as_secs();
    answer(StatusCode::OK).json(json!({
        "access_token": access_token.expose(),
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
}

async fn google_token(state: &State, scopes: &[String]) -> Result<(Token, Instant), ClientError> {
    let session = fresh_session(&state.profile, MIN_LEFT_SECS).await?;
    let got = exchange(&state.http, &state.server, &session.access_token, scopes).await?;
    // The server's word on the lifetime, bounded: no Google access token lives past 12 h.
    let lifetime = Duration::from_secs(got.expires_in.min(MAX_LIFETIME_SECS));
    Ok((got.access_token, Instant::now() + lifetime))
}

/// The error a client library shows: its text names what to do. Passing trouble answers
/// 503, which the libraries retry; anything a retry cannot fix answers 403.
fn refusal(e: &ClientError) -> HttpResponse {
    eprintln!("metadata server: no token: {e}");
    let status = match e {
        ClientError::ServerUnreachable { .. } | ClientError::IssuerUnreachable { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::FORBIDDEN,
    };
    text(status, format!("sts-bridge metadata server: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            server: Server::new("http://127.0.0.1:1", "bigquery").unwrap(),
            profile: "default".into(),
            project: None,
            email: "alice@example.com".into(),
            scopes: vec![CLOUD_PLATFORM.into()],
            http: http_client(),
            tokens: Default::default(),
        }
    }

    #[test]
    fn token_scopes_default_to_the_advertised_ones_and_are_sorted() {
        let s = state();
        assert_eq!(requested_scopes(&s, None).unwrap(), vec![CLOUD_PLATFORM]);
        assert_eq!(
            requested_scopes(&s, Some("b,a,,b")).unwrap(),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn odd_or_too_many_scopes_are_refused() {
        let s = state();
        assert!(requested_scopes(&s, Some("a b")).is_err());
        let many = vec!["x"; MAX_SCOPES + 1].join(",");
        assert!(requested_scopes(&s, Some(&many)).is_err());
    }

    #[test]
    fn the_email_comes_from_the_token_claims() {
        use base64::Engine;
        let encode = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let with_email = format!(
            "h.{}.s",
            encode(json!({"sub": "auth0|a", "email": "a@x.org"}))
        );
        assert_eq!(person_email(&Token::new(with_email)), "a@x.org");
        let sub_only = format!("h.{}.s", encode(json!({"sub": "auth0|a"})));
        assert_eq!(person_email(&Token::new(sub_only)), "auth0|a");
        assert_eq!(
            person_email(&Token::new("opaque")),
            "person@sts-bridge.invalid"
        );
    }
}
