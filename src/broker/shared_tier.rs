//! The cache's second tier: Redis shared by every replica, so that N replicas make one
//! upstream call per credential rather than N. Entries are sealed with AES-256-GCM and
//! named by an HMAC of the cache key, so Redis never holds a token, a subject or an issuer
//! in clear. Redis failing is never an outage: every operation is bounded by a timeout,
//! and while Redis is down each replica uses its own cache and exchanges.

use super::cache::{CacheKey, CachedCredential};
use crate::config::CacheSettings;
use crate::metrics::Metrics;
use crate::secret::Token;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use hmac::{Hmac, Mac};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::Sha256;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a replica whose tier is down asks Redis whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Format byte of a sealed value, so that a later format can be told apart.
const VALUE_VERSION: u8 = 1;
/// Longest a subject's index of entries lives without a write: longer than any credential.
const INDEX_TTL_MS: u64 = 13 * 3600 * 1000;
/// Deletes the lock only while it still holds this replica's token, so a replica whose
/// lock expired never removes the next holder's.
const UNLOCK_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Why the shared tier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SharedTierError {
    /// The URL was refused by the client (the message never repeats it: it may hold a
    /// password).
    #[error("cache.redis_url: {0}")]
    Url(String),
    /// The key is missing or malformed.
    #[error(transparent)]
    Key(#[from] crate::config::ConfigError),
}

/// Why a Redis operation gave no answer; the label of the fallback metric.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// Known down: not even tried.
    Down,
    /// No answer within `cache.redis_timeout_ms`.
    Timeout,
    /// Connection refused or dropped.
    Unreachable,
    /// Redis answered with an error (out of memory, read-only replica, …).
    Error,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Down => "down",
            Failure::Timeout => "timeout",
            Failure::Unreachable => "unreachable",
            Failure::Error => "error",
        }
    }
}

/// A credential obtained through the shared tier.
pub struct Obtained {
    /// The credential.
    pub credential: Arc<CachedCredential>,
    /// True when another replica's exchange provided it (no upstream call here).
    pub shared_hit: bool,
}

/// Redis as the shared second tier of the credential cache.
pub struct SharedTier {
    /// Replaced whole after a timeout: the client reconnects by itself when a connection
    /// drops, but keeps a connection that merely stopped answering.
    conn: RwLock<ConnectionManager>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    prefix: String,
    seal_key: LessSafeKey,
    name_key: [u8; 32],
    timeout: Duration,
    lock_wait: Duration,
    refresh_margin: Duration,
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SharedTier {
    /// The tier `settings` describe, or `None` without `cache.redis_url`. Never waits for
    /// Redis: it is asked once here (bounded by the timeout), then a background task
    /// watches it while it is down.
    pub async fn connect(
        settings: &CacheSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, SharedTierError> {
        let Some(url) = &settings.redis_url else {
            return Ok(None);
        };
        let master = settings.redis_key_bytes()?;
        let client = redis::Client::open(url.as_str())
            .map_err(|_| SharedTierError::Url("not a usable Redis URL".into()))?;
        let timeout = Duration::from_millis(settings.redis_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(PROBE_INTERVAL);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|_| SharedTierError::Url("not a usable Redis URL".into()))?;
        let seal_key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &hmac(&master, &[b"sts-bridge tier2 seal"]))
                .expect("32-byte AES-256 key"),
        );
        let tier = Arc::new(Self {
            conn: RwLock::new(conn),
            client,
            config,
            prefix: settings.redis_key_prefix.clone(),
            seal_key,
            name_key: hmac(&master, &[b"sts-bridge tier2 name"]),
            timeout,
            lock_wait: Duration::from_millis(settings.redis_lock_wait_ms),
            refresh_margin: Duration::from_secs(settings.refresh_margin_secs),
            up: AtomicBool::new(true),
            metrics,
        });
        tier.metrics.tier2_up(true);
        if !tier.probe().await {
            tier.mark_down(Failure::Unreachable);
        }
        tokio::spawn(watch(Arc::downgrade(&tier)));
        Ok(Some(tier))
    }

