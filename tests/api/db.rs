//! A fresh database per test: a SQLite file in a temporary folder, or a new database on
//! the Postgres server named by TEST_DATABASE_URL, dropped afterwards.

use sqlx::{Connection, PgConnection};
use sts_bridge::config::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    /// Postgres URL of the test database (`None` for SQLite).
    pub url: Option<String>,
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>, // (server URL, database name)
}

fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

impl TestDb {
    pub fn sqlite() -> Self {
        Self {
            url: None,
            dir: tempfile::tempdir().expect("temp dir"),
            postgres: None,
        }
    }

    /// A fresh database; for Postgres `None` (with a printed reason) when the server is
    /// unreachable outside CI. In CI an unreachable server fails the test.
    pub async fn create(backend: Backend) -> Option<Self> {
        if backend == Backend::Sqlite {
            return Some(Self::sqlite());
        }
        let server = server_url();
        let mut conn = match PgConnection::connect(&server).await {
            Ok(conn) => conn,
            Err(e) if in_ci() => panic!("Postgres at TEST_DATABASE_URL is unreachable in CI: {e}"),
            Err(e) => {
                eprintln!("SKIPPED Postgres test: cannot connect to {server}: {e}");
                return None;
            }
        };
        let name = format!("sts_bridge_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&server).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Some(Self {
            url: Some(url.to_string()),
            dir: tempfile::tempdir().expect("temp dir"),
            postgres: Some((server, name)),
        })
    }

    /// The SQLite file an app on this database writes.
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.dir.path().join("sts-bridge.sqlite")
    }

    /// Points `settings` at this database.
    pub fn configure(&self, settings: &mut Settings) {
        settings.audit.database_url = self.url.clone();
        settings.audit.sqlite_path = self.sqlite_path();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async context: a small runtime of its own on a plain thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&server).await {
                    let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
