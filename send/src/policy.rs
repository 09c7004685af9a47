//! The send policy (docs/api.md, `POST /v1/sends`): for one recipient, in order,
//! consent for the template's category → suppression list → holdout → frequency cap →
//! quiet hours in the recipient's time zone → 24-hour service window (free-form
//! messages only). A pure function of its inputs, so every rule is testable with an
//! injected clock.
//!
//! Choices where the spec leaves room (ARCHITECTURE.md "Decisions"):
//! - `service` (free-form) messages answer a customer inside their service window, so
//!   they skip the consent check and the marketing-only rules.
//! - The suppression reasons `blocked`, `non_engager`, `recent_purchaser` and the
//!   frequency cap are about marketing and apply to `marketing` sends only;
//!   `opted_out` comes from the consent check of the category's scope;
//!   `undeliverable` applies to every category.
//! - Quiet hours apply to `marketing` and `utility`; an `authentication` code is
//!   asked for by the user and a service reply answers them.

use crate::ledger::State;
use chatlake_model::Ts;
use chatlake_model::experiment::{Experiment, HOLDOUT_ARM};
use chrono::{NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// What to do with one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send now.
    Send,
    /// Inside quiet hours with `defer`: send at this time.
    Defer(Ts),
    /// Do not send; the `send_skips` reason.
    Skip(&'static str),
}

/// `quiet_hours` of a send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuietHoursMode {
    Defer,
    Skip,
}

/// Everything the policy knows about one recipient.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub now: Ts,
    /// `marketing`, `utility`, `authentication` or `service`.
    pub category: &'a str,
    /// The ledger's state for the category's scope.
    pub consent: State,
    /// Suppression reasons in effect now.
    pub suppressions: &'a [&'a str],
    /// Assigned to a holdout arm (of the named experiment or a persistent one).
    pub holdout: bool,
    /// Marketing sends this process made to the recipient in the trailing cap window
    /// (the lake's count is in `suppressions` as `frequency_cap`).
    pub recent_marketing_sends: u64,
    /// The recipient's time zone.
    pub zone: Tz,
    /// Their latest inbound message (for the service window).
    pub last_inbound: Option<Ts>,
    pub quiet_hours: QuietHoursMode,
}

/// The policy's settings.
#[derive(Debug, Clone)]
pub struct Policy {
    pub quiet_start: NaiveTime,
    pub quiet_end: NaiveTime,
    /// The frequency cap: at most this many marketing sends per recipient…
    pub frequency_cap: u64,
    /// …in this trailing window. One setting (`[suppressions] frequency_cap` and
    /// `frequency_window_s`) for the suppression list and the sender's own count.
    pub frequency_window_s: u64,
    pub service_window_s: i64,
    /// Zone of a number whose calling code has none.
    pub default_zone: Tz,
    /// Zones by calling code, before the built-in table.
    pub zone_overrides: Vec<(String, Tz)>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            quiet_start: NaiveTime::from_hms_opt(21, 0, 0).unwrap_or_default(),
            quiet_end: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
            frequency_cap: 4,
            frequency_window_s: 7 * 86_400,
            service_window_s: 86_400,
            default_zone: chrono_tz::UTC,
            zone_overrides: Vec::new(),
        }
    }
}

/// Suppression reasons that stop a marketing send, in the order they are reported.
const MARKETING_SUPPRESSIONS: &[&str] = &[
    "opted_out",
    "blocked",
    "undeliverable",
    "non_engager",
    "recent_purchaser",
];

/// The outcome of [`Policy::plan`] for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub decision: Decision,
    /// The experiments the recipient was assigned in, with the arm: `(experiment id,
    /// arm)`, to record in `assignments`. Empty when consent or suppression stopped them.
    pub assignments: Vec<(String, String)>,
    /// Their arm in the experiment the request names, if any.
    pub arm: Option<String>,
}

