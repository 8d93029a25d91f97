//! Typed configuration: a TOML file plus `STS_BRIDGE__SECTION__KEY` environment overrides,
//! validated once at start-up with errors that name the key. One file per section; this module
//! imports nothing else from the crate but the RFC 8693 constants and the provider-name parser.

mod admin;
mod assertion;
mod audit;
mod breaker;
mod cache;
mod clients;
mod google;
mod http;
mod issuers;
mod jwks;
mod limits;
mod load_error;
mod log;
mod metrics;
mod policy;
mod summary;
mod targets;

pub use admin::AdminSettings;
pub use assertion::{
    AssertionKeySettings, AssertionSettings, IdentityAttribute, KeyState, TargetAssertion,
    TargetMode, MAX_ASSERTION_LIFETIME_SECS,
};
pub use audit::AuditSettings;
pub use breaker::BreakerSettings;
pub use cache::{CacheSettings, ValidatedTokenSettings, MIN_REFRESH_MARGIN_SECS};
pub use clients::{
    ClientSettings, PublicClientSettings, CLOUD_SDK_CLIENT_ID, CLOUD_SDK_CLIENT_SECRET,
};
pub use google::GoogleSettings;
pub use http::HttpSettings;
pub use issuers::{IssuerSettings, ASYMMETRIC_ALGORITHMS, FORWARDED_ALGORITHMS};
pub use jwks::JwksSettings;
pub use limits::{LimitsSettings, RateSettings};
pub use log::LogSettings;
pub use metrics::MetricsSettings;
pub use policy::{PolicySettings, MAX_LIFETIME_SECS};
pub use targets::{
    FirebaseSettings, MappedClaim, ServiceAccountMapping, TargetKind, TargetSettings,
    FIREBASE_RESERVED_CLAIMS, MAX_FIREBASE_CLAIMS_BYTES,
};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

