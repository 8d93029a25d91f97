//! Issuance records, revocations and the admin API, on SQLite and on real Postgres.

use crate::helpers::*;
use crate::proxy::TcpProxy;
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use sts_bridge::audit::{IssuanceQuery, IssuanceRecord, Outcome, Store, StoredIssuance};
use sts_bridge::devstack::{MintRequest, CLOUD_PLATFORM};
use sts_bridge::secret::fingerprint;
use tokio::task::JoinSet;

on_both_backends!(
    hand_outs_fresh_and_cached_are_recorded_with_a_fingerprint,
    refusals_of_validly_signed_tokens_are_recorded_and_garbage_is_not,
    two_hundred_concurrent_exchanges_make_two_hundred_rows_in_far_fewer_statements,
    no_column_of_any_table_contains_a_token,
    revoked_subject_is_refused_at_once_and_served_again_when_lifted,
    a_replica_on_the_same_database_honours_a_revocation_after_the_poll_interval,
    admin_api_refuses_callers_without_the_permission,
    issuance_pages_are_newest_first_and_stable,
    revocations_and_admin_actions_are_listed_in_stable_pages,
    records_past_the_retention_period_are_purged,
    records_that_arrive_during_a_commit_leave_together_as_the_next_batch,
);

fn store(app: &TestApp) -> &Store {
    &app.broker.audit().store
}

async fn all_rows(app: &TestApp) -> Vec<StoredIssuance> {
    store(app)
        .list_issuances(&IssuanceQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("rows readable")
}

/// Every text value in every row of `table`.
async fn text_cells(store: &Store, table: &str) -> Vec<String> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT * FROM {table}"));
    fn texts<R: Row>(rows: &[R]) -> Vec<String>
    where
        usize: sqlx::ColumnIndex<R>,
        for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    {
        rows.iter()
            .flat_map(|r| {
                (0..r.len()).filter_map(|i| r.try_get::<Option<String>, _>(i).ok().flatten())
            })
            .collect()
    }
    match store {
        Store::Postgres(pool) => texts(&sqlx::query(sql).fetch_all(pool).await.unwrap()),
        Store::Sqlite(pool) => texts(&sqlx::query(sql).fetch_all(pool).await.unwrap()),
    }
}

async fn admin_actions(store: &Store) -> Vec<String> {
    const SQL: &str = "SELECT action FROM admin_actions ORDER BY id";
    match store {
        Store::Postgres(pool) => sqlx::query_scalar(SQL).fetch_all(pool).await.unwrap(),
        Store::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_all(pool).await.unwrap(),
    }
}

pub fn admin_token(app: &TestApp) -> String {
    app.issuer.mint(&MintRequest {
        sub: "auth0|admin".into(),
        permissions: vec!["sts:admin".into()],
        ..Default::default()
    })
}

