//! Wrappers that keep tokens out of logs, errors and `Debug` output.

use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256 of `bytes` as lowercase hex: the only form in which a token may be recorded.
pub fn fingerprint(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

/// A bearer token (ours, the caller's or Google's). `Debug` and `Display` show only a
/// short fingerprint, so it can sit in structs that are logged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The token itself, for the one place that must send it on.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 fingerprint of the token.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.0.as_bytes())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(sha256:{})", &self.fingerprint()[..12])
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_token() {
        let t = Token::new("eyJhbGciOiJSUzI1NiJ9.secret.sig");
        let shown = format!("{t:?} {t}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.starts_with("Token(sha256:"));
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
