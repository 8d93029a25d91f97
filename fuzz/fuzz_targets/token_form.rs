//! A `POST /v1/token` form body, through to the exchange request.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    sts_bridge::fuzzing::form(body);
});