    /// Whether Redis answers at the moment (as last seen).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    async fn probe(&self) -> bool {
        let mut conn = self.connection();
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) if !e.is_timeout() => false,
            _ => {
                self.reconnect();
                false
            }
        }
    }

    fn connection(&self) -> ConnectionManager {
        self.conn.read().expect("connection lock").clone()
    }

    /// Drops the connection that stopped answering for one made at the next command.
    fn reconnect(&self) {
        if let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            *self.conn.write().expect("connection lock") = fresh;
        }
    }

    fn mark_down(&self, failure: Failure) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.tier2_up(false);
            tracing::warn!(reason = failure.as_str(), "shared cache tier (Redis) unreachable; this replica uses its own cache and exchanges until it answers");
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.metrics.tier2_up(true);
            tracing::info!("shared cache tier (Redis) answers again");
        }
    }

    /// Runs `op` within the timeout; a failure is counted, and marks the tier down when
    /// Redis did not answer (an error answer says Redis is there: the next command may
    /// well succeed).
    async fn run<T: redis::FromRedisValue>(&self, op: impl Into<Op>) -> Result<T, Failure> {
        if !self.is_up() {
            self.metrics.tier2_fallback(Failure::Down.as_str());
            return Err(Failure::Down);
        }
        let op = op.into();
        let mut conn = self.connection();
        let answer = async {
            match &op {
                Op::Cmd(cmd) => cmd.query_async::<T>(&mut conn).await,
                Op::Pipe(pipe) => pipe.query_async::<T>(&mut conn).await,
            }
        };
        let failure = match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if e.is_timeout() => Failure::Timeout,
            Ok(Err(e))
                if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() =>
            {
                Failure::Unreachable
            }
            Ok(Err(_)) => Failure::Error,
            Err(_) => Failure::Timeout,
        };
        self.metrics.tier2_fallback(failure.as_str());
        if matches!(failure, Failure::Timeout) {
            self.reconnect();
        }
        if !matches!(failure, Failure::Error) {
            self.mark_down(failure);
        }
        Err(failure)
    }

    /// The Redis names of `key`'s value and lock: an HMAC of the whole key, so neither
    /// reveals whose entry it is, and the value's name is its sealing's associated data.
    fn names(&self, key: &CacheKey) -> Names {
        let id = hex(&hmac(&self.name_key, &[&key.canonical_bytes()]));
        Names {
            value: format!("{}v:{id}", self.prefix),
            lock: format!("{}l:{id}", self.prefix),
            index: self.index_name(key.subject()),
        }
    }

    /// The set of a subject's entries, so a revocation can find them; keyed by subject
    /// alone because a revocation may name every issuer.
    fn index_name(&self, subject: &str) -> String {
        let id = hex(&hmac(&self.name_key, &[b"subject\0", subject.as_bytes()]));
        format!("{}s:{id}", self.prefix)
    }

    fn seal(&self, name: &str, credential: &CachedCredential) -> Vec<u8> {
        let expires_ms = unix_ms(SystemTime::now() + credential.remaining());
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("system randomness");
        let mut sealed = expires_ms.to_be_bytes().to_vec();
        sealed.extend_from_slice(credential.token.expose().as_bytes());
        self.seal_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM sealing of a bounded value");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VALUE_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The credential in `value`, if it was sealed under `name` with this key and has
    /// more than the refresh margin left (entries expire before that, unless the clock of
    /// the replica that wrote it runs ahead).
    fn open(&self, name: &str, value: &[u8]) -> Option<Arc<CachedCredential>> {
        let (&version, rest) = value.split_first()?;
        if version != VALUE_VERSION || rest.len() < NONCE_LEN + 8 {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .seal_key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut sealed)
            .ok()?;
        let (expires, token) = plain.split_at_checked(8)?;
        let expires_ms = u64::from_be_bytes(expires.try_into().ok()?);
        let left = Duration::from_millis(expires_ms.checked_sub(unix_ms(SystemTime::now()))?);
        if left <= self.refresh_margin {
            return None;
        }
        let token = Token::new(std::str::from_utf8(token).ok()?);
        Some(Arc::new(CachedCredential::new(token, Instant::now(), left)))
    }

    async fn get(&self, names: &Names) -> Result<Option<Arc<CachedCredential>>, Failure> {
        let mut get = redis::cmd("GET");
        get.arg(&names.value);
        let value: Option<Vec<u8>> = self.run(get).await?;
        Ok(value.and_then(|v| self.open(&names.value, &v)))
    }

    /// Stores `credential` until its expiry minus the refresh margin, so another replica
    /// never takes a credential it would have to refresh at once.
    async fn put_named(&self, names: &Names, credential: &CachedCredential) {
        let ttl = credential.remaining().saturating_sub(self.refresh_margin);
        if ttl < Duration::from_secs(1) {
            return;
        }
        let sealed = self.seal(&names.value, credential);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&names.value)
            .arg(sealed)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(&names.index)
            .arg(&names.value)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&names.index)
            .arg(INDEX_TTL_MS)
            .ignore();
        let _ = self.run::<()>(pipe).await;
    }

    /// `key`'s credential: from Redis when another replica has it, else from `fetch`,
    /// run by one replica at a time (a `SET NX` lock), the others waiting for its result
    /// up to `cache.redis_lock_wait_ms` and then fetching themselves. Any Redis failure
    /// falls back to `fetch`.
    pub async fn obtain<E>(
        &self,
        key: &CacheKey,
        fetch: impl Future<Output = Result<Arc<CachedCredential>, E>>,
    ) -> Result<Obtained, E> {
        let names = self.names(key);
        match self.get(&names).await {
            Ok(Some(credential)) => {
                self.metrics.tier2_lookup(true);
                return Ok(Obtained {
                    credential,
                    shared_hit: true,
                });
            }
            Ok(None) => self.metrics.tier2_lookup(false),
            Err(_) => return self.fetch_and_share(&names, fetch, None).await,
        }
        let token = lock_token();
        let lock_ms = self.lock_wait.as_millis() as u64;
        let mut set = redis::cmd("SET");
        set.arg(&names.lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(lock_ms);
        let locked: Result<Option<String>, Failure> = self.run(set).await;
        match locked {
            Ok(Some(_)) => {
                // The previous holder may have shared its credential between our lookup
                // and our lock.
                if let Ok(Some(credential)) = self.get(&names).await {
                    self.unlock(&names, &token).await;
                    return Ok(Obtained {
                        credential,
                        shared_hit: true,
                    });
                }
                self.fetch_and_share(&names, fetch, Some(&token)).await
            }
            Ok(None) => match self.wait_for_other(&names).await {
                Some(credential) => Ok(Obtained {
                    credential,
                    shared_hit: true,
                }),
                None => self.fetch_and_share(&names, fetch, None).await,
            },
            Err(_) => self.fetch_and_share(&names, fetch, None).await,
        }
    }

    async fn fetch_and_share<E>(
        &self,
        names: &Names,
        fetch: impl Future<Output = Result<Arc<CachedCredential>, E>>,
        lock_token: Option<&str>,
    ) -> Result<Obtained, E> {
        let fetched = fetch.await;
        if let Ok(credential) = &fetched {
            self.put_named(names, credential).await;
        }
        if let Some(token) = lock_token {
            self.unlock(names, token).await;
        }
        fetched.map(|credential| Obtained {
            credential,
            shared_hit: false,
        })
    }

    async fn unlock(&self, names: &Names, token: &str) {
        let mut eval = redis::cmd("EVAL");
        eval.arg(UNLOCK_SCRIPT).arg(1).arg(&names.lock).arg(token);
        let _ = self.run::<i64>(eval).await;
    }

    /// Polls for the lock holder's credential; `None` when the wait is over without one
    /// (timeout, the holder gave up, or Redis failed).
    async fn wait_for_other(&self, names: &Names) -> Option<Arc<CachedCredential>> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        let outcome = loop {
            if started.elapsed() >= self.lock_wait {
                break "timeout";
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            let mut pipe = redis::pipe();
            pipe.cmd("GET")
                .arg(&names.value)
                .cmd("EXISTS")
                .arg(&names.lock);
            let polled: Result<(Option<Vec<u8>>, bool), Failure> = self.run(pipe).await;
            match polled {
                Ok((Some(value), _)) => match self.open(&names.value, &value) {
                    Some(credential) => {
                        self.metrics.tier2_lock_wait("served", started.elapsed());
                        return Some(credential);
                    }
                    None => break "abandoned",
                },
                Ok((None, true)) => continue,
                Ok((None, false)) | Err(_) => break "abandoned",
            }
        };
        self.metrics.tier2_lock_wait(outcome, started.elapsed());
        None
    }

    /// Removes every entry of `subject` (of any issuer) from Redis, after a revocation.
    pub async fn purge_subject(&self, subject: &str) {
        let index = self.index_name(subject);
        let mut smembers = redis::cmd("SMEMBERS");
        smembers.arg(&index);
        let Ok(members) = self.run::<Vec<String>>(smembers).await else {
            tracing::warn!("shared cache tier not purged: Redis unreachable; its entries expire with their credentials");
            return;
        };
        let mut del = redis::cmd("DEL");
        del.arg(&index).arg(members);
        let _ = self.run::<i64>(del).await;
    }
}

