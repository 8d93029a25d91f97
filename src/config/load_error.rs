//! The loader's errors (wrong type, unknown key) in the words validation uses:
//! ``configuration key `cache.max_entries`: expected an integer, found "lots" (FILE)``.

use super::ConfigError;
use figment::error::{Actual, Kind};
use figment::Figment;

/// Describes every problem `err` holds, one per line, each naming its key.
pub(super) fn describe(err: figment::Error) -> ConfigError {
    let mut problems = err.into_iter().map(|e| one(&e));
    let first = problems
        .next()
        .unwrap_or_else(|| ConfigError::Load("unknown error".into()));
    let rest: Vec<String> = problems.map(|p| p.to_string()).collect();
    match (first, rest.is_empty()) {
        (first, true) => first,
        (ConfigError::Invalid { key, problem }, false) => ConfigError::Invalid {
            key,
            problem: format!("{problem}\n{}", rest.join("\n")),
        },
        (other, false) => ConfigError::Load(format!("{other}\n{}", rest.join("\n"))),
    }
}

fn one(e: &figment::Error) -> ConfigError {
    let mut path = e.path.clone();
    // The loader names the offending field in the path for some kinds, not for others.
    let mut name = |field: &str| {
        if path.last().map(String::as_str) != Some(field) {
            path.push(field.to_owned());
        }
    };
    let problem = match &e.kind {
        Kind::InvalidType(actual, expected) => {
            format!(
                "expected {}, found {}",
                expected_words(expected),
                found(actual)
            )
        }
        Kind::InvalidValue(actual, expected) => {
            format!(
                "expected {}, found {}",
                expected_words(expected),
                found(actual)
            )
        }
        Kind::UnknownField(field, known) => {
            name(field);
            unknown("key", field, known)
        }
        Kind::UnknownVariant(value, known) => unknown("value", value, known),
        Kind::MissingField(field) => {
            name(field);
            "is required".to_owned()
        }
        Kind::DuplicateField(field) => {
            name(field);
            "is given twice".to_owned()
        }
        other => other.to_string(),
    };
    let problem = match source(e) {
        Some(source) => format!("{problem} ({source})"),
        None => problem,
    };
    if path.is_empty() {
        return ConfigError::Load(problem);
    }
    ConfigError::Invalid {
        key: dotted(&path),
        problem,
    }
}

/// `targets.0.name` reads as `targets[0].name`, as validation writes it.
fn dotted(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// Where the value came from: the file, or the environment variable that set it.
fn source(e: &figment::Error) -> Option<String> {
    let md = e.metadata.as_ref()?;
    match &md.source {
        Some(figment::Source::File(path)) => Some(path.display().to_string()),
        Some(other) => Some(other.to_string()),
        None if md.name.contains("environment") && !e.path.is_empty() => Some(format!(
            "environment variable STS_BRIDGE__{}",
            e.path.join("__").to_ascii_uppercase()
        )),
        None => None,
    }
}

fn expected_words(expected: &str) -> String {
    let words = match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "string" => "a string",
        "a sequence" => "a list",
        other => return other.trim_start_matches("struct ").to_owned(),
    };
    words.to_owned()
}

fn found(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("{s:?}"),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Bool(b) => b.to_string(),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        other => other.to_string(),
    }
}

fn unknown(what: &str, given: &str, known: &[&str]) -> String {
    match nearest(given, known) {
        Some(near) => format!("unknown {what}; did you mean `{near}`?"),
        None if known.is_empty() => format!("unknown {what}"),
        None => format!("unknown {what}; known: {}", known.join(", ")),
    }
}

/// The known name closest to `given`, when it is close enough to be a slip.
fn nearest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(given, k), *k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Extracts `T`, describing a failure in validation's words.
pub(super) fn extract<T: serde::de::DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(describe)
}
