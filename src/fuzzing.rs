//! What the fuzz targets (`fuzz/`, `make fuzz`) drive: the parsers any caller reaches
//! before a signature is checked. Built only with the `fuzzing` feature, so the library's
//! API stays as it is in every other build.

pub use crate::identity::parse_unverified as token_header;
pub use crate::routes::fuzzing::{authorization, form, json, options};
