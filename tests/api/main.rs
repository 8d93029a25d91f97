//! Black-box tests: the real application on a random port, the dev issuer as Auth0 and the
//! Google STS stand-in, all over real HTTP.

/// Runs a behaviour once on SQLite and once on Postgres (defined before the modules so
/// that every one of them sees it).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )*};
}

mod actor;
mod admin;
mod assertion;
mod cache;
mod callers;
mod data_tools;
mod db;
mod edges;
mod exchange;
mod firebase;
mod forwardable;
mod google_auth;
mod helpers;
mod impersonate;
mod introspect;
mod keys;
mod limits;
mod metrics;
mod policy;
mod proxy;
#[path = "../common/python.rs"]
mod python;
mod records;
mod redis;
mod reload;
mod revocation;
mod revocation_push;
mod self_healing;
mod service_account;
mod shared_tier;
mod shutdown;
mod token_cache;
mod upstream;
mod validation;
mod wire;
