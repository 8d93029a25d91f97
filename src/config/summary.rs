//! What `check-config` prints: what was loaded, in words an operator can check against
//! what they meant to configure.

use super::{PolicySettings, Settings, TargetKind, TargetSettings};
use std::fmt::Write;

impl Settings {
    /// A multi-line account of the issuers, targets (kind and policy), clients, store and
    /// listeners this configuration sets up.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "listeners:");
        let _ = writeln!(out, "  public            {}", self.listen);
        let own = |addr: Option<std::net::SocketAddr>| match addr {
            Some(addr) => format!("on its own listener {addr}"),
            None => "on the public listener".to_owned(),
        };
        let admin = if self.admin.enabled {
            own(self.admin.listen)
        } else {
            "disabled".to_owned()
        };
        let _ = writeln!(out, "  admin API         {admin}");
        let _ = writeln!(out, "  /metrics          {}", own(self.metrics.listen));
        if self.admin.enabled {
            let pinned = self.admin.issuer.as_deref().unwrap_or("any trusted issuer");
            let _ = writeln!(
                out,
                "  admin tokens      permission {} from {pinned}",
                self.admin.permission
            );
        }
        let proxies = if self.http.trusted_proxies.is_empty() {
            "none (forwarding headers ignored; the TCP peer is the client)".to_owned()
        } else {
            self.http.trusted_proxies.join(", ")
        };
        let _ = writeln!(out, "  trusted proxies   {proxies}");
        let _ = writeln!(
            out,
            "  timeouts          body {} ms, exchange {} ms, shutdown {} s",
            self.http.body_timeout_ms,
            self.http.request_timeout_ms,
            self.http.shutdown_timeout_secs
        );
        let l = &self.limits;
        let rates = if l.enabled {
            format!(
                "per subject {}; per client address {}",
                l.per_subject.describe(),
                l.per_client_address.describe()
            )
        } else {
            "off".to_owned()
        };
        let _ = writeln!(out, "rate limits:        {rates}");
        let _ = writeln!(
            out,
            "  refusal records   per subject {}; at most {} keys tracked per limit",
            l.refusal_records_per_subject.describe(),
            l.max_tracked_keys
        );
        if let Some(a) = &self.assertion {
            let keys: Vec<String> = a
                .keys
                .iter()
                .map(|k| {
                    let state = serde_json::to_value(k.state).unwrap_or_default();
                    format!("{} ({})", k.kid, state.as_str().unwrap_or("?"))
                })
                .collect();
            let _ = writeln!(out, "bridge issuer:      {}", a.issuer);
            let _ = writeln!(out, "  signing keys      {}", keys.join(", "));
        }
        let _ = writeln!(out, "issuers ({}):", self.issuers.len());
        for i in &self.issuers {
            let _ = writeln!(out, "  {}", i.issuer);
            let _ = writeln!(out, "    audiences       {}", i.audiences.join(", "));
            let _ = writeln!(out, "    algorithms      {}", i.algorithms.join(", "));
            let claims = [("groups", &i.groups_claim), ("roles", &i.roles_claim)]
                .iter()
                .map(|(what, c)| format!("{what} from {}", c.as_deref().unwrap_or("(none)")))
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(out, "    claims          {claims}");
            let mut keys = format!(
                "refreshed every {} s, not ready after {} s without a refresh",
                i.jwks_refresh_secs, i.jwks_max_age_secs
            );
            if !i.jwks_allowed_hosts.is_empty() {
                keys.push_str(&format!(
                    "; may move to {}",
                    i.jwks_allowed_hosts.join(", ")
                ));
            }
            let _ = writeln!(out, "    key set         {keys}");
            if i.require_at_jwt {
                let _ = writeln!(out, "    token type      at+jwt only (RFC 9068)");
            }
        }
        let _ = writeln!(out, "targets ({}):", self.targets.len());
        for t in &self.targets {
            let kind = serde_json::to_value(t.kind).unwrap_or_default();
            let _ = writeln!(out, "  {} ({})", t.name, kind.as_str().unwrap_or("?"));
            kind_summary(&mut out, t);
            if t.kind != TargetKind::Firebase {
                let _ = writeln!(out, "    scopes          {}", t.allowed_scopes.join(" "));
            }
            if !t.default_scopes.is_empty() {
                let _ = writeln!(out, "    default scopes  {}", t.default_scopes.join(" "));
            }
            let mode = match &t.assertion {
                Some(a) => {
                    let passed: Vec<String> = a
                        .attributes
                        .iter()
                        .map(|(claim, from)| {
                            let from = serde_json::to_value(from).unwrap_or_default();
                            format!("{claim} ← {}", from.as_str().unwrap_or("?"))
                        })
                        .collect();
                    format!(
                        "assertion signed by sts-bridge (aud {}, {} s; passes sub{}{})",
                        a.client_id,
                        a.lifetime_secs,
                        if passed.is_empty() { "" } else { ", " },
                        passed.join(", ")
                    )
                }
                None => "pass-through (Google sees the caller's own token)".to_owned(),
            };
            if t.kind == TargetKind::Workforce {
                let _ = writeln!(out, "    mode            {mode}");
            }
            let _ = writeln!(out, "    policy          {}", policy_summary(&t.policy));
        }
        let auth = if self.require_client_auth {
            "required"
        } else {
            "optional"
        };
        let _ = writeln!(out, "clients ({}, HTTP Basic {auth}):", self.clients.len());
        for c in &self.clients {
            let limits = [("azp", &c.azp), ("targets", &c.targets)]
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(what, l)| format!("{what} {}", l.join(", ")))
                .collect::<Vec<_>>();
            let limits = if limits.is_empty() {
                "no limits".to_owned()
            } else {
                limits.join("; ")
            };
            let _ = writeln!(out, "  {}  {limits}", c.id);
        }
        let public: Vec<&str> = self.public_clients.iter().map(|p| p.id.as_str()).collect();
        let public = if public.is_empty() {
            "none".to_owned()
        } else {
            public.join(", ")
        };
        let _ = writeln!(
            out,
            "public clients:     {public} (claimed, not proven: they grant nothing)"
        );
        let store = match &self.audit.database_url {
            Some(_) => "postgres (audit.database_url or DATABASE_URL)".to_owned(),
            None => format!("sqlite file {}", self.audit.sqlite_path.display()),
        };
        let _ = writeln!(out, "issuance store:     {store}");
        let _ = writeln!(
            out,
            "  retention {} days, revocations reloaded every {} s{}, statements time out after {} ms, a dead record writer restarted after {} ms (doubling up to 30 s)",
            self.audit.retention_days,
            self.audit.revocation_poll_secs,
            match (&self.audit.database_url, self.audit.revocation_push) {
                (Some(_), true) => " and pushed between replicas (LISTEN/NOTIFY)",
                (Some(_), false) => " (not pushed between replicas)",
                (None, _) => "",
            },
            self.audit.statement_timeout_ms,
            self.audit.writer_restart_backoff_ms
        );
        let _ = writeln!(
            out,
            "cache:              up to {} credentials, refreshed {} s before expiry",
            self.cache.max_entries, self.cache.refresh_margin_secs
        );
        if let Some(url) = &self.cache.redis_url {
            // Host and database only: the URL may hold a password.
            let shown = url::Url::parse(url)
                .map(|u| {
                    format!(
                        "{}:{}{}",
                        u.host_str().unwrap_or("?"),
                        u.port().unwrap_or(6379),
                        u.path()
                    )
                })
                .unwrap_or_else(|_| "(unparsable URL)".into());
            let _ = writeln!(
                out,
                "  shared tier: Redis at {shown}, prefix {}, commands time out after {} ms, waits up to {} ms for another replica's exchange",
                self.cache.redis_key_prefix, self.cache.redis_timeout_ms, self.cache.redis_lock_wait_ms
            );
        }
        let _ = writeln!(out, "google STS:         {}", self.google.sts_url);
        let breaker = |b: &super::BreakerSettings| {
            format!(
                "breaker opens after {} failures in {} s, probes after {} s",
                b.failure_threshold, b.window_secs, b.cool_down_secs
            )
        };
        let _ = writeln!(
            out,
            "  connect {} ms, call {} ms, {} attempts within {} ms, {} in flight; {}",
            self.google.connect_timeout_ms,
            self.google.timeout_ms,
            self.google.max_attempts,
            self.google.deadline_ms,
            self.google.max_concurrent_calls,
            breaker(&self.google.breaker)
        );
        let _ = writeln!(
            out,
            "IAM Credentials:    {}",
            self.google.iam_credentials_url
        );
        let _ = writeln!(
            out,
            "issuer key fetches: connect {} ms, fetch {} ms; {}",
            self.jwks.connect_timeout_ms,
            self.jwks.timeout_ms,
            breaker(&self.jwks.breaker)
        );
        out
    }
}

