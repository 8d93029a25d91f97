//! `[metrics]`: where Prometheus scrapes `/metrics`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Metrics endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// A listener of its own for `/metrics` (and the health checks); unset: the public
    /// listener serves `/metrics`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}