impl Policy {
    /// The whole decision for one recipient, facts in, [`Planned`] out: consent and
    /// suppression first; a recipient who passes is assigned in the experiment the
    /// request names and in every running persistent one (marketing sends only; the
    /// caller passes them), and a holdout arm stops them; then the cap, quiet hours and
    /// the service window ([`Policy::decide`]).
    pub fn plan(
        &self,
        facts: &Facts,
        phone_hash: &str,
        named: Option<&Experiment>,
        persistent: &[Experiment],
    ) -> Planned {
        if let Some(reason) = self.eligibility(facts) {
            return Planned {
                decision: Decision::Skip(reason),
                assignments: Vec::new(),
                arm: None,
            };
        }
        let mut f = facts.clone();
        let mut assignments = Vec::new();
        let mut arm = None;
        for e in named.into_iter().chain(
            persistent
                .iter()
                .filter(|p| named.is_none_or(|n| n.id != p.id)),
        ) {
            let a = e.assign(phone_hash).to_owned();
            if a == HOLDOUT_ARM {
                f.holdout = true;
            }
            if named.is_some_and(|n| n.id == e.id) {
                arm = Some(a.clone());
            }
            assignments.push((e.id.clone(), a));
        }
        Planned {
            decision: self.decide(&f),
            assignments,
            arm,
        }
    }

    /// The recipient's zone: an override of their calling code, else the built-in
    /// table, else the default.
    pub fn zone(&self, e164: &str) -> Tz {
        let digits = e164.trim_start_matches('+');
        for len in [3, 2, 1] {
            if let Some(prefix) = digits.get(..len)
                && let Some((_, z)) = self.zone_overrides.iter().find(|(c, _)| c == prefix)
            {
                return *z;
            }
        }
        zone_of(e164, self.default_zone)
    }

    /// The first two rules alone — consent, then the suppression list — as the skip
    /// reason, or `None` when the recipient could be messaged. docs/experiments.md assigns
    /// only such recipients, so the sender assigns between this and [`Policy::decide`].
    pub fn eligibility(&self, f: &Facts) -> Option<&'static str> {
        if f.category != "service" {
            match f.consent {
                State::OptedOut => return Some("opted_out"),
                State::None => return Some("no_consent"),
                State::OptedIn => {}
            }
        }
        if f.category == "marketing" {
            MARKETING_SUPPRESSIONS
                .iter()
                .find(|r| f.suppressions.contains(r))
                .copied()
        } else {
            f.suppressions
                .contains(&"undeliverable")
                .then_some("undeliverable")
        }
    }

    /// The decision for one recipient: every rule in order.
    pub fn decide(&self, f: &Facts) -> Decision {
        if let Some(reason) = self.eligibility(f) {
            return Decision::Skip(reason);
        }
        let marketing = f.category == "marketing";
        if f.holdout {
            return Decision::Skip("holdout");
        }
        if marketing
            && (f.suppressions.contains(&"frequency_cap")
                || f.recent_marketing_sends >= self.frequency_cap)
        {
            return Decision::Skip("frequency_cap");
        }
        if (marketing || f.category == "utility")
            && let Some(end) = self.quiet_until(f.now, f.zone)
        {
            return match f.quiet_hours {
                QuietHoursMode::Skip => Decision::Skip("quiet_hours"),
                QuietHoursMode::Defer => Decision::Defer(end),
            };
        }
        if f.category == "service" {
            let inside = f
                .last_inbound
                .is_some_and(|t| t <= f.now && f.now.0 - t.0 < self.service_window_s * 1_000_000);
            if !inside {
                return Decision::Skip("outside_service_window");
            }
        }
        Decision::Send
    }

    /// When `now` is inside quiet hours in `zone`, the instant they end.
    pub fn quiet_until(&self, now: Ts, zone: Tz) -> Option<Ts> {
        let local = zone.from_utc_datetime(&now.to_datetime().naive_utc());
        let t = local.time().with_nanosecond(0).unwrap_or(local.time());
        let (start, end) = (self.quiet_start, self.quiet_end);
        let inside = if start > end {
            t >= start || t < end
        } else {
            t >= start && t < end
        };
        if !inside {
            return None;
        }
        let mut day = local.date_naive();
        if start > end && t >= start {
            day = day.succ_opt()?;
        }
        // A DST gap at the end time: take the earliest valid instant after it.
        let naive = day.and_time(end);
        let at = zone.from_local_datetime(&naive).earliest().or_else(|| {
            zone.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })?;
        Some(Ts(at.timestamp_micros()))
    }
}

