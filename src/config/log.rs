//! `[log]`: log output.

use serde::{Deserialize, Serialize};

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json` (production) or `text`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// `tracing` filter directive, e.g. `info,sts_bridge=debug`.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

fn default_log_format() -> String {
    "json".into()
}
fn default_log_filter() -> String {
    "info".into()
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            filter: default_log_filter(),
        }
    }
}
