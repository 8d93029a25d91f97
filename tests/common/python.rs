//! The Python interpreter of the project's venv, which holds the real Google client libraries.

use std::path::PathBuf;

/// The venv's Python (`make venv`), or `None` outside CI when it is missing.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("STS_BRIDGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    if path.exists() {
        return Some(path);
    }
    let reason = format!(
        "{} not found; run `make venv` (or `make test`)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("Python client libraries missing in CI: {reason}");
    }
    eprintln!("SKIPPED Python client test: {reason}");
    None
}
