//! The person's Google credential from sts-bridge: the token exchange itself
//! (`print-access-token`, the metadata server), and the `external_account` file that lets
//! Google's libraries do it (`credentials-file`).

use super::ClientError;
use crate::rfc8693::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT};
use crate::secret::Token;
use serde::Deserialize;
use serde_json::{json, Value};

/// How long google-auth may let `auth0-token` run, in milliseconds.
const EXECUTABLE_TIMEOUT_MILLIS: u64 = 30_000;
/// Largest answer read from sts-bridge.
const MAX_ANSWER: usize = 64 * 1024;

/// Where sts-bridge is and which of its targets to use.
#[derive(Debug, Clone)]
pub struct Server {
    base: String,
    target: String,
}

impl Server {
    /// Checks `url` (https, or plain http on loopback) and `target`.
    pub fn new(url: &str, target: &str) -> Result<Self, ClientError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ClientError::Usage(format!("--server `{url}` is not a URL: {e}")))?;
        if !crate::config::is_secure_url(&parsed) {
            return Err(ClientError::Usage(format!(
                "--server `{url}` must use https (plain http only on loopback addresses)"
            )));
        }
        if target.is_empty() || target.len() > 512 || target.chars().any(char::is_whitespace) {
            return Err(ClientError::Usage(format!(
                "--target `{target}`: give a target name configured in sts-bridge"
            )));
        }
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            target: target.to_owned(),
        })
    }

    /// The token exchange endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/v1/token", self.base)
    }

    /// The token introspection endpoint (gcloud names the account through it).
    pub fn introspect_url(&self) -> String {
        format!("{}/v1/introspect", self.base)
    }
}

/// A Google access token and how long it is valid.
#[derive(Debug, Clone)]
pub struct GoogleToken {
    /// The token.
    pub access_token: Token,
    /// Seconds of validity when it was received.
    pub expires_in: u64,
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct Refusal {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Exchanges the person's `subject` token at sts-bridge for a Google token with `scopes`
/// (the target's default scopes when empty).
pub async fn exchange(
    http: &reqwest::Client,
    server: &Server,
    subject: &Token,
    scopes: &[String],
) -> Result<GoogleToken, ClientError> {
    let url = server.token_url();
    let mut form = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token_type", TOKEN_TYPE_JWT),
        ("requested_token_type", TOKEN_TYPE_ACCESS_TOKEN),
        ("audience", server.target.as_str()),
        ("subject_token", subject.expose()),
    ];
    let scope = scopes.join(" ");
    if !scope.is_empty() {
        form.push(("scope", &scope));
    }
    let unreachable = |cause: String| ClientError::ServerUnreachable {
        url: url.clone(),
        cause,
    };
    let response = http
        .post(&url)
        .form(&form)
        .send()
        .await
        .map_err(|e| unreachable(crate::causes::chain(&e)))?;
    let status = response.status();
    let body = super::read_capped(response, MAX_ANSWER)
        .await
        .map_err(unreachable)?;
    if status.is_success() {
        let granted: Granted = serde_json::from_slice(&body)
            .map_err(|e| unreachable(format!("not a token answer: {e}")))?;
        return Ok(GoogleToken {
            access_token: Token::new(granted.access_token),
            expires_in: granted.expires_in,
        });
    }
    match serde_json::from_slice::<Refusal>(&body) {
        Ok(r) if !r.error.is_empty() => Err(ClientError::ServerRefused {
            status: status.as_u16(),
            error: r.error,
            description: r.error_description,
        }),
        // Not sts-bridge's flat OAuth error: a proxy or another service answered.
        _ => Err(unreachable(format!(
            "answered HTTP {status} without an OAuth error (is --server the sts-bridge address?)"
        ))),
    }
}

/// Quotes `word` for the POSIX shell syntax google-auth splits `command` with.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// An `external_account` file whose subject token comes from `exe auth0-token` and whose
/// exchange goes to `server`; with `quota_project`, the libraries bill API calls to it
/// (`x-goog-user-project`).
pub fn credentials_file(
    server: &Server,
    exe: &std::path::Path,
    profile: &str,
    quota_project: Option<&str>,
) -> Value {
    let command = format!(
        "{} auth0-token --profile {}",
        shell_quote(&exe.display().to_string()),
        shell_quote(profile)
    );
    let mut file = json!({
        "type": "external_account",
        "audience": server.target,
        "subject_token_type": TOKEN_TYPE_JWT,
        "token_url": server.token_url(),
        "token_info_url": server.introspect_url(),
        "credential_source": {
            "executable": {
                "command": command,
                "timeout_millis": EXECUTABLE_TIMEOUT_MILLIS,
            }
        }
    });
    if let Some(project) = quota_project {
        file["quota_project_id"] = project.into();
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote("/usr/bin/sts-bridge"), "/usr/bin/sts-bridge");
        assert_eq!(shell_quote("/home/a b/x"), "'/home/a b/x'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn server_must_be_https_unless_loopback() {
        assert!(Server::new("http://sts.example.com", "bq").is_err());
        assert!(Server::new("https://sts.example.com/", "bq").is_ok());
        assert!(Server::new("http://127.0.0.1:8080", "bq").is_ok());
        assert!(Server::new("https://sts.example.com", "a b").is_err());
    }

    #[test]
    fn credentials_file_names_the_token_and_introspection_routes() {
        let server = Server::new("https://sts.example.com/", "bigquery").unwrap();
        let file = credentials_file(
            &server,
            std::path::Path::new("/opt/sts bridge"),
            "work",
            None,
        );
        assert!(file.get("quota_project_id").is_none());
        assert_eq!(file["token_url"], "https://sts.example.com/v1/token");
        assert_eq!(
            file["token_info_url"],
            "https://sts.example.com/v1/introspect"
        );
        assert_eq!(file["audience"], "bigquery");
        assert_eq!(
            file["credential_source"]["executable"]["command"],
            "'/opt/sts bridge' auth0-token --profile work"
        );
        let billed = credentials_file(&server, std::path::Path::new("/x"), "p", Some("proj-1"));
        assert_eq!(billed["quota_project_id"], "proj-1");
    }
}
