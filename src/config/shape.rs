//! The type of each setting, read from its `Deserialize` impl, and the reading of an
//! environment value by that type ([`coerce`]).
//!
//! [`Shape::of`] deserializes a type from [`Probe`], a deserializer that holds no data:
//! it answers every request of the type's `Deserialize` with a placeholder (0, "", one
//! element, one entry, every field of a struct) and records what was asked for
//! (`deserialize_str`, `deserialize_u64`, `deserialize_seq`, …). So an `Option<u64>`
//! setting whose default is `None` is still known to be a number, and a new setting
//! needs nothing here.

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;

/// What a setting's type asks the deserializer for.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A string (also a path, a char, a unit-variant enum).
    Str,
    /// A whole number.
    Int,
    /// A number.
    Float,
    Bool,
    /// A list of the element shape.
    List(Box<Shape>),
    /// A table with string keys and values of this shape.
    Table(Box<Shape>),
    /// A struct: its fields by name (a section of the config file).
    Struct(BTreeMap<String, Shape>),
    /// The type takes anything (`deserialize_any`): read as a TOML value if the text is
    /// one, else as a string.
    Any,
}

impl Shape {
    /// The shape of `T`, or the message of a type that the probe cannot walk.
    pub fn of<'de, T: serde::Deserialize<'de>>() -> Result<Shape, String> {
        let mut shape = Shape::Any;
        T::deserialize(Probe { slot: &mut shape }).map_err(|e| e.to_string())?;
        Ok(shape)
    }

    /// The field `name` of a struct shape.
    pub fn field(&self, name: &str) -> Option<&Shape> {
        match self {
            Shape::Struct(fields) => fields.get(name),
            _ => None,
        }
    }

    /// How the value of a setting of this shape is written in the environment.
    pub fn describe(&self) -> &'static str {
        match self {
            Shape::Str => "text, taken as it is",
            Shape::Int => "a whole number",
            Shape::Float => "a number",
            Shape::Bool => "true or false",
            Shape::List(_) => "a list: A,B or [\"A\", \"B\"]",
            Shape::Table(_) => "a table: { \"key\" = \"value\" } or {\"key\": \"value\"}",
            Shape::Struct(_) => "a section",
            Shape::Any => "a TOML value",
        }
    }
}