async fn exchange_ok(app: &TestApp, token: &str) -> Value {
    let (status, body) = status_json(app.exchange(token).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn hand_outs_fresh_and_cached_are_recorded_with_a_fingerprint(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let token = app.token_for("auth0|alice");
    let mut handed_out = Vec::new();
    for request_id in ["req-1", "req-2"] {
        let response = app
            .http
            .post(format!("{}/v1/token", app.address))
            .header("x-request-id", request_id)
            .header(
                "x-goog-api-client",
                "gl-python/3.11.7 auth/2.62.2 google-byoid-sdk",
            )
            .form(&[
                ("grant_type", GRANT),
                ("audience", "bigquery"),
                ("subject_token", token.as_str()),
                ("subject_token_type", JWT),
            ])
            .send()
            .await
            .unwrap();
        let (status, body) = status_json(response).await;
        assert_eq!(status, 200);
        handed_out.push(body["access_token"].as_str().unwrap().to_owned());
    }

    let rows = all_rows(&app).await;
    assert_eq!(rows.len(), 2);
    let (cached, fresh) = (&rows[0], &rows[1]); // newest first
    assert_eq!(
        (fresh.source.as_deref(), cached.source.as_deref()),
        (Some("sts"), Some("cache"))
    );
    for (row, request_id) in [(fresh, "req-1"), (cached, "req-2")] {
        assert_eq!(row.outcome, "issued");
        assert_eq!(row.request_id, request_id);
        assert_eq!(row.subject, "auth0|alice");
        assert_eq!(row.issuer, app.issuer.issuer());
        assert_eq!(row.client_id.as_deref(), Some("dev-client"));
        assert_eq!(row.target, "bigquery");
        assert_eq!(row.scopes, CLOUD_PLATFORM);
        assert_eq!(
            row.google_principal.as_deref(),
            Some("principal://iam.googleapis.com/locations/global/workforcePools/dev-pool/subject/auth0|alice")
        );
        assert_eq!(
            row.token_sha256.as_deref(),
            Some(fingerprint(handed_out[0].as_bytes()).as_str())
        );
        assert_eq!(row.client_addr.as_deref(), Some("127.0.0.1"));
        assert!(row.api_client.as_deref().unwrap().starts_with("gl-python"));
        let lifetime = row.expires_at.unwrap() - row.issued_at;
        assert!(lifetime > time::Duration::minutes(55), "{lifetime}");
    }
}

async fn refusals_of_validly_signed_tokens_are_recorded_and_garbage_is_not(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let token = app.token_for("auth0|alice");
    let response = app
        .post_form(&[
            ("grant_type", GRANT),
            ("audience", "bigquery"),
            (
                "scope",
                "https://www.googleapis.com/auth/devstorage.full_control",
            ),
            ("subject_token", &token),
            ("subject_token_type", JWT),
        ])
        .await;
    assert_error(response, 400, "invalid_scope").await;
    app.google.fail_next(400, json!({"error": "invalid_grant", "error_description": "The token is not valid for this provider."}));
    assert_error(app.exchange(&token).await, 400, "invalid_grant").await;
    // Garbage and forged tokens are refused before any record is made.
    assert_error(app.exchange("garbage").await, 400, "invalid_grant").await;
    let forged = app.issuer.sign(
        &app.issuer.add_key(false),
        &app.issuer.claims(&MintRequest {
            sub: "auth0|mallory".into(),
            ..Default::default()
        }),
    );
    assert_error(app.exchange(&forged).await, 400, "invalid_grant").await;

    let rows = all_rows(&app).await;
    let summary: Vec<(&str, Option<&str>, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.outcome.as_str(),
                r.error_code.as_deref(),
                r.subject.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("refused", Some("invalid_grant"), "auth0|alice"),
            ("refused", Some("invalid_scope"), "auth0|alice"),
        ]
    );
    assert!(rows
        .iter()
        .all(|r| r.token_sha256.is_none() && r.source.is_none()));
}

async fn two_hundred_concurrent_exchanges_make_two_hundred_rows_in_far_fewer_statements(
    backend: Backend,
) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let app = Arc::new(app);
    let tokens: Vec<String> = (0..20)
        .map(|i| app.token_for(&format!("auth0|user{i}")))
        .collect();
    let before = app.broker.audit().writer.stats().batches();

    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let (app, token) = (app.clone(), tokens[i % tokens.len()].clone());
        tasks.spawn(async move { status_json(app.exchange(&token).await).await.0 });
    }
    let statuses = tasks.join_all().await;

    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(all_rows(&app).await.len(), 200);
    let stats = app.broker.audit().writer.stats();
    let statements = stats.batches() - before;
    println!(
        "{backend:?}: 200 rows in {statements} INSERT statements (average batch {:.1}, largest {})",
        200.0 / statements as f64,
        stats.largest_batch()
    );
    assert!(
        statements * 4 <= 200,
        "{statements} statements for 200 rows"
    );
}

