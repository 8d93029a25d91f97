//! The Redis the shared-tier tests use (127.0.0.1:6379, or TEST_REDIS_URL), a key prefix
//! of each test's own, and a TCP proxy a test can cut to play Redis going away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use sts_bridge::config::Settings;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A 32-byte key in hex, as `cache.redis_key` takes it.
pub const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// A test's view of Redis: where it is and the prefix only this test writes under.
pub struct TestRedis {
    /// `host:port` of the server.
    pub addr: String,
    /// The prefix of this test's keys.
    pub prefix: String,
    conn: redis::aio::MultiplexedConnection,
}

impl TestRedis {
    /// Redis with a fresh prefix; `None` (with a printed reason) when Redis is unreachable
    /// outside CI. In CI an unreachable Redis fails the test.
    pub async fn connect() -> Option<Self> {
        let addr = std::env::var("TEST_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into());
        let client = redis::Client::open(format!("redis://{addr}/")).expect("Redis URL");
        let connected = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await;
        let conn = match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) if in_ci() => panic!("Redis at {addr} is unreachable in CI: {e}"),
            Err(_) if in_ci() => panic!("Redis at {addr} did not answer in CI"),
            other => {
                eprintln!(
                    "SKIPPED shared-tier test: Redis at {addr} is unreachable ({})",
                    other.err().map_or("error".into(), |e| e.to_string())
                );
                return None;
            }
        };
        Some(Self {
            addr,
            prefix: format!("sts-bridge-test:{}:", uuid::Uuid::new_v4().simple()),
            conn,
        })
    }

    /// Points `settings` at Redis through `addr` (the server's, or a proxy's).
    pub fn configure(&self, settings: &mut Settings, addr: &str) {
        settings.cache.redis_url = Some(format!("redis://{addr}/"));
        settings.cache.redis_key = Some(TEST_KEY.into());
        settings.cache.redis_key_prefix = self.prefix.clone();
    }

    /// Every key of this test, with its value (a string's bytes, or a set's members joined).
    pub async fn entries(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let mut out = Vec::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let value = match kind.as_str() {
                "string" => redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
                    .unwrap()
                    .unwrap_or_default(),
                "set" => redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async::<Vec<Vec<u8>>>(&mut conn)
                    .await
                    .unwrap()
                    .concat(),
                _ => Vec::new(),
            };
            out.push((key, value));
        }
        out
    }

    /// Names of this test's cached values (not locks or indexes).
    pub async fn value_keys(&self) -> Vec<String> {
        let values = format!("{}v:", self.prefix);
        self.entries()
            .await
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with(&values))
            .collect()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let (mut conn, pattern) = (self.conn.clone(), format!("{}*", self.prefix));
        // Best effort: leave the shared server as it was found.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<i64, _> =
                        redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                }
            });
        }
    }
}

/// A TCP proxy in front of Redis. Cut, it drops every connection and closes each new one
/// at once (what a replica sees when Redis dies); restored, it forwards again.
pub struct CuttableProxy {
    /// `127.0.0.1:port` to connect to.
    pub addr: String,
    open: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl CuttableProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let open = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (accept_open, cuts, upstream) = (open.clone(), cut.clone(), upstream.to_owned());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_open.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let mut on_cut = cuts.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = on_cut.changed() => {}
                    }
                });
            }
        });
        Self { addr, open, cut }
    }

    /// Drops every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
