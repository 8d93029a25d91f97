//! `sts-bridge dev` and `sts-bridge dev token`.

use super::{BigQueryStandIn, DevIssuer, GoogleStandIn, MintRequest};
use crate::startup::Application;
use crate::telemetry;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The dev issuer's address when `--issuer-listen` is not given.
pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8081/";

/// Where the dev stack listens and writes.
pub struct DevOptions {
    /// The service.
    pub listen: SocketAddr,
    /// The dev issuer.
    pub issuer_listen: SocketAddr,
    /// The Google STS stand-in.
    pub google_listen: SocketAddr,
    /// The BigQuery stand-in.
    pub bigquery_listen: SocketAddr,
    /// Folder for the token and credential files.
    pub dir: PathBuf,
}

/// Runs the service, the dev issuer and the Google and BigQuery stand-ins until
/// interrupted.
pub async fn run(mut opts: DevOptions) -> Result<(), String> {
    let (service_listener, issuer_listener, google_listener, bigquery_listener) = (
        bind(opts.listen, "--listen")?,
        bind(opts.issuer_listen, "--issuer-listen")?,
        bind(opts.google_listen, "--google-listen")?,
        bind(opts.bigquery_listen, "--bigquery-listen")?,
    );
    // Port 0 picks a free port: print and write the address actually bound.
    opts.listen = service_listener.local_addr().map_err(|e| e.to_string())?;
    let issuer = DevIssuer::start(issuer_listener).map_err(|e| e.to_string())?;
    let google = GoogleStandIn::start(google_listener).map_err(|e| e.to_string())?;
    let bigquery =
        BigQueryStandIn::start(bigquery_listener, google.clone()).map_err(|e| e.to_string())?;
    // `sts-bridge login` against the dev issuer signs alice in without a browser.
    issuer.auto_approve(Some(MintRequest {
        sub: "auth0|alice".into(),
        permissions: vec!["read:bigquery".into()],
        extra: serde_json::Map::from_iter([("email".to_owned(), "alice@example.com".into())]),
        ..Default::default()
    }));
    let mut settings = super::settings(&issuer, &google, opts.listen);
    settings.audit.sqlite_path = opts.dir.join("sts-bridge.sqlite");
    // gcloud asks for its own scope list; the dev target grants the part it allows.
    for target in &mut settings.targets {
        target.narrow_scopes = true;
    }
    // The safe setup first: Google trusts only the bridge, which signs its own assertions.
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    super::use_assertion_mode(
        &mut settings,
        &google,
        &opts.dir.join("bridge-signing-key.pem"),
    )?;
    telemetry::init(&settings.log.format, &settings.log.filter);
    let app = Application::build_with_listener(settings, service_listener)
        .await
        .map_err(|e| e.to_string())?;
    let files =
        write_files(&opts, &issuer).map_err(|e| format!("writing {}: {e}", opts.dir.display()))?;
    println!(
        "{}",
        instructions(&opts, &issuer, &google, &bigquery, &files)
    );
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

/// Binds a loopback address; when it is taken, says which flag picks another.
fn bind(addr: SocketAddr, flag: &str) -> Result<std::net::TcpListener, String> {
    super::bind_loopback(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{addr} is already in use (is another `make run` still running?); stop it or \
             choose another address with {flag}, e.g. `cargo run -- dev {flag} 127.0.0.1:0` \
             (port 0 picks a free port)"
        ),
        _ => format!("{addr} ({flag}): {e}"),
    })
}

/// Writes a file that holds a token: readable by its owner only.
pub fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    // An older file keeps its mode on truncation: tighten it too.
    #[cfg(unix)]
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
}

struct DevFiles {
    dir: PathBuf,
    token: PathBuf,
    credentials: PathBuf,
}

fn write_files(opts: &DevOptions, issuer: &DevIssuer) -> std::io::Result<DevFiles> {
    std::fs::create_dir_all(&opts.dir)?;
    let dir = std::fs::canonicalize(&opts.dir)?;
    let token = dir.join("alice.token");
    let credentials = dir.join("external_account.json");
    let minted = issuer.mint(&MintRequest {
        sub: "auth0|alice".into(),
        permissions: vec!["read:bigquery".into()],
        ..Default::default()
    });
    write_secret_file(&token, &minted)?;
    let file = super::external_account_file(&format!("http://{}", opts.listen), &token, true);
    std::fs::write(
        &credentials,
        serde_json::to_string_pretty(&file).unwrap_or_default(),
    )?;
    Ok(DevFiles {
        dir,
        token,
        credentials,
    })
}

