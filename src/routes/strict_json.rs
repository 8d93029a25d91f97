//! JSON objects whose keys are unique at every depth. `serde_json` keeps the last of a
//! repeated key, so `{"audience":"nope","audience":"bigquery"}` would mean whatever the
//! last writer wanted; a repeated form field is refused, and so is this.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// Why a text is not a strict JSON object.
#[derive(Debug, PartialEq, Eq)]
pub enum StrictJsonError {
    /// Not JSON, or not an object.
    NotAnObject,
    /// A key appears twice in one object; the key, at most 64 characters of it.
    Repeated(String),
}

/// Parses `text` as a JSON object, refusing a key repeated in any object within it.
pub fn object(text: &[u8]) -> Result<Map<String, Value>, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed = Strict::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(Strict(Value::Object(map))) => Ok(map),
        Ok(_) => Err(StrictJsonError::NotAnObject),
        Err(e) => {
            let message = e.to_string();
            match message.strip_prefix(REPEATED) {
                Some(rest) => Err(StrictJsonError::Repeated(
                    rest.split(" at line").next().unwrap_or_default().to_owned(),
                )),
                None => Err(StrictJsonError::NotAnObject),
            }
        }
    }
}

const REPEATED: &str = "repeated key ";

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(de::Error::custom(format!("{REPEATED}{shown}")));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        assert_eq!(
            object(br#"{"audience":"nope","audience":"bigquery"}"#),
            Err(StrictJsonError::Repeated("audience".into()))
        );
        assert_eq!(
            object(br#"{"options":{"userProject":"1","userProject":"2"}}"#),
            Err(StrictJsonError::Repeated("userProject".into()))
        );
        assert_eq!(
            object(br#"{"a":[{"b":1,"b":2}]}"#),
            Err(StrictJsonError::Repeated("b".into()))
        );
    }

    #[test]
    fn unique_objects_parse_as_serde_json_would() {
        let text = br#"{"a":1,"b":[true,null,"x",-2,1.5],"c":{"d":{}}}"#;
        let strict = object(text).unwrap();
        let plain: Map<String, Value> = serde_json::from_slice(text).unwrap();
        assert_eq!(strict, plain);
    }

    #[test]
    fn other_json_and_trailing_bytes_are_not_objects() {
        for text in [&b"[1]"[..], b"\"x\"", b"{} {}", b"{", b""] {
            assert_eq!(object(text), Err(StrictJsonError::NotAnObject));
        }
    }
}
