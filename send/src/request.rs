//! A send request (`POST /v1/sends`) as the API receives it, and its validation: every
//! field is checked before anything is recorded, and a bad one is
//! [`Error::InvalidSend`] naming it. A request has no field that sets the clock.

use crate::cloud::Message;
use crate::error::{Error, Result};
use crate::outbox::{RecipientFields, SendSpec};
use crate::policy::QuietHoursMode;
use chatlake_model::normalize_e164;
use serde::Deserialize;
use serde_json::Value;

/// Template categories a send may name (`service` is a free-form `text`).
pub const CATEGORIES: &[&str] = &["marketing", "utility", "authentication"];
/// Largest send request.
pub const MAX_RECIPIENTS: usize = 1_000_000;

/// The body of `POST /v1/sends` (docs/api.md, "Sends and consent").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub campaign_id: Option<String>,
    pub template: Option<String>,
    pub text: Option<String>,
    pub language: Option<String>,
    pub category: Option<String>,
    /// Phone strings, or objects `{phone, cart_id?, step?, journey?, segment?,
    /// country?, variables?}`.
    pub recipients: Option<Vec<Value>>,
    pub experiment_id: Option<String>,
    pub variables: Option<Vec<String>>,
    pub quiet_hours: Option<String>,
    /// For every recipient that does not give its own.
    pub journey: Option<String>,
    pub segment: Option<String>,
    pub country: Option<String>,
}

/// One recipient of a valid request.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    pub e164: String,
    pub fields: RecipientFields,
}

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub spec: SendSpec,
    pub message: Message,
    pub quiet: QuietHoursMode,
    pub recipients: Vec<Recipient>,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidSend {
        field: field.into(),
        message: message.into(),
    }
}

/// A short free-text field (`campaign_id`, `segment`, …): 1–256 characters.
fn label(field: &str, v: Option<String>) -> Result<Option<String>> {
    match v {
        Some(s) if s.is_empty() || s.len() > 256 => {
            Err(bad(field, format!("`{field}` must be 1 to 256 characters")))
        }
        v => Ok(v),
    }
}

fn recipient(i: usize, v: &Value, defaults: &RecipientFields) -> Result<Recipient> {
    let at = |f: &str| format!("recipients[{i}].{f}");
    let (phone, fields) = match v {
        Value::String(p) => (p.as_str(), defaults.clone()),
        Value::Object(o) => {
            for k in o.keys() {
                if !matches!(
                    k.as_str(),
                    "phone" | "cart_id" | "step" | "journey" | "segment" | "country" | "variables"
                ) {
                    return Err(bad(
                        at(k),
                        format!(
                            "recipients[{i}] has unknown field `{k}` (phone, cart_id, step, journey, segment, country, variables)"
                        ),
                    ));
                }
            }
            let text = |k: &str| -> Result<Option<String>> {
                match o.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => {
                        Ok(Some(s.clone()))
                    }
                    Some(_) => Err(bad(
                        at(k),
                        format!("{} must be a string of 1 to 256 characters", at(k)),
                    )),
                }
            };
            let step = match o.get("step") {
                None | Some(Value::Null) => None,
                Some(s) => match s.as_i64() {
                    Some(n) if (1..=1000).contains(&n) => Some(n),
                    _ => {
                        return Err(bad(
                            at("step"),
                            format!("{} must be an integer from 1 to 1000", at("step")),
                        ));
                    }
                },
            };
            let variables = match o.get("variables") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => Some(
                    a.iter()
                        .map(|x| x.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            bad(
                                at("variables"),
                                format!("{} must be a list of strings", at("variables")),
                            )
                        })?,
                ),
                Some(_) => {
                    return Err(bad(
                        at("variables"),
                        format!("{} must be a list of strings", at("variables")),
                    ));
                }
            };
            let phone = o.get("phone").and_then(Value::as_str).ok_or_else(|| {
                bad(
                    at("phone"),
                    format!("{} is required (a phone number)", at("phone")),
                )
            })?;
            (
                phone,
                RecipientFields {
                    cart_id: text("cart_id")?,
                    step,
                    journey: text("journey")?.or_else(|| defaults.journey.clone()),
                    segment: text("segment")?.or_else(|| defaults.segment.clone()),
                    country: text("country")?.or_else(|| defaults.country.clone()),
                    variables,
                },
            )
        }
        _ => {
            return Err(bad(
                format!("recipients[{i}]"),
                format!("recipients[{i}] must be a phone number or an object with `phone`"),
            ));
        }
    };
    let e164 = normalize_e164(phone).map_err(|e| {
        bad(
            format!("recipients[{i}]"),
            format!("recipients[{i}] is not a valid phone number: {e}"),
        )
    })?;
    Ok(Recipient { e164, fields })
}

