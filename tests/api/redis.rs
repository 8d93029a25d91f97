//! The Redis the shared-tier tests use (127.0.0.1:6379, or TEST_REDIS_URL), a key prefix
//! of each test's own, and a TCP proxy a test can cut to play Redis going away.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use sts_bridge::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    client: redis::Client,
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
            client,
        })
    }

    /// Points `settings` at Redis through `addr` (the server's, or a proxy's).
    pub fn configure(&self, settings: &mut Settings, addr: &str) {
        settings.cache.redis_url = Some(format!("redis://{addr}/"));
        settings.cache.redis_key = Some(TEST_KEY.into());
        settings.cache.redis_key_prefix = self.prefix.clone();
        // Generous: the test machine may be loaded, and a slow answer would count as Redis
        // being down. The tests of timeouts set their own.
        settings.cache.redis_timeout_ms = 1000;
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
        // Best effort, on a blocking connection (the test's runtime is ending): leave the
        // shared server as it was found.
        let Ok(mut conn) = self
            .client
            .get_connection_with_timeout(Duration::from_secs(1))
        else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// Reads and never answers, until the client leaves or the next cut or stall.
async fn hold(mut inbound: TcpStream, mut on_cut: watch::Receiver<u64>) {
    let mut sink = [0u8; 1024];
    tokio::select! {
        _ = async { while inbound.read(&mut sink).await.is_ok_and(|n| n > 0) {} } => {}
        _ = on_cut.changed() => {}
    }
}

const FORWARD: u8 = 0;
const CUT: u8 = 1;
const STALL: u8 = 2;

/// A TCP proxy in front of Redis. Cut, it drops every connection and closes each new one
/// at once (what a replica sees when Redis dies); stalled, it drops every connection and
/// holds new ones open without an answer (a hung Redis); restored, it forwards again.
pub struct CuttableProxy {
    /// `127.0.0.1:port` to connect to.
    pub addr: String,
    mode: Arc<AtomicU8>,
    cut: watch::Sender<u64>,
}

impl CuttableProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let (cut, _) = watch::channel(0u64);
        let (accept_mode, cuts, upstream) = (mode.clone(), cut.clone(), upstream.to_owned());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut on_cut = cuts.subscribe();
                match accept_mode.load(Ordering::SeqCst) {
                    CUT => {
                        let _ = inbound.shutdown().await;
                        continue;
                    }
                    STALL => {
                        tokio::spawn(hold(inbound, on_cut));
                        continue;
                    }
                    _ => {}
                }
                let (upstream, mode) = (upstream.clone(), accept_mode.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                        _ = on_cut.changed() => {}
                    }
                    if mode.load(Ordering::SeqCst) == STALL {
                        drop(outbound);
                        hold(inbound, on_cut).await;
                    }
                });
            }
        });
        Self { addr, mode, cut }
    }

    /// Drops every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Leaves every connection open but silent until [`Self::restore`]; new ones too.
    pub fn stall(&self) {
        self.mode.store(STALL, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Forwards again (stalled connections stay silent: the client must give them up).
    pub fn restore(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
    }
}
