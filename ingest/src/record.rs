//! Reading one JSON object field by field, with errors that name the record and field,
//! and a note of the fields nobody asked for (reported back as `ignored_fields`).

use crate::error::Error;
use chatlake_model::{PhoneHasher, Ts};
use serde_json::{Map, Value};

/// One input record being read.
pub struct Record<'a> {
    index: usize,
    obj: &'a Map<String, Value>,
    used: Vec<&'static str>,
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Is `s` a phone hash as chatlake writes it (64 lowercase hex digits)?
pub fn is_phone_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl<'a> Record<'a> {
    /// Starts reading record `index` (0-based).
    pub fn new(index: usize, value: &'a Value) -> Result<Record<'a>, Error> {
        match value {
            Value::Object(obj) => Ok(Record {
                index,
                obj,
                used: Vec::new(),
            }),
            other => Err(Error::InvalidRecord {
                index,
                field: "(record)".into(),
                message: format!("expected a JSON object, got {}", describe(other)),
            }),
        }
    }

    /// An error about `field` of this record.
    pub fn err(&self, field: &str, message: impl Into<String>) -> Error {
        Error::InvalidRecord {
            index: self.index,
            field: field.into(),
            message: message.into(),
        }
    }

    fn get(&mut self, field: &'static str) -> Option<&'a Value> {
        self.used.push(field);
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// Fields present in the record that were never read.
    pub fn unused_fields(&self) -> impl Iterator<Item = &'a String> + '_ {
        self.obj.keys().filter(|k| !self.used.contains(&k.as_str()))
    }

    /// An optional string; integers are taken as their exact decimal text (ids).
    pub fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => {
                if s.len() > 4096 {
                    return Err(self.err(field, "is longer than 4096 bytes"));
                }
                Ok(Some(s.clone()))
            }
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
            Some(v) => Err(self.err(field, format!("expected a string, got {}", describe(v)))),
        }
    }

    /// A required, non-empty string.
    pub fn req_str(&mut self, field: &'static str) -> Result<String, Error> {
        self.opt_str(field)?
            .ok_or_else(|| self.err(field, "is required"))
    }

    /// A required string from a fixed set of values.
    pub fn req_enum(&mut self, field: &'static str, allowed: &[&str]) -> Result<String, Error> {
        let v = self.req_str(field)?;
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(self.err(field, format!("must be one of {}", allowed.join(", "))))
        }
    }

    /// An optional timestamp: RFC 3339 with any offset, or epoch seconds (integer or
    /// fractional, as a number or a numeric string).
    pub fn opt_ts(&mut self, field: &'static str) -> Result<Option<Ts>, Error> {
        let parsed = match self.get(field) {
            None => return Ok(None),
            Some(Value::String(s)) => Ts::parse_rfc3339(s).or_else(|| Ts::parse_epoch_str(s)),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ts::from_secs(i),
                None => n.as_f64().and_then(Ts::from_secs_f64),
            },
            Some(v) => {
                return Err(self.err(field, format!("expected a timestamp, got {}", describe(v))));
            }
        };
        parsed.map(Some).ok_or_else(|| {
            self.err(field, "expected RFC 3339 (e.g. 2026-01-31T12:00:00Z) or epoch seconds between 2000 and 2200")
        })
    }

    /// A required timestamp.
    pub fn req_ts(&mut self, field: &'static str) -> Result<Ts, Error> {
        self.opt_ts(field)?
            .ok_or_else(|| self.err(field, "is required"))
    }

    /// An optional integer (a float with a fraction is refused).
    pub fn opt_i64(&mut self, field: &'static str) -> Result<Option<i64>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Some(i)),
                None => Err(self.err(field, "expected an integer")),
            },
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.err(field, "expected an integer")),
            Some(v) => Err(self.err(field, format!("expected an integer, got {}", describe(v)))),
        }
    }

    /// A required finite number (a numeric string such as Shopify's `"409.94"` is taken).
    pub fn req_f64(&mut self, field: &'static str) -> Result<f64, Error> {
        let v = match self.get(field) {
            None => return Err(self.err(field, "is required")),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(v) => {
                return Err(self.err(field, format!("expected a number, got {}", describe(v))));
            }
        };
        v.filter(|f| f.is_finite())
            .ok_or_else(|| self.err(field, "expected a finite number"))
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, field: &'static str) -> Result<Option<bool>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(field, format!("expected a boolean, got {}", describe(v)))),
        }
    }

    /// An ISO 4217 currency code (three upper-case letters).
    pub fn req_currency(&mut self, field: &'static str) -> Result<String, Error> {
        let c = self.req_str(field)?;
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(c)
        } else {
            Err(self.err(field, "expected an ISO 4217 code such as EUR"))
        }
    }

    /// The recipient: a raw `phone` (normalised to E.164 and hashed here), or an
    /// already computed `phone_hash` (64 lowercase hex digits).
    pub fn opt_phone_hash(&mut self, hasher: &PhoneHasher) -> Result<Option<String>, Error> {
        if let Some(raw) = self.opt_str("phone")? {
            return hasher
                .hash_phone(&raw)
                .map(Some)
                .map_err(|e| self.err("phone", format!("not a valid E.164 number: {e}")));
        }
        match self.opt_str("phone_hash")? {
            Some(h) if is_phone_hash(&h) => Ok(Some(h)),
            Some(_) => Err(self.err("phone_hash", "expected 64 lowercase hex digits")),
            None => Ok(None),
        }
    }

    /// A required recipient (see [`Record::opt_phone_hash`]).
    pub fn req_phone_hash(&mut self, hasher: &PhoneHasher) -> Result<String, Error> {
        self.opt_phone_hash(hasher)?
            .ok_or_else(|| self.err("phone", "is required"))
    }
}