async fn records_that_arrive_during_a_commit_leave_together_as_the_next_batch(backend: Backend) {
    // No overlap within the test's time: only the first commit's end lets the next go.
    let Some(app) = spawn_app_on(backend, |s| s.audit.overlap_after_ms = 10_000).await else {
        return;
    };
    let app = Arc::new(app);
    let tokens: Vec<String> = (0..20)
        .map(|i| app.token_for(&format!("auth0|gather{i}")))
        .collect();
    let writer = &app.broker.audit().writer;
    let before = writer.stats().batches();

    writer.stall_next_batch(Duration::from_millis(1_500));
    let first = tokio::spawn({
        let (app, token) = (app.clone(), app.token_for("auth0|first"));
        async move { status_json(app.exchange(&token).await).await.0 }
    });
    // Long enough for the first record to reach its (stalled) batch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(writer.queue_depth() == 0 && !first.is_finished());
    let mut behind = JoinSet::new();
    for token in tokens {
        let app = app.clone();
        behind.spawn(async move { status_json(app.exchange(&token).await).await.0 });
    }
    let statuses = behind.join_all().await;

    assert_eq!(first.await.unwrap(), 200);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(all_rows(&app).await.len(), 21);
    let stats = writer.stats();
    assert_eq!(
        (stats.batches() - before, stats.largest_batch()),
        (2, 20),
        "the twenty records that arrived during the first commit should be one statement"
    );
}

