//! A `POST /v1/token` JSON body (strict: one object, no repeated key), through to the
//! exchange request.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    sts_bridge::fuzzing::json(body);
});
