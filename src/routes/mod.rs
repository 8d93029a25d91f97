//! HTTP handlers: parse, call the broker, map errors. Nothing else.

mod admin;
mod error;
mod health;
mod token;

pub use admin::{lift, list_issuances, revoke};
pub use error::ApiError;
pub use health::{healthz, metrics, readyz};
pub use token::{token, MAX_BODY_BYTES};

use crate::broker::Broker;
use crate::config::ClientSettings;
use std::sync::Arc;

/// State shared by all handlers.
pub struct AppState {
    /// The exchange engine.
    pub broker: Arc<Broker>,
    /// Clients allowed to authenticate with HTTP Basic.
    pub clients: Vec<ClientSettings>,
    /// Seconds a caller is told to wait on 503.
    pub retry_after_secs: u64,
    /// Permission an admin token must carry.
    pub admin_permission: String,
}