/// The whole configuration of one sts-bridge process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP listener binds to.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Trusted token issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    /// Google credentials the service can hand out.
    #[serde(default)]
    pub targets: Vec<TargetSettings>,
    /// Clients allowed to authenticate with HTTP Basic.
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    /// Client ids a caller may claim with HTTP Basic without proving anything (the Cloud
    /// SDK's by default); recorded as claimed, they grant nothing.
    #[serde(default = "clients::default_public_clients")]
    pub public_clients: Vec<PublicClientSettings>,
    /// Whether `POST /v1/token` refuses callers that do not authenticate with HTTP Basic
    /// as a confidential client (a public client does not count).
    #[serde(default)]
    pub require_client_auth: bool,
    /// Google endpoints and outbound HTTP behaviour.
    #[serde(default)]
    pub google: GoogleSettings,
    /// How the issuers' discovery documents and key sets are fetched.
    #[serde(default)]
    pub jwks: JwksSettings,
    /// Credential cache.
    #[serde(default)]
    pub cache: CacheSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// Issuance records.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Admin API.
    #[serde(default)]
    pub admin: AdminSettings,
    /// Metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// The bridge's own issuer, for targets in assertion mode.
    #[serde(default)]
    pub assertion: Option<AssertionSettings>,
    /// Inbound HTTP strictness.
    #[serde(default)]
    pub http: HttpSettings,
    /// Rate limits per subject and per client address.
    #[serde(default)]
    pub limits: LimitsSettings,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            issuers: Vec::new(),
            targets: Vec::new(),
            clients: Vec::new(),
            public_clients: clients::default_public_clients(),
            require_client_auth: false,
            google: GoogleSettings::default(),
            jwks: JwksSettings::default(),
            cache: CacheSettings::default(),
            log: LogSettings::default(),
            audit: AuditSettings::default(),
            admin: AdminSettings::default(),
            metrics: MetricsSettings::default(),
            assertion: None,
            http: HttpSettings::default(),
            limits: LimitsSettings::default(),
        }
    }
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or has the wrong shape.
    #[error("configuration could not be loaded: {0}")]
    Load(String),
    /// A value is present but unacceptable.
    #[error("configuration key `{key}`: {problem}")]
    Invalid {
        /// Dotted path of the key, e.g. `targets[0].provider`.
        key: String,
        /// What is wrong and what would be accepted.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Settings {
    /// Loads `path` (when given) and the `STS_BRIDGE__…` environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("STS_BRIDGE__").split("__"));
        let mut settings: Settings = load_error::extract(&figment)?;
        // The conventional variable wins, so platforms that inject it need no mapping.
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            settings.audit.database_url = Some(url);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Facts that do not stop the service but that an operator should see: a target whose
    /// policy names nobody serves nobody.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self.targets
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.policy.names_anyone())
            .map(|(i, t)| {
                format!(
                    "configuration key `targets[{i}].policy`: target {} names no permission, role, group or client, so it refuses everyone",
                    t.name
                )
            })
            .collect();
        let needed = self.google.deadline_ms + self.audit.commit_timeout_ms;
        if self.http.request_timeout_ms < needed {
            warnings.push(format!(
                "configuration key `http.request_timeout_ms`: {} ms is less than google.deadline_ms + audit.commit_timeout_ms ({needed} ms), so a slow exchange is cut off before Google's retries or the record's commit could finish",
                self.http.request_timeout_ms
            ));
        }
        warnings
    }

    /// Pass-through targets forward the caller's token to Google, which accepts only
    /// RS256 and ES256: any other algorithm would be a refusal for every such token.
    fn check_forwarded_algorithms(&self) -> Result<(), ConfigError> {
        if !self
            .targets
            .iter()
            .any(|t| t.kind == TargetKind::Workforce && t.mode == TargetMode::PassThrough)
        {
            return Ok(());
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if let Some(alg) = issuer
                .algorithms
                .iter()
                .find(|a| !FORWARDED_ALGORITHMS.contains(&a.as_str()))
            {
                return Err(invalid(
                    format!("issuers[{i}].algorithms"),
                    format!(
                        "`{alg}` tokens are forwarded to Google by pass-through targets, and Google accepts only {}",
                        FORWARDED_ALGORITHMS.join(" and ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks every rule a running service relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.issuers.is_empty() {
            return Err(invalid(
                "issuers",
                "at least one trusted issuer is required",
            ));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(&format!("issuers[{i}]"))?;
        }
        let mut seen = HashSet::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            if !seen.insert(&issuer.issuer) {
                return Err(invalid(format!("issuers[{i}].issuer"), "listed twice"));
            }
        }
        if self.targets.is_empty() {
            return Err(invalid("targets", "at least one target is required"));
        }
        let mut names = HashSet::new();
        let mut providers = HashSet::new();
        for (i, target) in self.targets.iter().enumerate() {
            let key = format!("targets[{i}]");
            target.validate(&key)?;
            if !names.insert(&target.name) {
                return Err(invalid(format!("{key}.name"), "target name used twice"));
            }
            if target.kind == TargetKind::Workforce && !providers.insert(&target.provider) {
                return Err(invalid(
                    format!("{key}.provider"),
                    "two targets name the same provider, so an audience could not tell them apart",
                ));
            }
        }
        self.check_forwarded_algorithms()?;
        for (i, client) in self.clients.iter().enumerate() {
            client.validate(&format!("clients[{i}]"))?;
            if let Some(unknown) = client.targets.iter().find(|t| !names.contains(t)) {
                return Err(invalid(
                    format!("clients[{i}].targets"),
                    format!("`{unknown}` is not a configured target"),
                ));
            }
        }
        for (i, public) in self.public_clients.iter().enumerate() {
            let key = format!("public_clients[{i}]");
            public.validate(&key)?;
            if self.clients.iter().any(|c| c.id == public.id) {
                return Err(invalid(
                    format!("{key}.id"),
                    "also a confidential client in [[clients]]; an id is one or the other",
                ));
            }
        }
        if self.require_client_auth && self.clients.is_empty() {
            return Err(invalid(
                "require_client_auth",
                "no [[clients]] are configured, so every exchange would be refused",
            ));
        }
        self.validate_assertion()?;
        self.google.validate()?;
        self.jwks.validate()?;
        self.cache.validate()?;
        self.http.validate()?;
        self.limits.validate()?;
        self.audit.validate()?;
        let trusted: Vec<&str> = self.issuers.iter().map(|i| i.issuer.as_str()).collect();
        self.admin.validate(&trusted)?;
        for (key, addr) in [
            ("admin.listen", self.admin.listen),
            ("metrics.listen", self.metrics.listen),
        ] {
            if addr.is_some_and(|a| a == self.listen && a.port() != 0) {
                return Err(invalid(
                    key,
                    "must differ from `listen`; leave it unset to serve on the public listener",
                ));
            }
        }
        if !matches!(self.log.format.as_str(), "json" | "text") {
            return Err(invalid("log.format", "must be `json` or `text`"));
        }
        Ok(())
    }
}

/// A name of 1 to `max` letters, digits, '-', '_' or '.' (target names, key ids).
fn is_plain_name(value: &str, max: usize) -> bool {
    (1..=max).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `https://` anywhere; plain `http://` only towards the loopback interface.
fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(value).map_err(|e| invalid(key, format!("`{value}` is not a URL: {e}")))?;
    if is_secure_url(&url) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{value}` must use https (plain http is allowed only for loopback addresses)"),
        ))
    }
}

/// Whether `url` may be fetched: `https://` anywhere, plain `http://` only on loopback.
pub fn is_secure_url(url: &url::Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(url))
}

/// Whether `url` points at this machine's loopback interface.
pub fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Settings {
        Settings {
            issuers: vec![IssuerSettings::new(
                "https://tenant.auth0.com/".into(),
                vec!["https://sts-bridge".into()],
            )],
            targets: vec![TargetSettings {
                name: "bigquery".into(),
                kind: TargetKind::Workforce,
                provider: "//iam.googleapis.com/locations/global/workforcePools/p/providers/a0"
                    .into(),
                user_project: Some("123".into()),
                allowed_scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
                default_scopes: vec![],
                subject_token_type: crate::rfc8693::TOKEN_TYPE_JWT.into(),
                policy: PolicySettings {
                    any_groups: vec!["analysts".into()],
                    ..PolicySettings::default()
                },
                mode: TargetMode::PassThrough,
                assertion: None,
                ..TargetSettings::default()
            }],
            ..Settings::default()
        }
    }

    fn problem_key(s: &Settings) -> String {
        match s.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    fn firebase_target(claims: &[(&str, IdentityAttribute)]) -> TargetSettings {
        TargetSettings {
            name: "firestore".into(),
            kind: TargetKind::Firebase,
            policy: PolicySettings {
                any_permissions: vec!["read:notes".into()],
                ..PolicySettings::default()
            },
            firebase: Some(FirebaseSettings {
                service_account: "signer@p.iam.gserviceaccount.com".into(),
                claims: claims
                    .iter()
                    .map(|(name, from)| (name.to_string(), *from))
                    .collect(),
                lifetime_secs: 3600,
                key_file: None,
            }),
            ..TargetSettings::default()
        }
    }

    #[test]
    fn the_cloud_sdk_is_a_public_client_by_default_and_an_id_is_public_or_confidential() {
        let from_file: Settings = toml::from_str("").unwrap();
        assert_eq!(
            from_file.public_clients,
            vec![PublicClientSettings::cloud_sdk()]
        );
        let none: Settings = toml::from_str("public_clients = []").unwrap();
        assert!(none.public_clients.is_empty());

        let mut s = valid();
        s.clients = vec![ClientSettings {
            id: CLOUD_SDK_CLIENT_ID.into(),
            secret_sha256: "a".repeat(64),
            azp: Vec::new(),
            targets: Vec::new(),
        }];
        assert_eq!(problem_key(&s), "public_clients[0].id");
        s.clients.clear();
        s.public_clients.push(PublicClientSettings {
            id: "a:b".into(),
            secret: String::new(),
        });
        assert_eq!(problem_key(&s), "public_clients[1].id");
    }

    #[test]
    fn firebase_reserved_claim_names_are_refused_naming_the_claim() {
        for reserved in FIREBASE_RESERVED_CLAIMS {
            let mut s = valid();
            s.targets.push(firebase_target(&[(
                reserved,
                IdentityAttribute::Permissions,
            )]));
            assert_eq!(
                problem_key(&s),
                format!("targets[1].firebase.claims.{reserved}")
            );
        }
        let mut s = valid();
        s.targets.push(firebase_target(&[(
            "permissions",
            IdentityAttribute::Permissions,
        )]));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn firebase_tokens_live_at_most_an_hour_and_kinds_take_only_their_settings() {
        let mut s = valid();
        let mut t = firebase_target(&[]);
        t.firebase.as_mut().unwrap().lifetime_secs = 3601;
        s.targets.push(t);
        assert_eq!(problem_key(&s), "targets[1].firebase.lifetime_secs");

        let mut s = valid();
        let mut t = firebase_target(&[]);
        t.service_accounts = vec![ServiceAccountMapping {
            claim: MappedClaim::Roles,
            value: "analyst".into(),
            service_account: "a@p.iam.gserviceaccount.com".into(),
        }];
        s.targets.push(t);
        assert_eq!(problem_key(&s), "targets[1].service_accounts");

        let mut s = valid();
        s.targets[0].service_account = Some("not-an-email".into());
        assert_eq!(problem_key(&s), "targets[0].service_account");

        let mut s = valid();
        let mut t = firebase_target(&[]);
        t.kind = TargetKind::Impersonate;
        t.firebase = None;
        s.targets.push(t);
        assert_eq!(problem_key(&s), "targets[1].service_accounts");
    }

    #[test]
    fn breaker_and_key_set_settings_out_of_range_name_their_key() {
        let mut s = valid();
        s.google.breaker.failure_threshold = 0;
        assert_eq!(problem_key(&s), "google.breaker.failure_threshold");
        let mut s = valid();
        s.jwks.breaker.cool_down_secs = 0;
        assert_eq!(problem_key(&s), "jwks.breaker.cool_down_secs");
        let mut s = valid();
        s.jwks.timeout_ms = 10;
        assert_eq!(problem_key(&s), "jwks.timeout_ms");
        let mut s = valid();
        s.issuers[0].jwks_max_age_secs = s.issuers[0].jwks_refresh_secs;
        assert_eq!(problem_key(&s), "issuers[0].jwks_max_age_secs");
        let mut s = valid();
        s.issuers[0].jwks_allowed_hosts = vec!["https://keys.example.com".into()];
        assert_eq!(problem_key(&s), "issuers[0].jwks_allowed_hosts");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type is fixed by figment
    fn the_documented_example_configuration_is_valid() {
        // Inside a jail: the environment is process-wide and another test changes it.
        figment::Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
            let s = Settings::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(s.targets[0].name, "bigquery");
            assert_eq!(s.issuers[0].issuer, "https://example-tenant.eu.auth0.com/");
            assert!(s.warnings().is_empty(), "{:?}", s.warnings());
            Ok(())
        });
    }

    #[test]
    fn revocation_push_retry_out_of_range_names_its_key() {
        for ms in [0, 30_001] {
            let mut s = valid();
            s.audit.revocation_push_retry_ms = ms;
            assert_eq!(problem_key(&s), "audit.revocation_push_retry_ms");
        }
        let mut s = valid();
        s.audit.revocation_push_retry_ms = 10;
        s.validate().unwrap();
    }

    #[test]
    fn a_complete_configuration_is_accepted() {
        valid().validate().unwrap();
    }

    #[test]
    fn hmac_algorithms_are_refused_by_key() {
        let mut s = valid();
        s.issuers[0].algorithms = vec!["HS256".into()];
        assert_eq!(problem_key(&s), "issuers[0].algorithms");
    }

    #[test]
    fn refresh_margin_below_google_clients_threshold_is_refused() {
        let mut s = valid();
        s.cache.refresh_margin_secs = 200;
        assert_eq!(problem_key(&s), "cache.refresh_margin_secs");
    }

    #[test]
    fn malformed_provider_is_refused_by_key() {
        let mut s = valid();
        s.targets[0].provider =
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x"
                .into();
        assert_eq!(problem_key(&s), "targets[0].provider");
    }

    #[test]
    fn plain_http_issuer_is_refused_unless_loopback() {
        let mut s = valid();
        s.issuers[0].issuer = "http://tenant.auth0.com/".into();
        assert_eq!(problem_key(&s), "issuers[0].issuer");
        s.issuers[0].issuer = "http://127.0.0.1:9000/".into();
        s.validate().unwrap();
    }

    #[test]
    fn a_target_naming_nobody_is_valid_but_warned_about_by_key() {
        let mut s = valid();
        assert!(s.warnings().is_empty());
        s.targets[0].policy = PolicySettings::default();
        s.validate().unwrap();
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("targets[0].policy") && warnings[0].contains("bigquery"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_request_timeout_shorter_than_googles_deadline_is_warned_about() {
        let mut s = valid();
        s.http.request_timeout_ms = 1_000;
        s.validate().unwrap();
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("http.request_timeout_ms"),
            "{warnings:?}"
        );
    }

    #[test]
    fn trusted_proxies_must_be_cidrs_or_addresses() {
        let mut s = valid();
        s.http.trusted_proxies = vec!["10.0.0.0/8".into(), "2001:db8::1".into()];
        s.validate().unwrap();
        s.http.trusted_proxies.push("10.0.0.0/33".into());
        assert_eq!(problem_key(&s), "http.trusted_proxies[2]");
    }

    #[test]
    fn a_rate_of_zero_is_refused_by_key() {
        let mut s = valid();
        s.limits.per_subject.burst = 0;
        assert_eq!(problem_key(&s), "limits.per_subject.burst");
    }

    #[test]
    fn a_lifetime_cap_outside_googles_range_is_refused_by_key() {
        let mut s = valid();
        s.targets[0].policy.max_lifetime_secs = 120;
        assert_eq!(problem_key(&s), "targets[0].policy.max_lifetime_secs");
        s.targets[0].policy.max_lifetime_secs = 7200;
        assert_eq!(problem_key(&s), "targets[0].policy.max_lifetime_secs");
    }

    #[test]
    fn default_scope_outside_allowed_is_refused() {
        let mut s = valid();
        s.targets[0].default_scopes = vec!["https://www.googleapis.com/auth/bigquery".into()];
        assert_eq!(problem_key(&s), "targets[0].default_scopes");
    }

    /// Loads `text` as a configuration file; returns the error's text.
    #[allow(clippy::result_large_err)] // figment::Jail's closure type is fixed by figment
    fn load_error_of(text: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let mut message = String::new();
        figment::Jail::expect_with(|_| {
            message = Settings::load(Some(&path)).unwrap_err().to_string();
            Ok(())
        });
        (message, path.display().to_string())
    }

    const MINIMAL: &str = r#"
        [[issuers]]
        issuer = "https://tenant.auth0.com/"
        audiences = ["https://sts-bridge"]
        [[targets]]
        name = "bq"
        kind = "workforce"
        provider = "//iam.googleapis.com/locations/global/workforcePools/p/providers/a0"
        allowed_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    "#;

    #[test]
    fn a_wrong_type_reads_like_a_validation_error() {
        let (message, file) =
            load_error_of(&format!("{MINIMAL}\n[cache]\nmax_entries = \"lots\"\n"));
        assert_eq!(
            message,
            format!(
                r#"configuration key `cache.max_entries`: expected an integer, found "lots" ({file})"#
            )
        );
    }

    #[test]
    fn a_misspelt_key_suggests_the_nearest_known_one() {
        let (message, file) = load_error_of(&format!("{MINIMAL}\n[cache]\nmax_entrys = 5\n"));
        assert_eq!(
            message,
            format!("configuration key `cache.max_entrys`: unknown key; did you mean `max_entries`? ({file})")
        );
        let (message, _) = load_error_of(&format!(
            "{MINIMAL}\n[[targets]]\nname = \"x\"\nkidn = \"workforce\"\n"
        ));
        assert!(
            message.starts_with(
                "configuration key `targets[1].kidn`: unknown key; did you mean `kind`?"
            ),
            "{message}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type is fixed by figment
    fn a_missing_key_and_a_bad_environment_value_name_their_key() {
        let (message, _) = load_error_of("[[issuers]]\nissuer = \"https://t.auth0.com/\"\n");
        assert!(
            message.starts_with("configuration key `issuers[0].audiences`: is required"),
            "{message}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("STS_BRIDGE__CACHE__MAX_ENTRIES", "lots");
            let message = Settings::load(Some(&path)).unwrap_err().to_string();
            assert_eq!(
                message,
                r#"configuration key `cache.max_entries`: expected an integer, found "lots" (environment variable STS_BRIDGE__CACHE__MAX_ENTRIES)"#
            );
            Ok(())
        });
    }

    fn in_assertion_mode() -> Settings {
        let mut s = valid();
        s.assertion = Some(AssertionSettings {
            issuer: "https://sts-bridge.example.com".into(),
            keys: vec![AssertionKeySettings {
                kid: "k1".into(),
                file: "k1.pem".into(),
                state: KeyState::Active,
            }],
        });
        s.targets[0].mode = TargetMode::Assertion;
        s.targets[0].assertion = Some(TargetAssertion {
            client_id: "sts-bridge-bq".into(),
            lifetime_secs: 300,
            attributes: [("groups".to_owned(), IdentityAttribute::Groups)].into(),
        });
        s
    }

    #[test]
    fn assertion_mode_rules_name_the_key_at_fault() {
        in_assertion_mode().validate().unwrap();
        type Breakage = fn(&mut Settings);
        let cases: [(Breakage, &str); 11] = [
            (|s| s.assertion = None, "assertion"),
            (
                |s| {
                    let mut second = s.issuers[0].clone();
                    second.issuer = "https://other-tenant.auth0.com/".into();
                    s.issuers.push(second);
                },
                "targets[0].mode",
            ),
            (|s| s.targets[0].assertion = None, "targets[0].assertion"),
            (
                |s| s.targets[0].mode = TargetMode::PassThrough,
                "targets[0].assertion",
            ),
            (
                |s| s.assertion.as_mut().unwrap().issuer = "http://bridge.example.com".into(),
                "assertion.issuer",
            ),
            (
                |s| s.assertion.as_mut().unwrap().keys[0].state = KeyState::Next,
                "assertion.keys",
            ),
            (
                |s| {
                    let keys = &mut s.assertion.as_mut().unwrap().keys;
                    keys.push(keys[0].clone());
                },
                "assertion.keys[1].kid",
            ),
            (
                |s| s.targets[0].assertion.as_mut().unwrap().lifetime_secs = 48 * 3600 + 1,
                "targets[0].assertion.lifetime_secs",
            ),
            (
                |s| {
                    s.targets[0].policy.max_lifetime_secs = 600;
                    s.targets[0].assertion.as_mut().unwrap().lifetime_secs = 601;
                },
                "targets[0].assertion.lifetime_secs",
            ),
            (
                |s| s.targets[0].assertion.as_mut().unwrap().client_id = String::new(),
                "targets[0].assertion.client_id",
            ),
            (
                |s| {
                    let a = s.targets[0].assertion.as_mut().unwrap();
                    a.attributes.insert("sub".into(), IdentityAttribute::Email);
                },
                "targets[0].assertion.attributes.sub",
            ),
        ];
        for (i, (break_it, key)) in cases.into_iter().enumerate() {
            let mut s = in_assertion_mode();
            break_it(&mut s);
            assert_eq!(problem_key(&s), key, "case {i}");
        }
    }

    #[test]
    fn a_redis_url_needs_a_32_byte_key_and_errors_name_the_key() {
        let with_url = |key: Option<&str>| {
            let mut s = valid();
            s.cache.redis_url = Some("redis://:hunter2@10.0.0.5:6379/2".into());
            s.cache.redis_key = key.map(str::to_owned);
            s
        };
        assert_eq!(problem_key(&with_url(None)), "cache.redis_key");
        assert_eq!(problem_key(&with_url(Some("c2hvcnQ="))), "cache.redis_key");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert!(with_url(Some(hex)).validate().is_ok());
        let b64 = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=";
        assert!(with_url(Some(b64)).validate().is_ok());
        assert_eq!(
            with_url(Some(hex)).cache.redis_key_bytes().unwrap(),
            with_url(Some(b64)).cache.redis_key_bytes().unwrap()
        );

        let mut s = with_url(Some(hex));
        s.cache.redis_url = Some("http://:hunter2@10.0.0.5/".into());
        let message = s.validate().unwrap_err().to_string();
        assert!(message.contains("cache.redis_url"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let mut s = with_url(Some(hex));
        s.cache.redis_key_file = Some("/nonexistent".into());
        assert_eq!(problem_key(&s), "cache.redis_key");
        let mut s = with_url(None);
        s.cache.redis_key_file = Some("/nonexistent/key".into());
        assert_eq!(problem_key(&s), "cache.redis_key_file");
        let mut s = with_url(Some(hex));
        s.cache.redis_timeout_ms = 0;
        assert_eq!(problem_key(&s), "cache.redis_timeout_ms");
        // Without a URL the key is not asked for: the tier is off by default.
        assert!(valid().cache.redis_url.is_none() && valid().validate().is_ok());
    }

    #[test]
    fn validated_token_cache_and_writer_bounds_are_refused_by_key() {
        let mut s = valid();
        s.cache.validated_tokens.max_secs = 0;
        assert_eq!(problem_key(&s), "cache.validated_tokens.max_secs");
        let mut s = valid();
        s.audit.max_in_flight = s.audit.pool_size as usize + 1;
        assert_eq!(problem_key(&s), "audit.max_in_flight");
        let mut s = valid();
        s.audit.overlap_after_ms = 10_001;
        assert_eq!(problem_key(&s), "audit.overlap_after_ms");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type is fixed by figment
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("{MINIMAL}\n[cache]\nmax_entries = 10\n")).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("STS_BRIDGE__CACHE__MAX_ENTRIES", "77");
            let s = Settings::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(s.cache.max_entries, 77);
            assert_eq!(s.targets[0].name, "bq");
            jail.set_env("STS_BRIDGE__CACHE__REFRESH_MARGIN_SECS", "10");
            let err = Settings::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains("cache.refresh_margin_secs"), "{err}");
            Ok(())
        });
    }
}
