//! A borrowed JSON tree for the webhook parsers.
//!
//! `serde_json::Value` copies every key and string into its own allocation and every
//! object into a `BTreeMap`; for a webhook of a few hundred bytes that was most of the
//! parse time (BENCHMARKS.md). [`Json`] borrows strings from the body wherever they have
//! no escapes and keeps objects as small vectors in document order, with the same
//! accessors the parsers used on `Value` (`get`, `as_str`, `as_array`, `as_i64`, …).
//! Nesting is bounded by serde_json's recursion limit, so hostile input cannot blow the
//! stack.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A JSON value whose strings borrow from the input where possible.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A non-negative integer above `i64::MAX`.
    UInt(u64),
    Float(f64),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in document order; a repeated key resolves to its last value, as in
    /// `serde_json::Value`.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses `body`; strings without escapes borrow from it.
    pub fn parse(body: &'a [u8]) -> serde_json::Result<Json<'a>> {
        serde_json::from_slice(body)
    }

    /// The member `key` of an object (`None` for a missing key or a non-object).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|m| &m.1),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Json<'a>>> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An integer that fits `i64` (floats are not integers, as in `serde_json`).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }
}

/// A map key that borrows when it can.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
                Ok(Json::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
                Ok(i64::try_from(v).map_or(Json::UInt(v), Json::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
                Ok(Json::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
                // serde_json gives no size hints: start where webhook arrays and objects
                // usually end, so most are allocated once and never grown.
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(64));
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, Json<'de>>()? {
                    members.push((k, v));
                }
                Ok(Json::Object(members))
            }
        }
        d.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_owns_escaped_ones() {
        let body = br#"{"a":"plain","b":"esc\"aped","n":18446744073709551615,"i":-3,"f":1.5,"x":null,"t":true,"l":[1,{"k":"v"}]}"#;
        let j = Json::parse(body).expect("parse");
        assert!(matches!(
            j.get("a"),
            Some(Json::String(Cow::Borrowed("plain")))
        ));
        assert_eq!(j.get("b").and_then(Json::as_str), Some("esc\"aped"));
        assert_eq!(j.get("n"), Some(&Json::UInt(u64::MAX)));
        assert_eq!(j.get("n").and_then(Json::as_i64), None);
        assert_eq!(j.get("i").and_then(Json::as_i64), Some(-3));
        assert_eq!(j.get("f").and_then(Json::as_i64), None);
        assert_eq!(j.get("x"), Some(&Json::Null));
        assert_eq!(j.get("t").and_then(Json::as_bool), Some(true));
        let l = j.get("l").and_then(Json::as_array).expect("array");
        assert_eq!(l[1].get("k").and_then(Json::as_str), Some("v"));
        assert!(j.is_object() && !l[0].is_object());
        assert_eq!(j.get("missing"), None);
        assert_eq!(l[0].get("k"), None);
    }

    #[test]
    fn a_repeated_key_resolves_to_the_last_value_like_serde_json() {
        let body = br#"{"k":1,"k":2}"#;
        let ours = Json::parse(body).expect("parse");
        let theirs: serde_json::Value = serde_json::from_slice(body).expect("parse");
        assert_eq!(ours.get("k").and_then(Json::as_i64), theirs["k"].as_i64());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let body = "[".repeat(100_000);
        assert!(Json::parse(body.as_bytes()).is_err());
    }
}
