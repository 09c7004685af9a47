//! Shopify `orders/*` and `checkouts/*` webhooks (the bare REST resource as body).
//!
//! Orders: `order_id` from `id` (a 64-bit integer, never through a float), `ts` from
//! `created_at`, `total` from `total_price` in `currency`, `cart_id` from `cart_token`
//! else `checkout_token`, the phone from the order, else the customer, else the billing
//! then shipping address (the first that is a valid number), UTM fields from
//! `landing_site`'s query, `test`, `cancelled` from `cancelled_at`. Checkouts become
//! carts (`cart_id` from `cart_token` else `token`, `ts` the last update).

use crate::Normalizer;
use crate::error::Error;
use crate::whatsapp::{Outcome, Reject};
use chatlake_model::tables::{CartEvent, OrderEvent};
use chatlake_model::{Event, Ts};
use serde_json::Value;

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn time(v: &Value, key: &str) -> Result<Option<Ts>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ts::parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| format!("`{key}` is not an ISO 8601 time with offset")),
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

fn money(v: &Value, key: &str) -> Result<f64, String> {
    let f = match v.get(key) {
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(Value::Number(n)) => n.as_f64(),
        _ => return Err(format!("`{key}` is missing")),
    };
    f.filter(|f| f.is_finite())
        .ok_or_else(|| format!("`{key}` is not a decimal amount"))
}

fn currency(v: &Value) -> Result<String, String> {
    match text(v, "currency") {
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => Ok(c.to_owned()),
        Some(_) => Err("`currency` is not an ISO 4217 code".into()),
        None => Err("`currency` is missing".into()),
    }
}

/// The id as exact decimal text: an integer (u64/i64) or a digit string.
fn exact_id(v: &Value, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        Some(Value::Number(_)) => Err(format!("`{key}` is not an integer")),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(s.clone())
        }
        Some(_) => Err(format!("`{key}` is not an integer id")),
        None => Err(format!("`{key}` is missing")),
    }
}

/// The first valid phone among the candidates, hashed.
fn first_phone(norm: &Normalizer, candidates: &[Option<&str>]) -> Option<String> {
    candidates
        .iter()
        .flatten()
        .find_map(|p| norm.hasher.hash_phone(p).ok())
}

fn nested<'a>(v: &'a Value, obj: &str, key: &str) -> Option<&'a str> {
    v.get(obj).and_then(|o| text(o, key))
}

/// `utm_*` parameters of a landing URL (absolute, or a path with a query).
pub fn utm(landing_site: &str) -> [Option<String>; 4] {
    let parsed = url::Url::parse(landing_site)
        .or_else(|_| url::Url::parse("http://landing.invalid/").and_then(|b| b.join(landing_site)));
    let mut out: [Option<String>; 4] = Default::default();
    if let Ok(u) = parsed {
        for (k, v) in u.query_pairs() {
            let slot = match k.as_ref() {
                "utm_source" => 0,
                "utm_medium" => 1,
                "utm_campaign" => 2,
                "utm_content" => 3,
                _ => continue,
            };
            if out[slot].is_none() && !v.is_empty() {
                out[slot] = Some(v.into_owned());
            }
        }
    }
    out
}

fn parse_order(o: &Value, norm: &Normalizer, received_at: Ts) -> Result<Event, String> {
    let order_id = exact_id(o, "id")?;
    let ts = time(o, "created_at")?.ok_or("`created_at` is missing")?;
    let updated_at = time(o, "updated_at")?;
    let total = money(o, "total_price")?;
    let currency = currency(o)?;
    let cart_id = text(o, "cart_token")
        .or_else(|| text(o, "checkout_token"))
        .map(str::to_owned);
    let phone_hash = first_phone(
        norm,
        &[
            text(o, "phone"),
            nested(o, "customer", "phone"),
            nested(o, "billing_address", "phone"),
            nested(o, "shipping_address", "phone"),
        ],
    );
    let [utm_source, utm_medium, utm_campaign, utm_content] =
        text(o, "landing_site").map(utm).unwrap_or_default();
    let cancelled = !matches!(o.get("cancelled_at"), None | Some(Value::Null));
    Ok(Event::Orders(OrderEvent {
        order_id,
        ts,
        updated_at,
        phone_hash,
        total,
        currency,
        cart_id,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_content,
        test: o.get("test").and_then(Value::as_bool).unwrap_or(false),
        cancelled,
        source: "shopify".to_owned(),
        received_at,
    }))
}