/// Postgres only: SQLite lets one writer in at a time, so there the writer sends one batch
/// at a time.
#[tokio::test]
async fn a_stalled_commit_does_not_hold_up_the_records_that_arrive_behind_it() {
    let Some(app) = spawn_app_on(Backend::Postgres, |s| s.audit.overlap_after_ms = 50).await else {
        return;
    };
    let app = Arc::new(app);
    let writer = &app.broker.audit().writer;
    writer.stall_next_batch(Duration::from_secs(2));
    let stalled = tokio::spawn({
        let (app, token) = (app.clone(), app.token_for("auth0|stalled"));
        async move { status_json(app.exchange(&token).await).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (status, body) = status_json(app.exchange(&app.token_for("auth0|behind")).await).await;

    assert_eq!(status, 200, "{body}");
    assert!(
        !stalled.is_finished(),
        "the record behind the stalled commit should be committed first"
    );
    let rows = all_rows(&app).await;
    assert_eq!(
        rows.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>(),
        ["auth0|behind"]
    );
    assert_eq!(stalled.await.unwrap(), 200);
}

async fn no_column_of_any_table_contains_a_token(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let subject_token = app.token_for("auth0|alice");
    let admin = admin_token(&app);
    let google_token = exchange_ok(&app, &subject_token).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    exchange_ok(&app, &subject_token).await;
    let response = app
        .http
        .post(format!("{}/admin/v1/revocations", app.address))
        .bearer_auth(&admin)
        .json(&json!({"subject": "auth0|bob", "until": "2099-01-01T00:00:00Z", "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let secrets = [subject_token.trim(), google_token.as_str(), admin.as_str()];
    let mut cells = 0;
    for table in ["issuances", "revocations", "admin_actions"] {
        for cell in text_cells(store(&app), table).await {
            cells += 1;
            for secret in secrets {
                assert!(!cell.contains(secret), "{table} holds a token");
                // Nor any of its three parts (a signature alone is as good as a token).
                for part in secret.split('.').filter(|p| p.len() > 20) {
                    assert!(!cell.contains(part), "{table} holds part of a token");
                }
            }
        }
    }
    assert!(cells > 20, "only {cells} text cells were searched");
}

pub async fn revoke(app: &TestApp, subject: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/admin/v1/revocations", app.address))
        .bearer_auth(admin_token(app))
        .json(&json!({"subject": subject, "until": "2099-01-01T00:00:00Z", "reason": "laptop stolen"}))
        .send()
        .await
        .unwrap()
}

async fn revoked_subject_is_refused_at_once_and_served_again_when_lifted(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let token = app.token_for("auth0|alice");
    exchange_ok(&app, &token).await;
    assert_eq!(app.google.call_count(), 1);

    let response = revoke(&app, "auth0|alice").await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, 201, "{body}");
    let text = assert_error(app.exchange(&token).await, 403, "access_denied").await;
    assert!(
        text.contains("revoked until 2099-01-01T00:00:00Z") && !text.contains("laptop stolen"),
        "{text}"
    );
    // Others are unaffected.
    exchange_ok(&app, &app.token_for("auth0|bob")).await;

    let response = app
        .http
        .delete(format!(
            "{}/admin/v1/revocations/auth0%7Calice",
            app.address
        ))
        .bearer_auth(admin_token(&app))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let calls_before = app.google.call_count();
    exchange_ok(&app, &token).await;
    assert_eq!(
        app.google.call_count(),
        calls_before + 1,
        "alice's cached credential was not purged"
    );

    assert_eq!(
        admin_actions(store(&app)).await,
        vec!["revoke", "lift_revocation"]
    );
    let refused: Vec<StoredIssuance> = all_rows(&app)
        .await
        .into_iter()
        .filter(|r| r.outcome == "refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].error_code.as_deref(), Some("access_denied"));
}

async fn a_replica_on_the_same_database_honours_a_revocation_after_the_poll_interval(
    backend: Backend,
) {
    let Some(first) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let second = spawn_replica(&first, |s| s.audit.revocation_poll_secs = 1).await;
    let token = first.token_for("auth0|alice");
    exchange_ok(&second, &token).await;

    assert_eq!(revoke(&first, "auth0|alice").await.status(), 201);
    tokio::time::sleep(Duration::from_millis(2200)).await;

    assert_error(second.exchange(&token).await, 403, "access_denied").await;
}

async fn admin_api_refuses_callers_without_the_permission(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let url = format!("{}/admin/v1/issuances", app.address);

    let response = app.http.get(&url).send().await.unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="sts-bridge-admin""#
    );
    assert_error(response, 401, "invalid_token").await;

    let response = app
        .http
        .get(&url)
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains(r#"error="invalid_token""#));
    assert_error(response, 401, "invalid_token").await;

    let user = app.token_for("auth0|alice");
    let response = app.http.get(&url).bearer_auth(&user).send().await.unwrap();
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains(r#"scope="sts:admin""#));
    let text = assert_error(response, 403, "insufficient_scope").await;
    assert!(text.contains("sts:admin"), "{text}");
    let response = app
        .http
        .delete(format!(
            "{}/admin/v1/revocations/auth0%7Calice",
            app.address
        ))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(admin_actions(store(&app)).await.is_empty());

    let response = app
        .http
        .get(&url)
        .bearer_auth(admin_token(&app))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn page(app: &TestApp, query: &str) -> (Vec<i64>, Option<String>) {
    let response = app
        .http
        .get(format!("{}/admin/v1/issuances?{query}", app.address))
        .bearer_auth(admin_token(app))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    let ids = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    (ids, body["next_cursor"].as_str().map(str::to_owned))
}

async fn issuance_pages_are_newest_first_and_stable(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    for i in 0..7 {
        exchange_ok(&app, &app.token_for(&format!("auth0|user{i}"))).await;
    }
    let expected: Vec<i64> = all_rows(&app).await.iter().map(|r| r.id).collect();

    let mut seen = Vec::new();
    let (ids, mut cursor) = page(&app, "limit=3").await;
    seen.extend(ids);
    // New hand-outs during paging must not shift later pages.
    exchange_ok(&app, &app.token_for("auth0|late")).await;
    while let Some(c) = cursor {
        let (ids, next) = page(&app, &format!("limit=3&cursor={c}")).await;
        seen.extend(ids);
        cursor = next;
    }
    assert_eq!(seen, expected);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {seen:?}"
    );

    let (ids, _) = page(&app, "subject=auth0%7Cuser3").await;
    assert_eq!(ids.len(), 1);
    let (ids, _) = page(&app, "since=2099-01-01T00:00:00Z").await;
    assert!(ids.is_empty());
    let response = app
        .http
        .get(format!("{}/admin/v1/issuances?cursor=bogus", app.address))
        .bearer_auth(admin_token(&app))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_request").await;
}

/// GET `path` on the admin API as the administrator.
async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}{path}", app.address))
        .bearer_auth(admin_token(app))
        .send()
        .await
        .unwrap();
    status_json(response).await
}

/// Follows `path`'s pages (`limit=2`), returning every item.
async fn all_pages(app: &TestApp, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let (status, body) = admin_get(app, &format!("{path}?{query}")).await;
        assert_eq!(status, 200, "{body}");
        let page = body["items"].as_array().unwrap();
        assert!(page.len() <= 2);
        items.extend(page.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => return items,
        }
    }
}

async fn revocations_and_admin_actions_are_listed_in_stable_pages(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    for subject in ["auth0|r3", "auth0|r0", "auth0|r4", "auth0|r1", "auth0|r2"] {
        assert_eq!(revoke(&app, subject).await.status(), 201);
    }
    let lifted = app
        .http
        .delete(format!("{}/admin/v1/revocations/auth0%7Cr2", app.address))
        .bearer_auth(admin_token(&app))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 204);

    let revocations = all_pages(&app, "/admin/v1/revocations").await;
    let subjects: Vec<&str> = revocations
        .iter()
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["auth0|r0", "auth0|r1", "auth0|r3", "auth0|r4"]);
    for r in &revocations {
        assert_eq!(r["issuer"], app.issuer.issuer());
        assert_eq!(r["until"], "2099-01-01T00:00:00Z");
        assert_eq!(r["reason"], "laptop stolen");
        assert_eq!(r["created_by"], "auth0|admin");
    }
    let (status, _) = admin_get(&app, "/admin/v1/revocations?cursor=bogus").await;
    assert_eq!(status, 400);

    let actions = all_pages(&app, "/admin/v1/admin-actions").await;
    let listed: Vec<&str> = actions
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    // Newest first; the first page's own call is the newest; later pages are not
    // shifted by the calls that read them.
    // Five revokes, one lift, three revocation pages, and the first admin-actions page.
    assert_eq!(listed.len(), 5 + 1 + 3 + 1, "{listed:?}");
    let mut expected = admin_actions(store(&app)).await;
    expected.truncate(listed.len());
    expected.reverse();
    assert_eq!(listed, expected);
    assert_eq!(listed.first(), Some(&"list_admin_actions"));
    assert_eq!(listed.last(), Some(&"revoke"));
    assert!(listed.contains(&"lift_revocation"), "{listed:?}");
    let ids: Vec<i64> = actions.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {ids:?}"
    );
    assert_eq!(actions.last().unwrap()["actor"], "auth0|admin");
    assert_eq!(actions.last().unwrap()["detail"]["reason"], "laptop stolen");

    let (status, body) = admin_get(&app, "/admin/v1/admin-actions?actor=auth0%7Cnobody").await;
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!([]));
    let (status, body) = admin_get(&app, "/admin/v1/admin-actions?subject=x").await;
    assert_eq!(status, 400, "{body}");
}

