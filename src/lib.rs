//! sts-bridge: exchanges an OIDC provider's access token (Auth0 first) for a short-lived
//! Google Cloud credential through Workforce Identity Federation.

pub mod assertion;
pub mod audit;
pub mod breaker;
pub mod broker;
pub mod causes;
pub mod client;
pub mod config;
pub mod devstack;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod google;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod rfc8693;
pub mod routes;
pub mod secret;
pub mod startup;
pub mod telemetry;