/// Country calling codes and a representative time zone (the most populous zone of
/// the country); a number whose code is not listed gets the configured default.
const ZONES: &[(&str, &str)] = &[
    ("1", "America/New_York"),
    ("7", "Europe/Moscow"),
    ("20", "Africa/Cairo"),
    ("27", "Africa/Johannesburg"),
    ("30", "Europe/Athens"),
    ("31", "Europe/Amsterdam"),
    ("32", "Europe/Brussels"),
    ("33", "Europe/Paris"),
    ("34", "Europe/Madrid"),
    ("36", "Europe/Budapest"),
    ("39", "Europe/Rome"),
    ("40", "Europe/Bucharest"),
    ("41", "Europe/Zurich"),
    ("43", "Europe/Vienna"),
    ("44", "Europe/London"),
    ("45", "Europe/Copenhagen"),
    ("46", "Europe/Stockholm"),
    ("47", "Europe/Oslo"),
    ("48", "Europe/Warsaw"),
    ("49", "Europe/Berlin"),
    ("51", "America/Lima"),
    ("52", "America/Mexico_City"),
    ("54", "America/Argentina/Buenos_Aires"),
    ("55", "America/Sao_Paulo"),
    ("56", "America/Santiago"),
    ("57", "America/Bogota"),
    ("60", "Asia/Kuala_Lumpur"),
    ("61", "Australia/Sydney"),
    ("62", "Asia/Jakarta"),
    ("63", "Asia/Manila"),
    ("64", "Pacific/Auckland"),
    ("65", "Asia/Singapore"),
    ("66", "Asia/Bangkok"),
    ("81", "Asia/Tokyo"),
    ("82", "Asia/Seoul"),
    ("84", "Asia/Ho_Chi_Minh"),
    ("86", "Asia/Shanghai"),
    ("90", "Europe/Istanbul"),
    ("91", "Asia/Kolkata"),
    ("92", "Asia/Karachi"),
    ("234", "Africa/Lagos"),
    ("254", "Africa/Nairobi"),
    ("351", "Europe/Lisbon"),
    ("353", "Europe/Dublin"),
    ("358", "Europe/Helsinki"),
    ("380", "Europe/Kyiv"),
    ("880", "Asia/Dhaka"),
    ("966", "Asia/Riyadh"),
    ("971", "Asia/Dubai"),
    ("972", "Asia/Jerusalem"),
];