impl SendRequest {
    /// Checks every field; the first bad one is [`Error::InvalidSend`].
    pub fn validate(self) -> Result<Validated> {
        let campaign_id = label("campaign_id", self.campaign_id)?
            .ok_or_else(|| bad("campaign_id", "`campaign_id` is required"))?;
        let (category, message) = match (&self.template, &self.text) {
            (Some(_), Some(_)) => return Err(bad("text", "give `template` or `text`, not both")),
            (None, None) => return Err(bad("template", "`template` (or `text`) is required")),
            (Some(t), None) => {
                let language = self
                    .language
                    .clone()
                    .ok_or_else(|| bad("language", "`language` is required with `template`"))?;
                let category = self
                    .category
                    .clone()
                    .ok_or_else(|| bad("category", "`category` is required with `template`"))?;
                if !CATEGORIES.contains(&category.as_str()) {
                    return Err(bad(
                        "category",
                        format!(
                            "`category` must be one of {}, not `{category}`",
                            CATEGORIES.join(", ")
                        ),
                    ));
                }
                (
                    category,
                    Message::Template {
                        name: t.clone(),
                        language,
                        variables: self.variables.clone().unwrap_or_default(),
                    },
                )
            }
            (None, Some(text)) => {
                if self.category.as_deref().is_some_and(|c| c != "service") {
                    return Err(bad("category", "a free-form `text` is category `service`"));
                }
                ("service".to_owned(), Message::Text { body: text.clone() })
            }
        };
        let quiet = match self.quiet_hours.as_deref() {
            None | Some("defer") => QuietHoursMode::Defer,
            Some("skip") => QuietHoursMode::Skip,
            Some(o) => {
                return Err(bad(
                    "quiet_hours",
                    format!("`quiet_hours` must be defer or skip, not `{o}`"),
                ));
            }
        };
        let defaults = RecipientFields {
            journey: label("journey", self.journey)?,
            segment: label("segment", self.segment)?,
            country: label("country", self.country)?,
            ..RecipientFields::default()
        };
        let raw = self
            .recipients
            .ok_or_else(|| bad("recipients", "`recipients` is required"))?;
        if raw.is_empty() || raw.len() > MAX_RECIPIENTS {
            return Err(bad(
                "recipients",
                format!("`recipients` must hold 1 to {MAX_RECIPIENTS} numbers"),
            ));
        }
        let recipients = raw
            .iter()
            .enumerate()
            .map(|(i, v)| recipient(i, v, &defaults))
            .collect::<Result<Vec<_>>>()?;
        let spec = SendSpec {
            campaign_id,
            template: self.template,
            text: self.text,
            language: self.language,
            category,
            experiment_id: self.experiment_id,
            variables: self.variables.unwrap_or_default(),
        };
        Ok(Validated {
            spec,
            message,
            quiet,
            recipients,
        })
    }
}

/// The message a stored request sends to one recipient (their own variables, when
/// they have them).
pub fn message_of(spec: &SendSpec, fields: &RecipientFields) -> Message {
    match (&spec.template, &spec.text) {
        (Some(t), _) => Message::Template {
            name: t.clone(),
            language: spec.language.clone().unwrap_or_default(),
            variables: fields
                .variables
                .clone()
                .unwrap_or_else(|| spec.variables.clone()),
        },
        (None, text) => Message::Text {
            body: text.clone().unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Validated> {
        serde_json::from_value::<SendRequest>(v)
            .map_err(|e| bad("body", e.to_string()))?
            .validate()
    }

    #[test]
    fn recipients_are_numbers_or_objects_with_their_own_fields() {
        let v = parse(json!({
            "campaign_id": "c", "template": "t", "language": "en", "category": "marketing",
            "segment": "vip", "country": "DE",
            "recipients": ["+4915100000001", {"phone": "+4915100000002", "cart_id": "cart-9",
                "step": 2, "journey": "abandoned_cart", "variables": ["Ana"], "country": "AT"}]
        }))
        .expect("valid");
        assert_eq!(v.recipients[0].fields.segment.as_deref(), Some("vip"));
        assert_eq!(v.recipients[0].fields.cart_id, None);
        let r = &v.recipients[1].fields;
        assert_eq!(
            (
                r.cart_id.as_deref(),
                r.step,
                r.journey.as_deref(),
                r.segment.as_deref(),
                r.country.as_deref()
            ),
            (
                Some("cart-9"),
                Some(2),
                Some("abandoned_cart"),
                Some("vip"),
                Some("AT")
            )
        );
        match message_of(&v.spec, r) {
            Message::Template { variables, .. } => assert_eq!(variables, vec!["Ana".to_owned()]),
            Message::Text { .. } => panic!("a template"),
        }
    }

    #[test]
    fn bad_fields_are_named_and_no_clock_can_be_set() {
        let base = json!({"campaign_id": "c", "template": "t", "language": "en",
                          "category": "marketing", "recipients": ["+4915100000001"]});
        let err = |patch: Value| {
            let mut v = base.clone();
            for (k, x) in patch.as_object().expect("object") {
                v[k] = x.clone();
            }
            match parse(v) {
                Err(Error::InvalidSend { field, .. }) => field,
                other => panic!("expected an invalid send, got {other:?}"),
            }
        };
        assert_eq!(err(json!({"now": "2026-04-10T12:00:00Z"})), "body");
        assert_eq!(
            err(json!({"recipients": ["not a number", {"phone": "x"}]})),
            "recipients[0]"
        );
        assert_eq!(
            err(json!({"recipients": [{"phone": "+4915100000001", "step": 0}]})),
            "recipients[0].step"
        );
        assert_eq!(
            err(json!({"recipients": [{"phone": "+4915100000001", "now": 1}]})),
            "recipients[0].now"
        );
        assert_eq!(
            err(json!({"recipients": [{"cart_id": "x"}]})),
            "recipients[0].phone"
        );
        assert_eq!(err(json!({"recipients": [7]})), "recipients[0]");
        assert_eq!(err(json!({"category": "promo"})), "category");
        assert_eq!(err(json!({"quiet_hours": "later"})), "quiet_hours");
        assert_eq!(err(json!({"segment": ""})), "segment");
    }
}