/// Reads the environment value `raw` as a setting of `shape`; the error says what the
/// setting takes. A list or table error never repeats the value (it may hold a key).
pub fn coerce(shape: &Shape, raw: &str) -> Result<toml::Value, String> {
    let t = raw.trim();
    match shape {
        Shape::Str => Ok(toml::Value::String(raw.to_owned())),
        Shape::Int => t
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{raw}` is not {}", shape.describe())),
        Shape::Float => t
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(toml::Value::Float)
            .ok_or_else(|| format!("`{raw}` is not {}", shape.describe())),
        Shape::Bool => match t.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("`{raw}` is not {}", shape.describe())),
        },
        Shape::List(element) => {
            if t.starts_with('[') {
                return match structured(t) {
                    Some(v @ toml::Value::Array(_)) => Ok(v),
                    _ => Err(format!(
                        "the value starts with `[` but is not a TOML or JSON list; give {}",
                        shape.describe()
                    )),
                };
            }
            t.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| coerce(element, item))
                .collect::<Result<Vec<_>, _>>()
                .map(toml::Value::Array)
        }
        Shape::Table(_) => match structured(t) {
            Some(v @ toml::Value::Table(_)) => Ok(v),
            _ if t.is_empty() => Ok(toml::Value::Table(toml::Table::new())),
            _ => Err(format!("the value is not {}", shape.describe())),
        },
        Shape::Struct(_) => Err(
            "this is a section, not a setting: set its keys as CHATLAKE_<SECTION>__<KEY>"
                .to_owned(),
        ),
        Shape::Any => Ok(structured(t)
            .or_else(|| scalar(t))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()))),
    }
}

/// A TOML value (inline table or array) or a JSON object or array.
fn structured(t: &str) -> Option<toml::Value> {
    if let Some(v) = scalar(t) {
        return Some(v);
    }
    let json: serde_json::Value = serde_json::from_str(t).ok()?;
    toml::Value::try_from(json).ok()
}

/// `t` as the right-hand side of a TOML `key = value`.
fn scalar(t: &str) -> Option<toml::Value> {
    let mut table = format!("v = {t}").parse::<toml::Table>().ok()?;
    table.remove("v")
}

type Error = de::value::Error;

/// A deserializer that records, in `slot`, what it was asked for (module doc).
struct Probe<'a> {
    slot: &'a mut Shape,
}

/// `fn deserialize_x(self, visitor)` for each method: records `$shape`, then `$call`
/// with `$v` the visitor.
macro_rules! probe_as {
    ($shape:expr, |$v:ident| $call:expr, $($method:ident),*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $v: V) -> Result<V::Value, Error> {
                *self.slot = $shape;
                $call
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Error;

    probe_as!(
        Shape::Any,
        |v| v.visit_unit(),
        deserialize_any,
        deserialize_ignored_any
    );
    probe_as!(Shape::Bool, |v| v.visit_bool(false), deserialize_bool);
    probe_as!(
        Shape::Int,
        |v| v.visit_u8(0),
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128
    );
    probe_as!(
        Shape::Float,
        |v| v.visit_f64(0.0),
        deserialize_f32,
        deserialize_f64
    );
    probe_as!(Shape::Str, |v| v.visit_char('a'), deserialize_char);
    probe_as!(
        Shape::Str,
        |v| v.visit_str(""),
        deserialize_str,
        deserialize_string,
        deserialize_identifier
    );
    probe_as!(
        Shape::Str,
        |v| v.visit_bytes(b""),
        deserialize_bytes,
        deserialize_byte_buf
    );
    probe_as!(Shape::Any, |v| v.visit_unit(), deserialize_unit);

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut element = Shape::Any;
        let out = visitor.visit_seq(Elements {
            left: 1,
            slot: &mut element,
        })?;
        *self.slot = Shape::List(Box::new(element));
        Ok(out)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        let mut element = Shape::Any;
        let out = visitor.visit_seq(Elements {
            left: len,
            slot: &mut element,
        })?;
        *self.slot = Shape::List(Box::new(element));
        Ok(out)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut value = Shape::Any;
        let out = visitor.visit_map(Entry {
            state: 0,
            slot: &mut value,
        })?;
        *self.slot = Shape::Table(Box::new(value));
        Ok(out)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut access = Fields {
            fields: fields.iter(),
            current: None,
            found: BTreeMap::new(),
        };
        let out = visitor.visit_map(&mut access)?;
        *self.slot = Shape::Struct(access.found);
        Ok(out)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        *self.slot = Shape::Str;
        let first = variants
            .first()
            .ok_or_else(|| de::Error::custom("an enum without variants"))?;
        visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(*first))
    }
}

/// `left` elements, each probed into `slot`.
struct Elements<'a> {
    left: usize,
    slot: &'a mut Shape,
}

impl<'de> SeqAccess<'de> for Elements<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(Probe {
            slot: &mut *self.slot,
        })
        .map(Some)
    }
}

/// One entry whose value is probed into `slot` (state 0: key next, 1: value next).
struct Entry<'a> {
    state: u8,
    slot: &'a mut Shape,
}

impl<'de> MapAccess<'de> for Entry<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.state != 0 {
            return Ok(None);
        }
        self.state = 1;
        let mut key = Shape::Any;
        seed.deserialize(Probe { slot: &mut key }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        self.state = 2;
        seed.deserialize(Probe {
            slot: &mut *self.slot,
        })
    }
}

/// Every field of a struct, each value probed into `found`.
struct Fields {
    fields: std::slice::Iter<'static, &'static str>,
    current: Option<&'static str>,
    found: BTreeMap<String, Shape>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.fields.next() else {
            return Ok(None);
        };
        self.current = Some(name);
        seed.deserialize(IntoDeserializer::<Error>::into_deserializer(*name))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = self
            .current
            .take()
            .ok_or_else(|| de::Error::custom("a value before its key"))?;
        let mut shape = Shape::Any;
        let out = seed.deserialize(Probe { slot: &mut shape })?;
        self.found.insert(name.to_owned(), shape);
        Ok(out)
    }
}
