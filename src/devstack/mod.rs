//! Development stack: a local Auth0-shaped issuer, a Google STS stand-in and a BigQuery
//! stand-in, on loopback only. Started by `sts-bridge dev` and by the tests; never part of
//! a production config.

mod bigquery;
pub mod cli;
mod google;
mod iam;
mod issuer;
mod login;

pub use bigquery::{BigQueryCall, BigQueryStandIn};
pub use google::{BridgeTrust, Fault, GoogleStandIn, IssuedToken, StsCall};
pub use iam::{google_error_body, IamCall};
pub use issuer::{
    DevIssuer, MintRequest, DEV_AUDIENCE, DEV_CLIENT, DEV_GROUPS_CLAIM, DEV_ROLES_CLAIM,
};

use crate::assertion::Minter;
use crate::config::{
    AssertionKeySettings, AssertionSettings, IdentityAttribute, IssuerSettings, KeyState,
    LogSettings, PolicySettings, Settings, TargetAssertion, TargetKind, TargetMode, TargetSettings,
};
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

/// Name of the target the dev stack configures.
pub const DEV_TARGET: &str = "bigquery";
/// Workforce provider of the dev target.
pub const DEV_PROVIDER: &str =
    "//iam.googleapis.com/locations/global/workforcePools/dev-pool/providers/dev-auth0";
/// Billing project of the dev target.
pub const DEV_USER_PROJECT: &str = "dev-project";
/// Client id of the dev provider when it trusts the bridge (the assertions' `aud`).
pub const DEV_BRIDGE_CLIENT_ID: &str = "sts-bridge-dev";
/// Key id of the dev stack's bridge signing key.
pub const DEV_BRIDGE_KID: &str = "dev-bridge-1";
/// Google's broadest scope.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// BigQuery's scope.
pub const BIGQUERY: &str = "https://www.googleapis.com/auth/bigquery";

/// Refuses anything but a loopback address: the dev stack mints tokens for anyone.
pub fn ensure_loopback(addr: SocketAddr) -> std::io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the development stack only binds to loopback addresses, not {addr}"),
        ))
    }
}

