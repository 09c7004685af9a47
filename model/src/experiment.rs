//! Experiments: their definition (docs/api.md, `POST /v1/experiments`) and the
//! deterministic assignment of docs/experiments.md, which any system can reproduce:
//!
//! bucket = the first 8 bytes of SHA-256(salt + ":" + phone_hash), big-endian, mod 10 000;
//! arm i owns the buckets [⌊10 000·W(i−1)/W⌋, ⌊10 000·W(i)/W⌋), where W(i) is the sum of
//! the first i weights and W their total.

use crate::time::Ts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Number of assignment buckets.
pub const BUCKETS: u64 = 10_000;
/// The arm that is never messaged.
pub const HOLDOUT_ARM: &str = "holdout";
/// Analysis window when a definition gives none.
pub const DEFAULT_WINDOW_DAYS: u32 = 7;
/// Longest analysis window accepted.
pub const MAX_WINDOW_DAYS: u32 = 365;

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    pub name: String,
    /// Relative weight (> 0); the arm's share is weight / sum of weights.
    pub weight: f64,
}

/// An experiment definition as `POST /v1/experiments` takes it, with the defaults
/// filled in by [`ExperimentSpec::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub id: String,
    pub salt: String,
    pub arms: Vec<Arm>,
    /// Outcomes count in [assigned_at, assigned_at + window_days).
    pub window_days: u32,
    /// The arm every other arm is compared with.
    pub control: String,
    /// ISO currency of `revenue`; `None`: the currency of most of the units' orders in
    /// their windows, chosen when results are computed.
    pub currency: Option<String>,
    /// When the experiment stops running (a persistent holdout stops suppressing).
    pub ends_at: Option<Ts>,
    /// A persistent holdout (global control): every marketing send assigns to it.
    pub persistent: bool,
    /// When it was defined; it runs from then.
    pub created_at: Ts,
    /// Optional free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The body of `POST /v1/experiments`, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub id: Option<String>,
    pub salt: Option<String>,
    pub arms: Option<Vec<Arm>>,
    pub window_days: Option<u32>,
    pub control: Option<String>,
    pub currency: Option<String>,
    /// RFC 3339.
    pub ends_at: Option<String>,
    pub persistent: Option<bool>,
    pub description: Option<String>,
}

