//! `[http]`: how strictly the listeners treat what callers send.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Inbound HTTP behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Milliseconds a caller has to send a whole request body; a body still incomplete
    /// then is answered 408 and its connection closed.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Whether error descriptions may name other targets, the billing project and the
    /// allowed scopes (useful while setting up; off in production).
    #[serde(default)]
    pub verbose_errors: bool,
    /// Milliseconds a whole exchange may take, body included; past it the caller gets a
    /// 503 instead of waiting on.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Proxies (CIDRs, or single addresses) whose `Forwarded` / `X-Forwarded-For` headers
    /// name the client; from any other peer those headers are ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Seconds exchanges under way may take to finish after SIGTERM before the process
    /// exits anyway; keep it below the platform's grace period (Kubernetes: 30 s).
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
}

fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_shutdown_timeout_secs() -> u64 {
    20
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_timeout_ms: default_body_timeout_ms(),
            verbose_errors: false,
            request_timeout_ms: default_request_timeout_ms(),
            trusted_proxies: Vec::new(),
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
        }
    }
}

impl HttpSettings {
    /// The body timeout as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// The whole-exchange timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The trusted proxies, parsed (validation has checked them).
    pub fn trusted_proxy_nets(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| parse_net(p))
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=300_000).contains(&self.body_timeout_ms) {
            return Err(invalid(
                "http.body_timeout_ms",
                "must be between 100 and 300000 milliseconds",
            ));
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return Err(invalid(
                "http.request_timeout_ms",
                "must be between 100 and 600000 milliseconds",
            ));
        }
        if !(1..=3600).contains(&self.shutdown_timeout_secs) {
            return Err(invalid(
                "http.shutdown_timeout_secs",
                "must be between 1 and 3600",
            ));
        }
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            if parse_net(p).is_none() {
                return Err(invalid(
                    format!("http.trusted_proxies[{i}]"),
                    format!("`{p}` is not a CIDR (10.0.0.0/8, fd00::/8) or an IP address"),
                ));
            }
        }
        Ok(())
    }
}

/// A CIDR, or a single address as its own /32 or /128.
fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}