/// Serves `routes` with `state` on a loopback `listener`, one worker, in the background.
fn serve<T: Send + Sync + 'static>(
    listener: TcpListener,
    state: Arc<T>,
    routes: fn(&mut web::ServiceConfig),
) -> std::io::Result<ServerHandle> {
    ensure_loopback(listener.local_addr()?)?;
    let data = web::Data::from(state);
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
        .workers(1)
        .listen(listener)?
        .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

/// Binds a loopback listener, refusing other addresses.
pub fn bind_loopback(addr: SocketAddr) -> std::io::Result<TcpListener> {
    ensure_loopback(addr)?;
    TcpListener::bind(addr)
}

/// Settings that point the service at the dev issuer and the Google stand-in.
pub fn settings(issuer: &DevIssuer, google: &GoogleStandIn, listen: SocketAddr) -> Settings {
    let mut settings = Settings {
        listen,
        issuers: vec![IssuerSettings {
            groups_claim: Some(DEV_GROUPS_CLAIM.into()),
            roles_claim: Some(DEV_ROLES_CLAIM.into()),
            ..IssuerSettings::new(issuer.issuer(), vec![DEV_AUDIENCE.into()])
        }],
        targets: vec![TargetSettings {
            name: DEV_TARGET.into(),
            kind: TargetKind::Workforce,
            provider: DEV_PROVIDER.into(),
            user_project: Some(DEV_USER_PROJECT.into()),
            allowed_scopes: vec![CLOUD_PLATFORM.into(), BIGQUERY.into()],
            default_scopes: vec![CLOUD_PLATFORM.into()],
            subject_token_type: crate::rfc8693::TOKEN_TYPE_JWT.into(),
            // Every token the dev issuer mints is for its one client, as an Auth0 SPA's
            // would be; machine tokens stay out, as in production.
            policy: PolicySettings {
                clients: vec![DEV_CLIENT.into()],
                ..PolicySettings::default()
            },
            mode: crate::config::TargetMode::PassThrough,
            assertion: None,
            ..TargetSettings::default()
        }],
        log: LogSettings {
            format: "text".into(),
            filter: "info".into(),
        },
        ..Settings::default()
    };
    settings.google.sts_url = google.token_url();
    settings.google.iam_credentials_url = google.iam_url();
    // Setting up is easier when refusals name what would have been accepted.
    settings.http.verbose_errors = true;
    settings
}

/// Puts the dev target in assertion mode, signing with the key in `key_file` (written with
/// mode 0600 when missing), and makes the stand-in's provider trust the bridge alone, with
/// the keys uploaded as `create-oidc --jwk-json-path` would.
pub fn use_assertion_mode(
    settings: &mut Settings,
    google: &GoogleStandIn,
    key_file: &Path,
) -> Result<(), String> {
    if !key_file.exists() {
        crate::assertion::generate_file(crate::assertion::KeyAlgorithm::Es256, key_file)?;
    }
    let assertion = AssertionSettings {
        issuer: format!("http://{}", settings.listen),
        keys: vec![AssertionKeySettings {
            kid: DEV_BRIDGE_KID.into(),
            file: key_file.to_owned(),
            state: KeyState::Active,
        }],
    };
    google.trust_bridge(
        DEV_PROVIDER,
        bridge_trust(&assertion, DEV_BRIDGE_CLIENT_ID)?,
    );
    assertion_target(settings, assertion);
    Ok(())
}

/// Puts the dev target in assertion mode for the bridge `assertion` describes, passing
/// groups, email and name.
pub fn assertion_target(settings: &mut Settings, assertion: AssertionSettings) {
    settings.assertion = Some(assertion);
    for target in settings.targets.iter_mut().filter(|t| t.name == DEV_TARGET) {
        target.mode = TargetMode::Assertion;
        target.assertion = Some(TargetAssertion {
            client_id: DEV_BRIDGE_CLIENT_ID.into(),
            lifetime_secs: 300,
            attributes: [
                ("groups".to_owned(), IdentityAttribute::Groups),
                ("email".to_owned(), IdentityAttribute::Email),
                ("name".to_owned(), IdentityAttribute::Name),
            ]
            .into(),
        });
    }
}

/// What a provider trusting the bridge of `assertion` is configured with: its issuer,
/// `client_id`, and the JWKS `sts-bridge jwks` prints.
pub fn bridge_trust(assertion: &AssertionSettings, client_id: &str) -> Result<BridgeTrust, String> {
    let minter = Minter::load(assertion).map_err(|e| e.to_string())?;
    let jwks = serde_json::to_value(minter.jwks())
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())?;
    Ok(BridgeTrust {
        issuer: assertion.issuer.clone(),
        client_id: client_id.into(),
        jwks,
    })
}

/// A Google `external_account` credential file whose `token_url` is sts-bridge and whose
/// subject token is read from `token_file`.
pub fn external_account_file(
    service: &str,
    token_file: &Path,
    user_project: bool,
) -> serde_json::Value {
    let mut file = serde_json::json!({
        "type": "external_account",
        "audience": DEV_PROVIDER,
        "subject_token_type": crate::rfc8693::TOKEN_TYPE_JWT,
        "token_url": format!("{service}/v1/token"),
        // gcloud names the account from the introspection answer.
        "token_info_url": format!("{service}/v1/introspect"),
        "credential_source": { "file": token_file.display().to_string() },
    });
    if user_project {
        file["workforce_pool_user_project"] = DEV_USER_PROJECT.into();
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_stack_refuses_non_loopback_addresses() {
        let err = bind_loopback("0.0.0.0:0".parse().unwrap()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(bind_loopback("127.0.0.1:0".parse().unwrap()).is_ok());
    }
}