/// Why a definition was refused: the field and a sentence.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("experiment field `{field}`: {message}")]
pub struct InvalidExperiment {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidExperiment {
    InvalidExperiment {
        field,
        message: message.into(),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl ExperimentSpec {
    /// Checks every field and fills the defaults (`window_days` 7, `control` the arm
    /// named `control` else the first arm, `persistent` false).
    pub fn validate(self, now: Ts) -> Result<Experiment, InvalidExperiment> {
        let id = self.id.ok_or_else(|| invalid("id", "is required"))?;
        if !is_name(&id) {
            return Err(invalid(
                "id",
                "must be 1–128 characters of letters, digits, `_`, `-`, `.` or `:`",
            ));
        }
        let salt = self.salt.ok_or_else(|| invalid("salt", "is required"))?;
        if salt.is_empty() || salt.len() > 256 {
            return Err(invalid("salt", "must be 1–256 characters"));
        }
        let arms = self.arms.ok_or_else(|| invalid("arms", "is required"))?;
        if arms.len() < 2 {
            return Err(invalid("arms", "needs at least two arms"));
        }
        if arms.len() > 100 {
            return Err(invalid("arms", "takes at most 100 arms"));
        }
        for (i, a) in arms.iter().enumerate() {
            if !is_name(&a.name) {
                return Err(invalid(
                    "arms",
                    format!(
                        "arm {i}: the name must be 1–128 characters of letters, digits, `_`, `-`, `.` or `:`"
                    ),
                ));
            }
            if !(a.weight.is_finite() && a.weight > 0.0) {
                return Err(invalid(
                    "arms",
                    format!("arm `{}`: the weight must be a number above 0", a.name),
                ));
            }
            if arms[..i].iter().any(|b| b.name == a.name) {
                return Err(invalid("arms", format!("arm `{}` appears twice", a.name)));
            }
        }
        let buckets = bucket_bounds(&arms);
        if let Some(i) = (0..arms.len()).find(|&i| buckets[i] == buckets[i + 1]) {
            return Err(invalid(
                "arms",
                format!(
                    "arm `{}` is too small to own any of the {BUCKETS} buckets",
                    arms[i].name
                ),
            ));
        }
        let control = match self.control {
            Some(c) => {
                if !arms.iter().any(|a| a.name == c) {
                    let names: Vec<&str> = arms.iter().map(|a| a.name.as_str()).collect();
                    return Err(invalid(
                        "control",
                        format!("`{c}` is not an arm; the arms are {}", names.join(", ")),
                    ));
                }
                c
            }
            None => arms
                .iter()
                .find(|a| a.name == "control")
                .unwrap_or(&arms[0])
                .name
                .clone(),
        };
        let window_days = self.window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
        if !(1..=MAX_WINDOW_DAYS).contains(&window_days) {
            return Err(invalid(
                "window_days",
                format!("must be between 1 and {MAX_WINDOW_DAYS}"),
            ));
        }
        let currency = match self.currency {
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(c.to_ascii_uppercase())
            }
            Some(c) => {
                return Err(invalid(
                    "currency",
                    format!("`{c}` is not a three-letter ISO 4217 code"),
                ));
            }
            None => None,
        };
        let ends_at = match self.ends_at {
            Some(s) => Some(Ts::parse_rfc3339(&s).ok_or_else(|| {
                invalid("ends_at", format!("`{s}` is not an RFC 3339 timestamp"))
            })?),
            None => None,
        };
        Ok(Experiment {
            id,
            salt,
            arms,
            window_days,
            control,
            currency,
            ends_at,
            persistent: self.persistent.unwrap_or(false),
            created_at: now,
            description: self.description,
        })
    }
}

/// The assignment bucket of a unit: the first 8 bytes of SHA-256(salt ":" phone_hash),
/// big-endian, mod 10 000.
pub fn bucket(salt: &str, phone_hash: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(phone_hash.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// The upper bucket bound of each arm in order: arm i owns `[b(i-1), b(i))` with
/// b(i) = ⌊10 000·W(i)/W⌋ (exact integer arithmetic when the weights are whole numbers),
/// the last one always 10 000. Allocation-free: the sender assigns per recipient.
fn upper_bounds(arms: &[Arm]) -> impl Iterator<Item = u64> + '_ {
    let whole = arms
        .iter()
        .all(|a| a.weight.fract() == 0.0 && a.weight <= 1e12);
    let total_whole: u128 = arms.iter().map(|a| a.weight as u128).sum::<u128>().max(1);
    let total: f64 = arms.iter().map(|a| a.weight).sum();
    let last = arms.len().saturating_sub(1);
    let (mut acc_whole, mut acc) = (0u128, 0.0f64);
    arms.iter().enumerate().map(move |(i, a)| {
        if i == last {
            return BUCKETS;
        }
        if whole {
            acc_whole += a.weight as u128;
            ((u128::from(BUCKETS) * acc_whole) / total_whole) as u64
        } else {
            acc += a.weight;
            ((BUCKETS as f64 * acc / total).floor() as u64).min(BUCKETS)
        }
    })
}

/// The bucket boundaries `[0, b(1), …, 10 000]`: arm i owns `[b[i], b[i+1])`.
pub fn bucket_bounds(arms: &[Arm]) -> Vec<u64> {
    std::iter::once(0).chain(upper_bounds(arms)).collect()
}

impl Experiment {
    /// The arm a unit lands in (a pure function of salt and phone hash).
    pub fn assign(&self, phone_hash: &str) -> &str {
        let b = bucket(&self.salt, phone_hash);
        let i = upper_bounds(&self.arms)
            .position(|upper| b < upper)
            .unwrap_or(self.arms.len().saturating_sub(1));
        self.arms.get(i).map_or("", |a| a.name.as_str())
    }

    /// Whether it runs at `now` (from its creation until its optional `ends_at`).
    pub fn is_running(&self, now: Ts) -> bool {
        now >= self.created_at && self.ends_at.is_none_or(|e| now < e)
    }

    /// `running` or `ended`.
    pub fn status(&self, now: Ts) -> &'static str {
        if self.is_running(now) {
            "running"
        } else {
            "ended"
        }
    }

    /// Whether its control arm is the holdout (its comparisons then report
    /// incremental conversions and revenue).
    pub fn control_is_holdout(&self) -> bool {
        self.control == HOLDOUT_ARM
    }

    /// The weights by arm name.
    pub fn weights(&self) -> Vec<(String, f64)> {
        self.arms
            .iter()
            .map(|a| (a.name.clone(), a.weight))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arms: &[(&str, f64)]) -> ExperimentSpec {
        ExperimentSpec {
            id: Some("exp-42".into()),
            salt: Some("s1".into()),
            arms: Some(
                arms.iter()
                    .map(|(n, w)| Arm {
                        name: (*n).into(),
                        weight: *w,
                    })
                    .collect(),
            ),
            window_days: None,
            control: None,
            currency: None,
            ends_at: None,
            persistent: None,
            description: None,
        }
    }

    /// The definition restated on the digest's bytes.
    #[test]
    fn bucket_is_sha256_prefix_mod_10000() {
        let digest = Sha256::digest(b"s1:abc");
        let v = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        assert_eq!(bucket("s1", "abc"), v % 10_000);
    }

    #[test]
    fn known_inputs_land_in_known_buckets() {
        // Values printed by `python3 -c "import hashlib;
        // print(int.from_bytes(hashlib.sha256(b'<salt>:<hash>').digest()[:8],'big') % 10000)"`.
        assert_eq!(bucket("s1", "abc"), 3495);
        assert_eq!(bucket("exp-salt", "0000"), 8900);
        assert_eq!(bucket("", ""), 4368);
    }

    #[test]
    fn bounds_follow_the_floor_rule() {
        let e = spec(&[("control", 45.0), ("variant_b", 45.0), ("holdout", 10.0)])
            .validate(Ts(0))
            .expect("valid");
        assert_eq!(bucket_bounds(&e.arms), vec![0, 4500, 9000, 10_000]);
        let thirds = spec(&[("a", 1.0), ("b", 1.0), ("c", 1.0)])
            .validate(Ts(0))
            .expect("valid");
        assert_eq!(bucket_bounds(&thirds.arms), vec![0, 3333, 6666, 10_000]);
        assert_eq!(e.control, "control");
    }

    #[test]
    fn assignment_matches_the_ranges_and_the_weights() {
        let e = spec(&[("control", 45.0), ("variant_b", 45.0), ("holdout", 10.0)])
            .validate(Ts(0))
            .expect("valid");
        let mut counts = std::collections::HashMap::new();
        for i in 0..20_000 {
            let ph = format!("{i:064x}");
            let b = bucket(&e.salt, &ph);
            let arm = e.assign(&ph);
            let expect = if b < 4500 {
                "control"
            } else if b < 9000 {
                "variant_b"
            } else {
                "holdout"
            };
            assert_eq!(arm, expect);
            *counts.entry(arm.to_owned()).or_insert(0u32) += 1;
        }
        let h = counts["holdout"];
        assert!((1700..2300).contains(&h), "holdout got {h} of 20000");
    }

    #[test]
    fn bad_definitions_name_their_field() {
        let one = spec(&[("a", 1.0)]).validate(Ts(0)).expect_err("one arm");
        assert_eq!(one.field, "arms");
        let dup = spec(&[("a", 1.0), ("a", 1.0)])
            .validate(Ts(0))
            .expect_err("dup");
        assert!(dup.message.contains("twice"));
        let zero = spec(&[("a", 1.0), ("b", 0.0)])
            .validate(Ts(0))
            .expect_err("zero weight");
        assert_eq!(zero.field, "arms");
        let tiny = spec(&[("a", 1.0), ("b", 1e9)])
            .validate(Ts(0))
            .expect_err("tiny arm");
        assert!(tiny.message.contains("too small"));
        let mut s = spec(&[("a", 1.0), ("b", 1.0)]);
        s.control = Some("c".into());
        assert_eq!(s.validate(Ts(0)).expect_err("control").field, "control");
        let mut s = spec(&[("a", 1.0), ("b", 1.0)]);
        s.currency = Some("EURO".into());
        assert_eq!(s.validate(Ts(0)).expect_err("currency").field, "currency");
        let mut s = spec(&[("a", 1.0), ("b", 1.0)]);
        s.window_days = Some(0);
        assert_eq!(s.validate(Ts(0)).expect_err("window").field, "window_days");
        let mut s = spec(&[("a", 1.0), ("b", 1.0)]);
        s.ends_at = Some("tomorrow".into());
        assert_eq!(s.validate(Ts(0)).expect_err("ends").field, "ends_at");
    }

    #[test]
    fn running_until_ends_at() {
        let mut s = spec(&[("a", 1.0), ("b", 1.0)]);
        s.ends_at = Some("2026-01-02T00:00:00Z".into());
        let e = s.validate(Ts(0)).expect("valid");
        let end = Ts::parse_rfc3339("2026-01-02T00:00:00Z").expect("ts");
        assert!(e.is_running(Ts(end.0 - 1)));
        assert!(!e.is_running(end));
        assert_eq!(e.status(end), "ended");
    }
}
