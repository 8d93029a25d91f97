//! The key commands, run as an operator would: `keys generate` and `jwks`.

use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn sts_bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sts-bridge"))
        .args(args)
        .env_remove("STS_BRIDGE_CONFIG")
        .output()
        .expect("sts-bridge runs")
}

fn generate(alg: &str, out: &Path) -> Output {
    sts_bridge(&[
        "keys",
        "generate",
        "--alg",
        alg,
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn keys_generate_writes_an_owner_only_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["ES256", "RS256"] {
        let path = dir.path().join(format!("{alg}.pem"));
        let output = generate(alg, &path);
        assert!(output.status.success(), "{output:?}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{alg}: mode {mode:o}");
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{alg}");

        let again = generate(alg, &path);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            pem,
            "{alg} key changed"
        );
    }
    let hmac = generate("HS256", &dir.path().join("hs.pem"));
    assert!(!hmac.status.success());
    assert!(!dir.path().join("hs.pem").exists());
}

#[test]
fn jwks_prints_exactly_the_form_google_accepts_as_uploaded_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (ec, rsa) = (dir.path().join("ec.pem"), dir.path().join("rsa.pem"));
    assert!(generate("ES256", &ec).status.success());
    assert!(generate("RS256", &rsa).status.success());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [[issuers]]
            issuer = "https://tenant.auth0.com/"
            audiences = ["https://sts-bridge"]
            [[targets]]
            name = "bq"
            kind = "workforce"
            provider = "//iam.googleapis.com/locations/global/workforcePools/p/providers/bridge"
            allowed_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
            mode = "assertion"
            assertion = {{ client_id = "sts-bridge-bq" }}
            [assertion]
            issuer = "https://sts-bridge.example.com"
            keys = [
              {{ kid = "ec-1", file = "{}", state = "active" }},
              {{ kid = "rsa-2", file = "{}", state = "next" }},
            ]
            "#,
            ec.display(),
            rsa.display()
        ),
    )
    .unwrap();

    let output = sts_bridge(&["jwks", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let jwks: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let top: Vec<&String> = jwks.as_object().unwrap().keys().collect();
    assert_eq!(top, ["keys"]);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let fields =
        |k: &Value| -> BTreeSet<String> { k.as_object().unwrap().keys().cloned().collect() };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    let (ec_key, rsa_key) = (&keys[0], &keys[1]);
    assert_eq!(
        fields(ec_key),
        set(&["kty", "alg", "use", "kid", "x", "y", "crv"])
    );
    assert_eq!(
        (
            &ec_key["kty"],
            &ec_key["alg"],
            &ec_key["use"],
            &ec_key["kid"],
            &ec_key["crv"]
        ),
        (
            &"EC".into(),
            &"ES256".into(),
            &"sig".into(),
            &"ec-1".into(),
            &"P-256".into()
        )
    );
    assert_eq!(
        fields(rsa_key),
        set(&["kty", "alg", "use", "kid", "n", "e"])
    );
    assert_eq!(
        (
            &rsa_key["kty"],
            &rsa_key["alg"],
            &rsa_key["use"],
            &rsa_key["kid"],
            &rsa_key["e"]
        ),
        (
            &"RSA".into(),
            &"RS256".into(),
            &"sig".into(),
            &"rsa-2".into(),
            &"AQAB".into()
        )
    );
    use base64::Engine;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.as_str().unwrap())
            .expect("unpadded base64url")
            .len()
    };
    assert_eq!((b64(&ec_key["x"]), b64(&ec_key["y"])), (32, 32));
    assert_eq!(b64(&rsa_key["n"]), 256, "a 2048-bit modulus");

    // check-config loads the same keys, and names a missing one.
    assert!(
        sts_bridge(&["check-config", "--config", config.to_str().unwrap()])
            .status
            .success()
    );
    std::fs::remove_file(&rsa).unwrap();
    let broken = sts_bridge(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(!broken.status.success());
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("rsa-2"),
        "{broken:?}"
    );
}
