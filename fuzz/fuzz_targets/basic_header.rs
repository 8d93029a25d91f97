//! An `Authorization` header value (HTTP Basic client authentication).
#![no_main]

libfuzzer_sys::fuzz_target!(|value: &[u8]| {
    sts_bridge::fuzzing::authorization(value);
});