/// The time zone of an E.164 number by its country calling code (longest match).
pub fn zone_of(e164: &str, default: Tz) -> Tz {
    let digits = e164.trim_start_matches('+');
    for len in [3, 2, 1] {
        if let Some(prefix) = digits.get(..len)
            && let Some((_, z)) = ZONES.iter().find(|(c, _)| *c == prefix)
        {
            return z.parse().unwrap_or(default);
        }
    }
    default
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Ts {
        Ts::parse_rfc3339(s).expect("ts")
    }

    fn facts<'a>(now: &str, category: &'a str, suppressions: &'a [&'a str]) -> Facts<'a> {
        Facts {
            now: at(now),
            category,
            consent: State::OptedIn,
            suppressions,
            holdout: false,
            recent_marketing_sends: 0,
            zone: chrono_tz::Europe::Berlin,
            last_inbound: None,
            quiet_hours: QuietHoursMode::Defer,
        }
    }

    const NOON: &str = "2026-04-10T10:00:00Z"; // 12:00 in Berlin (CEST)

    #[test]
    fn each_rule_in_order() {
        let p = Policy::default();
        assert_eq!(p.decide(&facts(NOON, "marketing", &[])), Decision::Send);
        let mut f = facts(NOON, "marketing", &[]);
        f.consent = State::None;
        assert_eq!(p.decide(&f), Decision::Skip("no_consent"));
        f.consent = State::OptedOut;
        assert_eq!(p.decide(&f), Decision::Skip("opted_out"));
        for r in [
            "blocked",
            "undeliverable",
            "non_engager",
            "recent_purchaser",
        ] {
            assert_eq!(p.decide(&facts(NOON, "marketing", &[r])), Decision::Skip(r));
        }
        assert_eq!(
            p.eligibility(&facts(NOON, "marketing", &["frequency_cap"])),
            None,
            "the cap is not an eligibility rule"
        );
        assert_eq!(
            p.eligibility(&facts(NOON, "marketing", &["non_engager"])),
            Some("non_engager")
        );
        // Consent comes before suppression; suppression before holdout.
        let mut f = facts(NOON, "marketing", &["blocked"]);
        f.consent = State::None;
        assert_eq!(p.decide(&f), Decision::Skip("no_consent"));
        let mut f = facts(NOON, "marketing", &["blocked"]);
        f.holdout = true;
        assert_eq!(p.decide(&f), Decision::Skip("blocked"));
        let mut f = facts(NOON, "marketing", &["frequency_cap"]);
        f.holdout = true;
        assert_eq!(p.decide(&f), Decision::Skip("holdout"));
        assert_eq!(
            p.decide(&facts(NOON, "marketing", &["frequency_cap"])),
            Decision::Skip("frequency_cap")
        );
        let mut f = facts(NOON, "marketing", &[]);
        f.recent_marketing_sends = 4;
        assert_eq!(p.decide(&f), Decision::Skip("frequency_cap"));
        f.recent_marketing_sends = 3;
        assert_eq!(p.decide(&f), Decision::Send);
        // Utility: marketing-only reasons do not apply, undeliverable does.
        assert_eq!(
            p.decide(&facts(NOON, "utility", &["non_engager", "frequency_cap"])),
            Decision::Send
        );
        assert_eq!(
            p.decide(&facts(NOON, "utility", &["undeliverable"])),
            Decision::Skip("undeliverable")
        );
    }

    fn experiment(id: &str, persistent: bool, second_arm: &str) -> Experiment {
        let spec: chatlake_model::experiment::ExperimentSpec =
            serde_json::from_value(serde_json::json!({
                "id": id, "salt": id, "persistent": persistent,
                "arms": [{"name": "control", "weight": 50}, {"name": second_arm, "weight": 50}]
            }))
            .expect("spec");
        spec.validate(Ts(0)).expect("valid")
    }

    #[test]
    fn plan_assigns_only_the_eligible_and_a_holdout_arm_stops_them() {
        let p = Policy::default();
        let named = experiment("named", false, "variant");
        let global = experiment("global", true, "holdout");
        let (held, free) = {
            let hashes: Vec<String> = (0..100).map(|i| format!("h{i}")).collect();
            let held = hashes
                .iter()
                .find(|h| global.assign(h) == "holdout")
                .cloned();
            let free = hashes
                .iter()
                .find(|h| global.assign(h) == "control")
                .cloned();
            (held.expect("one held"), free.expect("one free"))
        };
        // Suppressed: no assignment at all.
        let f = facts(NOON, "marketing", &["blocked"]);
        let out = p.plan(&f, &held, Some(&named), std::slice::from_ref(&global));
        assert_eq!(out.decision, Decision::Skip("blocked"));
        assert!(out.assignments.is_empty());
        // Eligible: assigned in both; the persistent holdout holds them back.
        let f = facts(NOON, "marketing", &[]);
        let out = p.plan(&f, &held, Some(&named), std::slice::from_ref(&global));
        assert_eq!(out.decision, Decision::Skip("holdout"));
        assert_eq!(
            out.assignments,
            vec![
                ("named".to_owned(), named.assign(&held).to_owned()),
                ("global".to_owned(), "holdout".to_owned())
            ]
        );
        assert_eq!(out.arm.as_deref(), Some(named.assign(&held)));
        let out = p.plan(&f, &free, Some(&named), std::slice::from_ref(&global));
        assert_eq!(out.decision, Decision::Send);
        // Named twice (named and persistent): assigned once.
        let out = p.plan(&f, &free, Some(&global), std::slice::from_ref(&global));
        assert_eq!(out.assignments.len(), 1);
        // The cap comes from the one setting.
        let capped = Policy {
            frequency_cap: 2,
            ..Policy::default()
        };
        let mut f = facts(NOON, "marketing", &[]);
        f.recent_marketing_sends = 2;
        assert_eq!(
            capped.plan(&f, "h2", None, &[]).decision,
            Decision::Skip("frequency_cap")
        );
        f.recent_marketing_sends = 1;
        assert_eq!(capped.plan(&f, "h2", None, &[]).decision, Decision::Send);
    }

    #[test]
    fn quiet_hours_in_the_recipients_zone() {
        let p = Policy::default();
        // 20:59 Berlin: not quiet; 21:00 Berlin: quiet until 09:00 the next morning.
        assert_eq!(
            p.decide(&facts("2026-04-10T18:59:00Z", "marketing", &[])),
            Decision::Send
        );
        assert_eq!(
            p.decide(&facts("2026-04-10T19:00:00Z", "marketing", &[])),
            Decision::Defer(at("2026-04-11T07:00:00Z"))
        );
        // 08:59 Berlin: quiet until 09:00 the same day; 09:00: not quiet.
        assert_eq!(
            p.decide(&facts("2026-04-10T06:59:00Z", "marketing", &[])),
            Decision::Defer(at("2026-04-10T07:00:00Z"))
        );
        assert_eq!(
            p.decide(&facts("2026-04-10T07:00:00Z", "marketing", &[])),
            Decision::Send
        );
        let mut f = facts("2026-04-10T19:00:00Z", "marketing", &[]);
        f.quiet_hours = QuietHoursMode::Skip;
        assert_eq!(p.decide(&f), Decision::Skip("quiet_hours"));
        // The same instant is daytime in São Paulo (16:00).
        let mut f = facts("2026-04-10T19:00:00Z", "marketing", &[]);
        f.zone = zone_of("+5511987654321", chrono_tz::UTC);
        assert_eq!(p.decide(&f), Decision::Send);
        // Authentication codes are not held back.
        assert_eq!(
            p.decide(&facts("2026-04-10T19:00:00Z", "authentication", &[])),
            Decision::Send
        );
        // Across the DST switch (Berlin, 2026-03-29 02:00 → 03:00): 09:00 CEST = 07:00Z.
        assert_eq!(
            p.decide(&facts("2026-03-28T22:00:00Z", "marketing", &[])),
            Decision::Defer(at("2026-03-29T07:00:00Z"))
        );
    }

    #[test]
    fn service_window_for_free_form_messages() {
        let p = Policy::default();
        let mut f = facts("2026-04-10T19:30:00Z", "service", &["non_engager"]);
        f.consent = State::None;
        assert_eq!(p.decide(&f), Decision::Skip("outside_service_window"));
        f.last_inbound = Some(at("2026-04-09T19:30:01Z"));
        assert_eq!(p.decide(&f), Decision::Send);
        f.last_inbound = Some(at("2026-04-09T19:30:00Z"));
        assert_eq!(p.decide(&f), Decision::Skip("outside_service_window"));
    }

    #[test]
    fn zones_by_country_code() {
        assert_eq!(
            zone_of("+4915112345678", chrono_tz::UTC),
            chrono_tz::Europe::Berlin
        );
        assert_eq!(
            zone_of("+97150000000", chrono_tz::UTC),
            chrono_tz::Asia::Dubai
        );
        assert_eq!(
            zone_of("+16505551234", chrono_tz::UTC),
            chrono_tz::America::New_York
        );
        assert_eq!(zone_of("+999123", chrono_tz::UTC), chrono_tz::UTC);
        let p = crate::SendOptions {
            country_time_zones: [("1".to_owned(), "America/Los_Angeles".to_owned())].into(),
            default_time_zone: "Asia/Tokyo".to_owned(),
            ..crate::SendOptions::default()
        }
        .policy(4, 604_800)
        .expect("valid");
        assert_eq!(p.zone("+16505551234"), chrono_tz::America::Los_Angeles);
        assert_eq!(p.zone("+999123"), chrono_tz::Asia::Tokyo);
        assert_eq!(p.zone("+4915112345678"), chrono_tz::Europe::Berlin);
        let bad = crate::SendOptions {
            quiet_hours_start: "9pm".to_owned(),
            ..crate::SendOptions::default()
        };
        assert!(
            bad.policy(4, 604_800)
                .expect_err("bad")
                .contains("quiet_hours_start")
        );
    }
}
