//! A subject token up to its signature check: shape, base64url, header and payload JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|token: &str| {
    let _ = sts_bridge::fuzzing::token_header(token);
});