fn instructions(
    opts: &DevOptions,
    issuer: &DevIssuer,
    google: &GoogleStandIn,
    bigquery: &BigQueryStandIn,
    files: &DevFiles,
) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "sts-bridge".into());
    let service = format!("http://{}", opts.listen);
    // `dev token` asks the default address unless told otherwise.
    let issuer_flag = if issuer.issuer() == DEFAULT_ISSUER {
        String::new()
    } else {
        format!(" --issuer {}", issuer.issuer())
    };
    format!(
        r#"
sts-bridge development stack (loopback only; the issuer mints tokens for anyone)
  service            {service}
  dev issuer         {issuer}  (Auth0-shaped: discovery, JWKS, POST /dev/token)
  Google STS stand-in {google}
  BigQuery stand-in  {bigquery}  (accepts only the STS stand-in's tokens)
  bridge issuer      {bridge}  (assertion mode: the stand-in trusts only this issuer)

1. Get an access token for a person from the dev issuer:
     TOKEN=$({exe} dev token{issuer_flag} --sub 'auth0|alice')

2. Exchange it for a Google credential, exactly as Google client libraries do:
     curl -s {service}/v1/token \
       -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
       -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \
       -d audience={target} \
       --data-urlencode subject_token="$TOKEN"

   The target is in assertion mode: sts-bridge signs its own short-lived JWT for the
   person and exchanges that. The stand-in, like a provider set up as in
   docs/workforce-identity.md, refuses the Auth0 token itself:
     curl -s {google} \
       -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
       -d requested_token_type=urn:ietf:params:oauth:token-type:access_token \
       -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \
       -d audience={provider} \
       -d scope=https://www.googleapis.com/auth/cloud-platform \
       --data-urlencode 'options={{"userProject":"{project}"}}' \
       --data-urlencode subject_token="$TOKEN"
   The keys a real provider is given (what `sts-bridge jwks --config FILE` prints):
     curl -s {service}/.well-known/jwks.json

3. Or let Python's google-auth do it with the external_account file written for you
   (its credential_source reads {token}, a token for auth0|alice valid for an hour;
   `make venv-demo` installs google-auth into .venv in seconds):
     .venv/bin/python tests/python/refresh_external_account.py {credentials}
   After the hour, mint a fresh one into the same file (written 0600):
     {exe} dev token{issuer_flag} --sub 'auth0|alice' --permission read:bigquery --out {token}

4. Or sign in as a data engineer would (the dev issuer approves alice at once) and let
   any Google client library use a local metadata server:
     {exe} login --issuer {issuer} --client-id {client} --audience {audience}
     {exe} print-access-token --server {service} --target {target}
     {exe} metadata-server --server {service} --target {target} --listen 127.0.0.1:0

5. Or use gcloud and bq as alice with the external_account file, in a gcloud
   configuration of their own (your usual one stays as it is):
     export CLOUDSDK_CONFIG={gcloud_config}
     gcloud auth login --cred-file={credentials}
     gcloud auth print-access-token
     bq --api={bigquery} --discovery_file="$(gcloud info --format='value(installation.sdk_root)')/platform/bq/discovery_next/bigquery.json" --project_id={project} query --nouse_legacy_sql 'SELECT SESSION_USER()'

Press Ctrl-C to stop.
"#,
        issuer = issuer.issuer(),
        google = google.token_url(),
        target = super::DEV_TARGET,
        client = super::DEV_CLIENT,
        audience = super::DEV_AUDIENCE,
        bridge = service,
        provider = super::DEV_PROVIDER,
        project = super::DEV_USER_PROJECT,
        credentials = files.credentials.display(),
        token = files.token.display(),
        bigquery = bigquery.endpoint(),
        gcloud_config = files.dir.join("gcloud").display(),
    )
}

/// Asks the running dev issuer for a token and prints it, or writes it to `out` (0600).
pub async fn print_token(
    issuer: &str,
    req: &MintRequest,
    out: Option<&Path>,
) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("issuer {issuer}: {e}"))?;
    if !crate::config::is_loopback_host(&url) {
        return Err("the dev issuer only runs on loopback addresses".into());
    }
    let endpoint = url.join("dev/token").map_err(|e| e.to_string())?;
    let response = reqwest::Client::new()
        .post(endpoint)
        .json(req)
        .send()
        .await
        .map_err(|e| {
            format!("cannot reach the dev issuer at {issuer} (is `make run` running?): {e}")
        })?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    match body.get("access_token").and_then(|t| t.as_str()) {
        Some(token) if status.is_success() => match out {
            Some(path) => write_secret_file(path, token)
                .map_err(|e| format!("writing {}: {e}", path.display())),
            None => {
                println!("{token}");
                Ok(())
            }
        },
        _ => Err(format!("dev issuer answered {status}: {body}")),
    }
}
