//! Every rule, once letting a caller through and once refusing with the exact rule.

use super::*;
use crate::config::ClientSettings;

fn person() -> Identity {
    Identity {
        issuer: "https://tenant.auth0.com/".into(),
        subject: "auth0|alice".into(),
        client_id: Some("notebooks".into()),
        audiences: vec!["https://sts-bridge".into()],
        scopes: vec![],
        permissions: vec!["bq:read".into(), "bq:write".into()],
        groups: vec!["analysts".into()],
        roles: vec!["engineer".into()],
        grant_types: vec![],
        email: None,
        name: None,
        expires_at: 0,
        claims_digest: [0; 32],
    }
}

fn list(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

type Tweak = fn(&mut PolicySettings);

/// (case, policy tweak, identity tweak, expected: None = allowed, Some((code, rule))).
#[allow(clippy::type_complexity)]
const CASES: &[(&str, Tweak, fn(&mut Identity), Option<(&str, &str)>)] = &[
    (
        "empty policy refuses everyone",
        |_| {},
        |_| {},
        Some(("access_denied", "policy")),
    ),
    (
        "any_permissions held",
        |p| p.any_permissions = list(&["x", "bq:read"]),
        |_| {},
        None,
    ),
    (
        "any_permissions missing",
        |p| p.any_permissions = list(&["x", "y"]),
        |_| {},
        Some(("access_denied", "any_permissions")),
    ),
    (
        "all_permissions held",
        |p| p.all_permissions = list(&["bq:read", "bq:write"]),
        |_| {},
        None,
    ),
    (
        "all_permissions one missing",
        |p| p.all_permissions = list(&["bq:read", "bq:admin"]),
        |_| {},
        Some(("access_denied", "all_permissions")),
    ),
    (
        "any_roles held",
        |p| p.any_roles = list(&["engineer", "x"]),
        |_| {},
        None,
    ),
    (
        "any_roles missing",
        |p| p.any_roles = list(&["admin"]),
        |_| {},
        Some(("access_denied", "any_roles")),
    ),
    (
        "all_roles held",
        |p| p.all_roles = list(&["engineer"]),
        |_| {},
        None,
    ),
    (
        "all_roles one missing",
        |p| p.all_roles = list(&["engineer", "admin"]),
        |_| {},
        Some(("access_denied", "all_roles")),
    ),
    (
        "any_groups held",
        |p| p.any_groups = list(&["analysts", "x"]),
        |_| {},
        None,
    ),
    (
        "any_groups missing",
        |p| p.any_groups = list(&["finance"]),
        |_| {},
        Some(("access_denied", "any_groups")),
    ),
    (
        "all_groups held",
        |p| p.all_groups = list(&["analysts"]),
        |_| {},
        None,
    ),
    (
        "all_groups one missing",
        |p| p.all_groups = list(&["analysts", "finance"]),
        |_| {},
        Some(("access_denied", "all_groups")),
    ),
    (
        "clients allowed",
        |p| p.clients = list(&["notebooks"]),
        |_| {},
        None,
    ),
    (
        "clients other",
        |p| p.clients = list(&["cli"]),
        |_| {},
        Some(("unauthorized_client", "clients")),
    ),
    (
        "clients absent azp",
        |p| p.clients = list(&["notebooks"]),
        |i| i.client_id = None,
        Some(("unauthorized_client", "clients")),
    ),
    (
        "machine by gty refused",
        |p| p.clients = list(&["notebooks"]),
        |i| i.grant_types = list(&["client-credentials"]),
        Some(("access_denied", "machine_tokens")),
    ),
    (
        "machine by sub refused",
        |p| p.clients = list(&["notebooks"]),
        |i| i.subject = "svc@clients".into(),
        Some(("access_denied", "machine_tokens")),
    ),
    (
        "machine allowed",
        |p| {
            p.clients = list(&["notebooks"]);
            p.machine_tokens = true
        },
        |i| i.grant_types = list(&["client-credentials"]),
        None,
    ),
    (
        "machine_tokens alone names nobody",
        |p| p.machine_tokens = true,
        |_| {},
        Some(("access_denied", "policy")),
    ),
    (
        "every rule must hold",
        |p| {
            p.any_groups = list(&["analysts"]);
            p.any_roles = list(&["admin"])
        },
        |_| {},
        Some(("access_denied", "any_roles")),
    ),
];

#[test]
fn every_rule_lets_through_and_refuses_with_its_name() {
    for (case, tweak_policy, tweak_identity, expected) in CASES {
        let mut policy = PolicySettings::default();
        tweak_policy(&mut policy);
        let mut identity = person();
        tweak_identity(&mut identity);
        let got = check(&policy, "bigquery", &identity);
        match (expected, got) {
            (None, Ok(())) => {}
            (Some((code, rule)), Err(e)) => {
                assert_eq!((e.oauth_code(), e.rule()), (*code, *rule), "{case}: {e}");
                let text = e.to_string();
                assert!(
                    text.contains("bigquery") && text.contains(rule),
                    "{case}: {text}"
                );
            }
            (expected, got) => panic!("{case}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn refusals_name_the_missing_value() {
    let policy = PolicySettings {
        all_groups: list(&["analysts", "finance"]),
        ..PolicySettings::default()
    };
    let text = check(&policy, "bq", &person()).unwrap_err().to_string();
    assert!(text.contains("missing: finance"), "{text}");
    let policy = PolicySettings {
        clients: list(&["cli"]),
        ..PolicySettings::default()
    };
    let text = check(&policy, "bq", &person()).unwrap_err().to_string();
    assert!(text.contains("cli") && text.contains("notebooks"), "{text}");
}

#[test]
fn a_basic_client_is_held_to_its_targets_and_azp_values() {
    let mut client = ClientSettings {
        id: "notebooks-proxy".into(),
        secret_sha256: "0".repeat(64),
        azp: vec![],
        targets: vec![],
    };
    assert_eq!(check_client(&client, "bq", &person()), Ok(()));
    client.targets = list(&["bq"]);
    assert_eq!(check_client(&client, "bq", &person()), Ok(()));
    let e = check_client(&client, "gcs", &person()).unwrap_err();
    assert_eq!(
        (e.oauth_code(), e.rule()),
        ("unauthorized_client", "clients.targets")
    );
    client.azp = list(&["notebooks"]);
    assert_eq!(check_client(&client, "bq", &person()), Ok(()));
    client.azp = list(&["cli"]);
    let e = check_client(&client, "bq", &person()).unwrap_err();
    assert_eq!(
        (e.oauth_code(), e.rule()),
        ("unauthorized_client", "clients.azp")
    );
    assert!(e.to_string().contains("notebooks"), "{e}");
}

#[test]
fn an_actor_is_required_from_the_listed_clients_when_the_target_says_so() {
    let mut machine = person();
    machine.subject = "etl@clients".into();
    machine.client_id = Some("etl".into());
    machine.grant_types = list(&["client-credentials"]);
    let mut policy = PolicySettings::default();
    assert_eq!(check_actor(&policy, "bq", None), Ok(()));
    assert_eq!(check_actor(&policy, "bq", Some(&machine)), Ok(()));
    let e = check_actor(&policy, "bq", Some(&person())).unwrap_err();
    assert_eq!((e.oauth_code(), e.rule()), ("access_denied", "actor"));
    policy.actor_clients = list(&["etl"]);
    assert_eq!(check_actor(&policy, "bq", Some(&machine)), Ok(()));
    let e = check_actor(&policy, "bq", None).unwrap_err();
    assert_eq!(
        (e.oauth_code(), e.rule()),
        ("access_denied", "actor_clients")
    );
    policy.actor_clients = list(&["billing"]);
    let e = check_actor(&policy, "bq", Some(&machine)).unwrap_err();
    assert_eq!(
        (e.oauth_code(), e.rule()),
        ("unauthorized_client", "actor_clients")
    );
    assert!(e.to_string().contains("etl"), "{e}");
}

#[test]
fn lifetime_is_capped_by_the_policy() {
    let policy = PolicySettings {
        max_lifetime_secs: 600,
        ..PolicySettings::default()
    };
    assert_eq!(capped_lifetime(&policy, 3599), 600);
    assert_eq!(capped_lifetime(&policy, 400), 400);
    assert_eq!(capped_lifetime(&policy, 0), 1);
}