fn parse_checkout(c: &Value, norm: &Normalizer, received_at: Ts) -> Result<Event, String> {
    let cart_id = text(c, "cart_token")
        .or_else(|| text(c, "token"))
        .ok_or("neither `cart_token` nor `token`")?;
    let ts = match time(c, "updated_at")? {
        Some(t) => t,
        None => time(c, "created_at")?.ok_or("`created_at` is missing")?,
    };
    let phone_hash = first_phone(
        norm,
        &[
            text(c, "phone"),
            text(c, "sms_marketing_phone"),
            nested(c, "customer", "phone"),
            nested(c, "billing_address", "phone"),
            nested(c, "shipping_address", "phone"),
        ],
    );
    Ok(Event::Carts(CartEvent {
        cart_id: cart_id.to_owned(),
        ts,
        phone_hash,
        value: money(c, "total_price")?,
        currency: currency(c)?,
        source: "shopify".to_owned(),
        received_at,
    }))
}

/// Which Shopify resource a webhook carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Order,
    Checkout,
}

/// Parses a Shopify webhook body. Not a JSON object → 400; an object we cannot read →
/// one reject (a dead letter).
pub fn parse(
    resource: Resource,
    body: &[u8],
    norm: &Normalizer,
    received_at: Ts,
) -> Result<Outcome, Error> {
    let root: Value = serde_json::from_slice(body).map_err(|e| Error::InvalidBody {
        message: format!("malformed JSON: {e}"),
    })?;
    if !root.is_object() {
        return Err(Error::InvalidBody {
            message: "expected a JSON object (the Shopify resource)".into(),
        });
    }
    let result = match resource {
        Resource::Order => parse_order(&root, norm, received_at),
        Resource::Checkout => parse_checkout(&root, norm, received_at),
    };
    let mut out = Outcome::default();
    match result {
        Ok(e) => out.events.push(e),
        Err(reason) => out.rejects.push(Reject {
            path: String::new(),
            reason,
        }),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utm_from_absolute_and_relative_urls() {
        let [s, m, c, x] = utm(
            "https://shop.example/p?utm_source=whatsapp&utm_medium=msg&utm_campaign=bf&utm_content=wamid.X",
        );
        assert_eq!(s.as_deref(), Some("whatsapp"));
        assert_eq!(m.as_deref(), Some("msg"));
        assert_eq!(c.as_deref(), Some("bf"));
        assert_eq!(x.as_deref(), Some("wamid.X"));
        let [s, ..] = utm("/products/a?utm_source=wa");
        assert_eq!(s.as_deref(), Some("wa"));
        assert_eq!(
            utm("http://www.example.com?source=abc"),
            [None, None, None, None]
        );
    }

    #[test]
    fn big_ids_and_phone_fallback() {
        let norm = Normalizer::new("k", &Default::default(), "1");
        let body = br#"{"id": 9007199254740993, "created_at": "2026-01-01T10:00:00-05:00", "total_price": "10.00",
          "currency": "EUR", "phone": null, "customer": {"phone": "555-555-BILL"},
          "billing_address": {"phone": "+44 20 7946 0958"}, "cancelled_at": "2026-01-02T00:00:00Z"}"#;
        let o = parse(Resource::Order, body, &norm, Ts(0)).expect("parse");
        let Event::Orders(order) = &o.events[0] else {
            panic!("order")
        };
        assert_eq!(order.order_id, "9007199254740993");
        assert_eq!(
            order.phone_hash,
            Some(norm.hasher.hash_e164("+442079460958"))
        );
        assert!(order.cancelled);
        let bad = parse(Resource::Order, br#"{"id": 1.5e3}"#, &norm, Ts(0)).expect("parse");
        assert_eq!(bad.rejects[0].reason, "`id` is not an integer");
    }
}
