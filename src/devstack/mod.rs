//! Development stack: a local Auth0-shaped issuer and a Google STS stand-in, on loopback
//! only. Started by `sts-bridge dev` and by the tests; never part of a production config.

pub mod cli;
mod google;
mod issuer;

pub use google::{GoogleStandIn, IssuedToken, StsCall};
pub use issuer::{
    DevIssuer, MintRequest, DEV_AUDIENCE, DEV_CLIENT, DEV_GROUPS_CLAIM, DEV_ROLES_CLAIM,
};

use crate::config::{
    IssuerSettings, LogSettings, PolicySettings, Settings, TargetKind, TargetSettings,
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
            issuer: issuer.issuer(),
            audiences: vec![DEV_AUDIENCE.into()],
            algorithms: vec!["RS256".into()],
            leeway_secs: 30,
            groups_claim: Some(DEV_GROUPS_CLAIM.into()),
            roles_claim: Some(DEV_ROLES_CLAIM.into()),
            jwks_min_refetch_secs: 60,
            jwks_refresh_secs: 300,
            discovery_url: None,
            cache_key_claims: None,
            email_claim: None,
            name_claim: None,
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
        }],
        log: LogSettings {
            format: "text".into(),
            filter: "info".into(),
        },
        ..Settings::default()
    };
    settings.google.sts_url = google.token_url();
    settings
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
