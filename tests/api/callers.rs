//! Who really called: the client address past trusted proxies only, and both request ids.

use crate::helpers::*;
use reqwest::Response;
use sts_bridge::config::RateSettings;

/// Sends the standard exchange for `token` with extra headers.
async fn exchange_with(app: &TestApp, token: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = app.http.post(format!("{}/v1/token", app.address)).form(&[
        ("grant_type", GRANT),
        ("audience", "bigquery"),
        ("subject_token", token),
        ("subject_token_type", JWT),
    ]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request sent")
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_recorded_and_limited() {
    let app = spawn_app_with(|s| {
        s.http.trusted_proxies = vec!["127.0.0.0/8".into()];
        s.limits.per_client_address = RateSettings {
            per_minute: 1,
            burst: 1,
        };
    })
    .await;
    let token = app.token_for("auth0|alice");
    // The caller's own claim (leftmost) is not believed past an untrusted hop.
    let via_proxy = [("x-forwarded-for", "203.0.113.66, 198.51.100.7")];
    assert_eq!(exchange_with(&app, &token, &via_proxy).await.status(), 200);
    let other = [("forwarded", r#"for="[2001:db8::7]:4711";proto=https"#)];
    assert_eq!(exchange_with(&app, &token, &other).await.status(), 200);
    // The limit is the forwarded client's, not the proxy's.
    let again = exchange_with(&app, &token, &via_proxy).await;
    assert_error(again, 429, "slow_down").await;

    let rows = app.records().await;
    let addresses: Vec<_> = rows.iter().map(|r| r.client_addr.as_deref()).collect();
    assert_eq!(addresses, [Some("2001:db8::7"), Some("198.51.100.7")]);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let app = spawn_app_with(|s| s.http.trusted_proxies = vec!["10.0.0.0/8".into()]).await;
    let token = app.token_for("auth0|alice");
    let spoofed = [
        ("x-forwarded-for", "198.51.100.7"),
        ("forwarded", "for=198.51.100.8"),
    ];
    assert_eq!(exchange_with(&app, &token, &spoofed).await.status(), 200);
    let rows = app.records().await;
    assert_eq!(rows[0].client_addr.as_deref(), Some("127.0.0.1"));
}

on_both_backends!(the_callers_request_id_is_kept_beside_the_servers_own);

async fn the_callers_request_id_is_kept_beside_the_servers_own(backend: Backend) {
    let Some(app) = spawn_app_on(backend, |_| {}).await else {
        return;
    };
    let token = app.token_for("auth0|alice");
    let mut server_ids = Vec::new();
    for sent in ["job-42", "job-42", "not a usable id", &"x".repeat(129)] {
        let response = exchange_with(&app, &token, &[("x-request-id", sent)]).await;
        assert_eq!(response.status(), 200);
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        let (echoed, server) = (header("x-request-id"), header("x-server-request-id"));
        assert!(uuid::Uuid::parse_str(&server).is_ok(), "{server}");
        if sent == "job-42" {
            assert_eq!(echoed, "job-42");
        } else {
            // An id that is too long or not plain is not kept: the server's stands in.
            assert_eq!(echoed, server);
        }
        server_ids.push((echoed, server));
    }
    let mut rows = app.records().await;
    rows.reverse(); // oldest first, as sent
    let recorded: Vec<_> = rows
        .iter()
        .map(|r| (r.request_id.clone(), r.server_request_id.clone().unwrap()))
        .collect();
    assert_eq!(recorded, server_ids);
    // The caller's id may repeat; the server's never does.
    assert_ne!(server_ids[0].1, server_ids[1].1);
}
