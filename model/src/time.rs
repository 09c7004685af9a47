//! Timestamps: microseconds since the Unix epoch, UTC, as the lake stores them
//! (`TIMESTAMP(µs)` without a zone; every value is UTC).

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A UTC instant in microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ts(pub i64);

/// Earliest accepted timestamp (2000-01-01T00:00:00Z): anything older is a unit mistake.
const MIN_MICROS: i64 = 946_684_800_000_000;
/// Latest accepted timestamp (2200-01-01T00:00:00Z).
const MAX_MICROS: i64 = 7_258_118_400_000_000;

impl Ts {
    /// The current time.
    pub fn now() -> Ts {
        Ts(Utc::now().timestamp_micros())
    }

    /// From whole epoch seconds.
    pub fn from_secs(secs: i64) -> Option<Ts> {
        secs.checked_mul(1_000_000).map(Ts).filter(Ts::in_range)
    }

    /// From fractional epoch seconds (rounded to the microsecond).
    pub fn from_secs_f64(secs: f64) -> Option<Ts> {
        if !secs.is_finite() {
            return None;
        }
        let micros = (secs * 1_000_000.0).round();
        if micros.abs() > 9.0e18 {
            return None;
        }
        Some(Ts(micros as i64)).filter(Ts::in_range)
    }

    /// Parses RFC 3339 with any offset (`2026-01-02T03:04:05+02:00`, `…Z`).
    pub fn parse_rfc3339(s: &str) -> Option<Ts> {
        let dt = DateTime::parse_from_rfc3339(s.trim()).ok()?;
        Some(Ts(dt.with_timezone(&Utc).timestamp_micros())).filter(Ts::in_range)
    }

    /// Parses epoch seconds written as a decimal string (WhatsApp's `"1698266945"`).
    pub fn parse_epoch_str(s: &str) -> Option<Ts> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        match s.parse::<i64>() {
            Ok(secs) => Ts::from_secs(secs),
            Err(_) => s.parse::<f64>().ok().and_then(Ts::from_secs_f64),
        }
    }

    fn in_range(&self) -> bool {
        (MIN_MICROS..MAX_MICROS).contains(&self.0)
    }

    /// As a chrono UTC datetime.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// The UTC calendar date, the lake's partition key.
    pub fn date(self) -> NaiveDate {
        self.to_datetime().date_naive()
    }

    /// RFC 3339 in UTC with microseconds when needed.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_form() {
        let a = Ts::parse_rfc3339("2026-01-02T03:04:05+02:00").expect("rfc3339");
        let b = Ts::parse_rfc3339("2026-01-02T01:04:05Z").expect("rfc3339 z");
        assert_eq!(a, b);
        assert_eq!(
            Ts::parse_epoch_str("1698266945"),
            Ts::from_secs(1_698_266_945)
        );
        assert_eq!(
            Ts::from_secs_f64(1.5e9 + 0.25),
            Some(Ts(1_500_000_000_250_000))
        );
        assert_eq!(b.date().to_string(), "2026-01-02");
        assert_eq!(b.to_rfc3339(), "2026-01-02T01:04:05Z");
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!(Ts::parse_rfc3339("yesterday"), None);
        assert_eq!(Ts::parse_epoch_str("-5"), None);
        assert_eq!(Ts::parse_epoch_str("<TIMESTAMP>"), None);
        // milliseconds given where seconds are expected land far in the future
        assert_eq!(Ts::from_secs(1_698_266_945_000), None);
        assert_eq!(Ts::from_secs_f64(f64::NAN), None);
    }
}

/// The clock the sender, the consent ledger and the suppression list decide by.
///
/// In production it is the system clock and nothing a request carries can move it. A
/// test (and only a test: the server refuses the setting unless the test clock is
/// explicitly allowed) may run it from another instant: the clock then advances with
/// real time from there, and can be moved again.
#[derive(Debug, Default)]
pub struct Clock {
    /// Microseconds added to the system time; `None` for the system clock.
    offset_us: Option<std::sync::atomic::AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { offset_us: None }
    }

    /// A settable test clock that reads `at` now and advances from there.
    pub fn test_from(at: Ts) -> Clock {
        Clock {
            offset_us: Some(std::sync::atomic::AtomicI64::new(at.0 - Ts::now().0)),
        }
    }

    /// Whether this is a test clock (settable).
    pub fn is_test(&self) -> bool {
        self.offset_us.is_some()
    }

    /// The current time by this clock.
    pub fn now(&self) -> Ts {
        match &self.offset_us {
            None => Ts::now(),
            Some(o) => Ts(Ts::now().0 + o.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }

    /// Moves a test clock so that it reads `at` now; `false` for the system clock,
    /// which cannot be moved.
    pub fn set(&self, at: Ts) -> bool {
        match &self.offset_us {
            None => false,
            Some(o) => {
                o.store(at.0 - Ts::now().0, std::sync::atomic::Ordering::Relaxed);
                true
            }
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn only_a_test_clock_moves() {
        let real = Clock::system();
        assert!(!real.set(Ts(0)));
        assert!((real.now().0 - Ts::now().0).abs() < 60_000_000);
        let at = Ts::parse_rfc3339("2026-04-10T12:00:00Z").expect("ts");
        let t = Clock::test_from(at);
        assert!(t.is_test());
        assert!((t.now().0 - at.0).abs() < 60_000_000);
        let later = Ts(at.0 + 86_400_000_000);
        assert!(t.set(later));
        assert!(t.now() >= later && t.now().0 - later.0 < 60_000_000);
    }
}