/// What a target's kind makes, from what, and with which service account.
fn kind_summary(out: &mut String, t: &TargetSettings) {
    match t.kind {
        TargetKind::Workforce => {
            let _ = writeln!(out, "    provider        {}", t.provider);
            let project = t.user_project.as_deref().unwrap_or("(the caller's)");
            let _ = writeln!(out, "    bills project   {project}");
            if let Some(sa) = &t.service_account {
                let _ = writeln!(
                    out,
                    "    impersonates    {sa} ({} s{})",
                    t.token_lifetime_secs,
                    via(&t.delegates)
                );
            }
        }
        TargetKind::Impersonate => {
            for m in &t.service_accounts {
                let _ = writeln!(
                    out,
                    "    {} ∋ {:<9} → {}{}",
                    m.claim.as_str(),
                    m.value,
                    m.service_account,
                    via(&t.delegates)
                );
            }
            let _ = writeln!(
                out,
                "    as              the service's own Google identity ({} s tokens)",
                t.token_lifetime_secs
            );
        }
        TargetKind::Firebase => {
            if let Some(f) = &t.firebase {
                let signer = match &f.key_file {
                    Some(path) => format!("key file {}", path.display()),
                    None => "IAM Credentials signJwt with the service's own identity".into(),
                };
                let _ = writeln!(out, "    signed by       {} ({signer})", f.service_account);
                let claims: Vec<String> = f
                    .claims
                    .iter()
                    .map(|(name, from)| {
                        let from = serde_json::to_value(from).unwrap_or_default();
                        format!("{name} ← {}", from.as_str().unwrap_or("?"))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "    custom token    uid ← sub; claims {}; {} s",
                    if claims.is_empty() {
                        "(none)".to_owned()
                    } else {
                        claims.join(", ")
                    },
                    f.lifetime_secs
                );
            }
        }
    }
}

fn via(delegates: &[String]) -> String {
    if delegates.is_empty() {
        String::new()
    } else {
        format!(" via {}", delegates.join(" → "))
    }
}

/// One line: who a target's policy lets through.
fn policy_summary(p: &PolicySettings) -> String {
    if !p.names_anyone() {
        return "refuses everyone (names no permission, role, group or client)".into();
    }
    let mut rules = Vec::new();
    for (name, list) in [
        ("any_permissions", &p.any_permissions),
        ("all_permissions", &p.all_permissions),
        ("any_roles", &p.any_roles),
        ("all_roles", &p.all_roles),
        ("any_groups", &p.any_groups),
        ("all_groups", &p.all_groups),
        ("clients", &p.clients),
    ] {
        if !list.is_empty() {
            rules.push(format!("{name} [{}]", list.join(", ")));
        }
    }
    rules.push(format!(
        "machine tokens {}",
        if p.machine_tokens {
            "allowed"
        } else {
            "refused"
        }
    ));
    rules.push(format!("lifetime ≤ {} s", p.max_lifetime_secs));
    rules.join("; ")
}