/// One Redis command or pipeline.
enum Op {
    Cmd(redis::Cmd),
    Pipe(redis::Pipeline),
}

impl From<redis::Cmd> for Op {
    fn from(cmd: redis::Cmd) -> Self {
        Op::Cmd(cmd)
    }
}

impl From<redis::Pipeline> for Op {
    fn from(pipe: redis::Pipeline) -> Self {
        Op::Pipe(pipe)
    }
}

/// The Redis keys of one cache entry.
struct Names {
    value: String,
    lock: String,
    index: String,
}

fn lock_token() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    hex(&bytes)
}

/// Asks Redis whether it is back while the tier is down; ends with the tier.
async fn watch(tier: Weak<SharedTier>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(tier) = tier.upgrade() else { return };
        if !tier.is_up() && tier.probe().await {
            tier.mark_up();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tier_without_redis() -> Arc<SharedTier> {
        let settings = CacheSettings {
            // Nothing listens there: the tier starts down, which sealing does not need.
            redis_url: Some("redis://127.0.0.1:1/".into()),
            redis_key: Some("42".repeat(32)),
            ..CacheSettings::default()
        };
        SharedTier::connect(&settings, Arc::new(Metrics::new()))
            .await
            .unwrap()
            .unwrap()
    }

    fn credential(token: &str) -> CachedCredential {
        CachedCredential::new(Token::new(token), Instant::now(), Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn a_sealed_value_opens_only_under_its_own_name_and_unaltered() {
        let tier = tier_without_redis().await;
        assert!(!tier.is_up());
        let sealed = tier.seal("p:v:aa", &credential("ya29.secret"));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));

        let opened = tier.open("p:v:aa", &sealed).expect("opens under its name");
        assert_eq!(opened.token.expose(), "ya29.secret");
        let left = opened.remaining().as_secs();
        assert!((3590..=3600).contains(&left), "{left}");

        assert!(
            tier.open("p:v:bb", &sealed).is_none(),
            "moved to another key"
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(tier.open("p:v:aa", &altered).is_none(), "altered");
        assert!(tier.open("p:v:aa", &sealed[..10]).is_none(), "truncated");

        // Inside the refresh margin a replica would refresh at once: not worth taking.
        let late = CachedCredential::new(
            Token::new("ya29.late"),
            Instant::now(),
            Duration::from_secs(200),
        );
        assert!(tier.open("p:v:aa", &tier.seal("p:v:aa", &late)).is_none());
    }

    #[tokio::test]
    async fn a_down_tier_falls_back_to_the_callers_own_fetch() {
        let tier = tier_without_redis().await;
        let identity = crate::identity::Identity {
            issuer: "https://issuer/".into(),
            subject: "auth0|alice".into(),
            client_id: None,
            audiences: vec![],
            scopes: vec![],
            permissions: vec![],
            groups: vec![],
            roles: vec![],
            grant_types: vec![],
            email: None,
            name: None,
            expires_at: 0,
            claims_digest: [0; 32],
        };
        let key = crate::broker::CacheKey::new(
            &identity,
            None,
            Arc::from("t"),
            Arc::from([]),
            None,
            None,
        );
        let obtained = tier
            .obtain::<()>(&key, async { Ok(Arc::new(credential("ya29.own"))) })
            .await
            .unwrap();
        assert!(!obtained.shared_hit);
        assert_eq!(obtained.credential.token.expose(), "ya29.own");
    }
}