pub fn old_record(subject: &str, days_ago: i64) -> IssuanceRecord {
    IssuanceRecord {
        issued_at: time::OffsetDateTime::now_utc() - time::Duration::days(days_ago),
        request_id: "old".into(),
        server_request_id: None,
        issuer: "https://tenant.auth0.com/".into(),
        subject: subject.into(),
        client_id: None,
        actor: None,
        azp: None,
        target: "bigquery".into(),
        google_principal: None,
        service_account: None,
        scopes: CLOUD_PLATFORM.into(),
        source: Some("sts"),
        outcome: Outcome::Issued,
        error_code: None,
        expires_at: None,
        token_sha256: None,
        client_addr: None,
        user_agent: None,
        api_client: None,
        claimed_client: None,
    }
}

async fn records_past_the_retention_period_are_purged(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |s| {
        s.audit.retention_days = 30;
        s.audit.purge_interval_secs = 1;
    })
    .await
    else {
        return;
    };
    store(&app)
        .insert_issuances(&[
            old_record("auth0|ancient", 31),
            old_record("auth0|recent", 29),
        ])
        .await
        .unwrap();
    exchange_ok(&app, &app.token_for("auth0|alice")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let subjects: HashSet<String> = all_rows(&app)
        .await
        .into_iter()
        .map(|r| r.subject)
        .collect();
    assert_eq!(
        subjects,
        HashSet::from(["auth0|recent".into(), "auth0|alice".into()])
    );
}

#[tokio::test]
async fn postgres_unreachable_mid_run_answers_503_hands_out_nothing_and_recovers() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let url = url::Url::parse(db.url.as_deref().unwrap()).unwrap();
    let proxy = TcpProxy::start(format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port().unwrap_or(5432)
    ))
    .await;
    let mut via_proxy = url.clone();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let app = start_app(Arc::new(db), |s| {
        s.audit.database_url = Some(via_proxy.to_string());
        s.audit.commit_timeout_ms = 4000;
    })
    .await;
    let token = app.token_for("auth0|alice");
    for _ in 0..100 {
        if app.exchange(&token).await.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows_before = all_rows(&app).await.len();
    assert!(rows_before >= 1);

    proxy.cut();
    let response = app.exchange(&token).await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = status_json(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body.get("access_token").is_none());
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);

    proxy.restore();
    let mut recovered = false;
    for _ in 0..60 {
        if app.exchange(&token).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        recovered,
        "the service did not recover after the database came back"
    );
    assert_eq!(
        all_rows(&app).await.len(),
        rows_before + 1,
        "a refused hand-out left a row, or a hand-out none"
    );
}

