//! The `options` parameter: JSON, percent-encoded zero to two times.
#![no_main]

libfuzzer_sys::fuzz_target!(|raw: &str| {
    sts_bridge::fuzzing::options(raw);
});
