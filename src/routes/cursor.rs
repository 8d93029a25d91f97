//! Paging cursors the server signs, so a caller cannot hand-make one (HMAC-SHA256).

use super::error::ApiError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// The key cursors are signed with: from `admin.cursor_secret` when replicas must accept
/// each other's cursors, else drawn at start-up.
pub struct CursorKey([u8; 32]);

impl fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// The key derived from `secret`, or a random one when there is none.
    pub fn new(secret: Option<&str>) -> Self {
        let seed = match secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
                .iter()
                .flat_map(|u| u.into_bytes())
                .collect(),
        };
        Self(Sha256::digest(seed).into())
    }

    fn mac(&self, listing: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key size");
        // The listing is bound in, so one listing's cursor is refused by another.
        mac.update(listing.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// A cursor for `listing` carrying `payload`.
    pub fn seal(&self, listing: &str, payload: &str) -> String {
        let tag = self
            .mac(listing, payload.as_bytes())
            .finalize()
            .into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The payload of a cursor this server sealed for `listing`.
    pub fn open(&self, listing: &str, cursor: &str) -> Result<String, ApiError> {
        let opened = cursor.split_once('.').and_then(|(payload, tag)| {
            let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
            let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
            self.mac(listing, &payload).verify_slice(&tag).ok()?;
            String::from_utf8(payload).ok()
        });
        opened.ok_or_else(|| ApiError::invalid_request("cursor is not one this server returned"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_cursor_opens_only_for_its_listing_and_key() {
        let key = CursorKey::new(Some("s"));
        let cursor = key.seal("issuances", "41");
        assert_eq!(key.open("issuances", &cursor).unwrap(), "41");
        assert!(key.open("admin-actions", &cursor).is_err());
        assert!(CursorKey::new(Some("t"))
            .open("issuances", &cursor)
            .is_err());
        assert!(CursorKey::new(None).open("issuances", &cursor).is_err());
        // The same secret on another replica opens it.
        assert!(CursorKey::new(Some("s")).open("issuances", &cursor).is_ok());
    }

    #[test]
    fn a_changed_payload_is_refused() {
        let key = CursorKey::new(None);
        let cursor = key.seal("issuances", "41");
        let (_, tag) = cursor.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("9999"));
        assert!(key.open("issuances", &forged).is_err());
        assert!(key.open("issuances", "before:41").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn a_sealed_cursor_opens_to_its_payload(listing in "[a-z_]{1,20}", payload in "\\PC{0,80}") {
                let key = CursorKey::new(None);
                prop_assert_eq!(key.open(&listing, &key.seal(&listing, &payload)).ok(), Some(payload));
            }

            #[test]
            fn a_cursor_opens_for_no_other_listing(listing in "[a-z]{1,20}", payload in "\\PC{0,80}") {
                let key = CursorKey::new(None);
                let other = format!("{listing}x");
                prop_assert!(key.open(&other, &key.seal(&listing, &payload)).is_err());
            }

            #[test]
            fn a_cursor_the_server_did_not_seal_is_refused(cursor in "\\PC{0,200}") {
                prop_assert!(CursorKey::new(None).open("issuances", &cursor).is_err());
            }
        }
    }
}