#[tokio::test]
async fn a_locked_store_with_a_full_queue_answers_503_and_hands_out_nothing() {
    use sqlx::{Connection, SqliteConnection};
    let app = Arc::new(
        spawn_app_with(|s| {
            s.audit.queue_capacity = 1;
            s.audit.enqueue_timeout_ms = 10;
            s.audit.commit_timeout_ms = 300;
        })
        .await,
    );
    let token = app.token_for("auth0|alice");
    exchange_ok(&app, &token).await;
    // Another process holding the write lock: the writer blocks and the queue fills.
    let path = app.db.sqlite_path();
    let mut locker = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();

    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        let (app, token) = (app.clone(), token.clone());
        tasks.spawn(async move {
            let response = app.exchange(&token).await;
            let retry_after = response.headers().contains_key("retry-after");
            let (status, body) = status_json(response).await;
            (status, body, retry_after)
        });
    }
    let answers = tasks.join_all().await;
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    for (status, body, retry_after) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(body.get("access_token").is_none() && *retry_after);
    }
    let descriptions: HashSet<&str> = answers
        .iter()
        .map(|(_, b, _)| b["error_description"].as_str().unwrap())
        .collect();
    assert!(
        descriptions.iter().any(|d| d.contains("queue is full")),
        "no caller was turned away by the full queue: {descriptions:?}"
    );
    // Once the lock is gone the service records and hands out again.
    let mut recovered = false;
    for _ in 0..40 {
        if app.exchange(&token).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered);
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_only_its_own_request() {
    // Postgres refuses NUL in text; such a value can only come from a signed claim.
    let Some(app) = spawn_app_on(Backend::Postgres, |_| {}).await else {
        return;
    };
    let app = Arc::new(app);
    let mut claims = app.issuer.claims(&MintRequest {
        sub: "auth0|odd".into(),
        ..Default::default()
    });
    claims["azp"] = json!("client\u{0}with-nul");
    let odd = app.issuer.sign(&app.issuer.current_kid(), &claims);
    app.google.set_delay(Duration::from_millis(200));

    let mut tasks = JoinSet::new();
    for i in 0..20 {
        let app = app.clone();
        let token = if i == 7 {
            odd.clone()
        } else {
            app.token_for(&format!("auth0|user{i}"))
        };
        tasks.spawn(async move { (i, status_json(app.exchange(&token).await).await.0) });
    }
    for (i, status) in tasks.join_all().await {
        assert_eq!(status, if i == 7 { 503 } else { 200 }, "request {i}");
    }
    assert_eq!(all_rows(&app).await.len(), 19);
}

#[tokio::test]
async fn a_revoked_admin_cannot_use_the_admin_api_and_scope_alone_is_not_a_permission() {
    let app = spawn_app().await;
    let url = format!("{}/admin/v1/revocations/auth0%7Cadmin", app.address);
    // Someone asked the issuer for the scope without holding the RBAC permission.
    let scoped = app.issuer.mint(&MintRequest {
        sub: "auth0|mallory".into(),
        scope: Some("openid sts:admin".into()),
        ..Default::default()
    });
    let response = app
        .http
        .delete(&url)
        .bearer_auth(&scoped)
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "insufficient_scope").await;

    assert_eq!(revoke(&app, "auth0|admin").await.status(), 201);
    let response = app
        .http
        .delete(&url)
        .bearer_auth(admin_token(&app))
        .send()
        .await
        .unwrap();
    let text = assert_error(response, 401, "invalid_token").await;
    assert!(text.contains("revoked"), "{text}");
    assert_eq!(admin_actions(store(&app)).await, vec!["revoke"]);
}
