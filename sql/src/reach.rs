//! What a `/v1/metrics` request with `from`/`to` reads of each lake table: every row
//! that can change a figure of a unit whose cohort time is in the range, and as little
//! else as the definitions allow — so that a bounded request gives exactly the figures
//! the whole lake gives for its days, and a day's request does not process the whole
//! lake.
//!
//! Each rule follows from a unit definition of `sql/units/` (the windows are the `[sql]`
//! settings; `date` is a row's UTC partition day, that of its `ts`):
//!
//! - **Cohort.** Sends, and cases' `opened` events, in the range's days widened by one
//!   day each side (`from`/`to` are dates on the `time_zone`'s wall clock, never a full
//!   day away from UTC).
//! - **Bounded by a window.** Sends and inbound messages up to the reply window after
//!   the range (an inbound credits the latest message of the 24 h before it, so a
//!   later send can take a reply from a message in range); sends and orders up to the
//!   view window after (an order goes to the latest delivered message of the day before
//!   it); orders up to the cart window after; consent and inbound `stop`s up to the
//!   opt-out window after; clicks from the click window before the orders that can be
//!   attributed to a message in range (the latest click wins).
//! - **No time bound, reached by key.** Every status of a reached message (by
//!   `message_id`); every click naming a message in range, and the orders of the same
//!   phone within the click window after such a click; every order whose `utm_content`
//!   names a message in range (at or after the range's first day: a message is never
//!   credited with an earlier order); every inbound message quoting a message in range;
//!   every send an order's `utm_content`, a click or a quote names (is it a send, and
//!   when?); every reminder of a cart that has one in range; every cart a reminder in
//!   range names; every event of a case opened in range.
//! - **Every copy of a reached key.** The views keep one copy per key (the first, or an
//!   order's latest version), and copies of one key need not share a day (a checkout
//!   updated the next day, a client posting an event twice with different times), so a
//!   table is read as every row whose dedupe key some reached row has: the view then
//!   picks the same copy as over the whole lake.
//!
//! The key sets are computed once into memory (they are small), each table is then
//! registered under its own name as a view of the reached rows, and the views and
//! units above read them unchanged. Tables no requested unit reads are left whole (so
//! read by nothing). A unit these rules do not know makes the request read the whole
//! lake: correct, only slower — give it rules here.
//!
//! What stays unbounded costs a scan of one or two key columns of the whole table
//! (statuses' `message_id`, orders' `utm_content`, …); the rows that match are few,
//! and only they go through the dedupes and joins.

use crate::options::SqlOptions;
use chrono::NaiveDate;

const DAY_S: u64 = 86_400;

/// The units whose reach is known.
pub(crate) const KNOWN_UNITS: [&str; 4] = [
    "message_units",
    "attributed_orders",
    "cart_units",
    "case_units",
];

/// One step of a request's reach, in order: a relation to compute into memory (`keep`)
/// or to register as a view, under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub name: String,
    pub sql: String,
    pub keep: bool,
}

/// The raw listing table of `table` in a bounded session.
pub(crate) fn raw(table: &str) -> String {
    format!("__lake_{table}")
}

/// Which units a request computes.
#[derive(Debug, Clone, Copy, Default)]
struct Units {
    messages: bool,
    attributed: bool,
    carts: bool,
    cases: bool,
}

struct Plan<'a> {
    /// The first and last UTC day of the cohort (`None`: unbounded).
    lo: Option<NaiveDate>,
    hi: Option<NaiveDate>,
    /// The partition day of a row: `date`, or `CAST(ts AS DATE)` for tables without
    /// partitions (the golden tests' in-memory tables).
    date: &'a str,
    steps: Vec<Step>,
}

/// Whole days that cover `seconds` (a row within `seconds` after one of day `d` is on a
/// day up to `d + days(seconds)`).
fn days(seconds: u64) -> u64 {
    seconds.div_ceil(DAY_S)
}

impl Plan<'_> {
    /// The rows of the cohort's days widened by `before` days before and `after` days
    /// after (`None`: no upper bound).
    fn dates(&self, before: u64, after: Option<u64>) -> String {
        let mut parts = Vec::new();
        if let Some(lo) = self.lo {
            let d = lo
                .checked_sub_days(chrono::Days::new(before))
                .unwrap_or(NaiveDate::MIN);
            parts.push(format!("{} >= DATE '{d}'", self.date));
        }
        if let (Some(hi), Some(after)) = (self.hi, after) {
            let d = hi
                .checked_add_days(chrono::Days::new(after))
                .unwrap_or(NaiveDate::MAX);
            parts.push(format!("{} <= DATE '{d}'", self.date));
        }
        if parts.is_empty() {
            "TRUE".to_owned()
        } else {
            parts.join(" AND ")
        }
    }

    fn keep(&mut self, name: &str, sql: String) {
        self.steps.push(Step {
            name: name.to_owned(),
            sql,
            keep: true,
        });
    }

    fn view(&mut self, name: &str, sql: String) {
        self.steps.push(Step {
            name: name.to_owned(),
            sql,
            keep: false,
        });
    }

    /// Every row of `table` whose `key` is one of `keys` (a query with a column `key`).
    fn copies(table: &str, key: &str, keys: &str) -> String {
        format!(
            "SELECT s.* FROM (SELECT DISTINCT {key} FROM ({keys}) AS r) AS k \
             RIGHT SEMI JOIN {} s ON s.{key} IS NOT DISTINCT FROM k.{key}",
            raw(table)
        )
    }
}

/// The steps that register the reached rows of each table a request over `units`
/// reads, for the cohort days `from`..=`to` (wall-clock dates of `time_zone`), or
/// `None` when the request reads the whole lake (no bounds, or a unit without rules).
/// After the steps, each table a rule covers is registered under its own name; the
/// others are left to the caller (the raw table as it is).
pub(crate) fn steps(
    units: &[&str],
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    date: &str,
    options: &SqlOptions,
) -> Option<Vec<Step>> {
    if from.is_none() && to.is_none() || units.iter().any(|u| !KNOWN_UNITS.contains(u)) {
        return None;
    }
    let has = |n: &str| units.contains(&n);
    let u = Units {
        messages: has("message_units"),
        attributed: has("attributed_orders") || has("message_units"),
        carts: has("cart_units"),
        cases: has("case_units"),
    };
    let one = chrono::Days::new(1);
    let mut p = Plan {
        lo: from.map(|f| f.checked_sub_days(one).unwrap_or(NaiveDate::MIN)),
        hi: to.map(|t| t.checked_add_days(one).unwrap_or(NaiveDate::MAX)),
        date,
        steps: Vec::new(),
    };
    let o = options;
    let sends = u.messages || u.attributed || u.carts;
    if sends {
        // Sends in the cohort's days: the messages (and carts) in range are among them.
        let sql = format!(
            "SELECT DISTINCT message_id, cart_id FROM {} WHERE {}",
            raw("sends"),
            p.dates(0, Some(0))
        );
        p.keep("__reach_cohort", sql);
    }
    if u.attributed {
        // Clicks naming a message in range: the orders their phone placed within the
        // click window after can be attributed to it (rule 2).
        let sql = format!(
            "SELECT DISTINCT c.phone_hash, c.ts FROM (SELECT DISTINCT message_id FROM __reach_cohort) AS k \
             RIGHT SEMI JOIN {} c ON c.message_id = k.message_id",
            raw("clicks")
        );
        p.keep("__reach_named_clicks", sql);
    }
    if u.attributed || u.carts {
        let mut keys = Vec::new();
        let mut after = 0;
        if u.attributed {
            // Rule 1: utm_content names a message in range (never an order before it).
            keys.push(format!(
                "SELECT o.order_id FROM (SELECT DISTINCT message_id FROM __reach_cohort) AS k \
                 RIGHT SEMI JOIN (SELECT * FROM {} WHERE {}) o ON o.utm_content = k.message_id",
                raw("orders"),
                p.dates(0, None)
            ));
            // Rule 2: within the click window after a click naming a message in range.
            keys.push(format!(
                "SELECT o.order_id FROM (SELECT * FROM {} WHERE {}) o \
                 JOIN __reach_named_clicks c ON o.phone_hash = c.phone_hash \
                 AND o.ts >= c.ts AND o.ts <= c.ts + INTERVAL '{} seconds'",
                raw("orders"),
                p.dates(0, None),
                o.click_window_s
            ));
            // Rule 3: within the view window after a message in range.
            after = days(o.view_window_s);
        }
        if u.carts {
            // Recovery: within the cart window after a first reminder in range.
            after = after.max(days(o.cart_window_s));
        }
        keys.push(format!(
            "SELECT order_id FROM {} WHERE {}",
            raw("orders"),
            p.dates(0, Some(after))
        ));
        let keys = keys.join("\nUNION\n");
        p.keep("__reach_orders", Plan::copies("orders", "order_id", &keys));
        p.view("orders", "SELECT * FROM __reach_orders".into());
    }
    if u.messages || u.attributed {
        // Clicks naming a message in range (`clicked`), and every click that competes
        // with one for an order that may be attributed to a message in range.
        let mut keys = vec![format!(
            "SELECT c.click_id FROM (SELECT DISTINCT message_id FROM __reach_cohort) AS k \
             RIGHT SEMI JOIN {} c ON c.message_id = k.message_id",
            raw("clicks")
        )];
        if u.attributed {
            keys.push(format!(
                "SELECT c.click_id FROM (SELECT * FROM {} WHERE {}) c \
                 JOIN (SELECT DISTINCT phone_hash, ts FROM __reach_orders) o \
                 ON c.phone_hash = o.phone_hash AND c.ts <= o.ts \
                 AND c.ts >= o.ts - INTERVAL '{} seconds'",
                raw("clicks"),
                p.dates(days(o.click_window_s), None),
                o.click_window_s
            ));
        }
        let keys = keys.join("\nUNION\n");
        p.keep("__reach_clicks", Plan::copies("clicks", "click_id", &keys));
        p.view("clicks", "SELECT * FROM __reach_clicks".into());
    }
    if u.messages {
        // Quotes of a message in range (any time), and inbound messages up to the
        // reply (latest message) or opt-out (`stop`) window after the range.
        let keys = format!(
            "SELECT i.message_id FROM (SELECT DISTINCT message_id FROM __reach_cohort) AS k \
             RIGHT SEMI JOIN {inbound} i ON i.context_message_id = k.message_id\n\
             UNION\n\
             SELECT message_id FROM {inbound} WHERE {}",
            p.dates(
                0,
                Some(days(o.reply_window_s).max(days(o.opt_out_window_s)))
            ),
            inbound = raw("inbound"),
        );
        p.keep(
            "__reach_inbound",
            Plan::copies("inbound", "message_id", &keys),
        );
        p.view("inbound", "SELECT * FROM __reach_inbound".into());
        let keys = format!(
            "SELECT event_id FROM {} WHERE {}",
            raw("consent"),
            p.dates(0, Some(days(o.opt_out_window_s)))
        );
        p.keep(
            "__reach_consent",
            Plan::copies("consent", "event_id", &keys),
        );
        p.view("consent", "SELECT * FROM __reach_consent".into());
    }
    if sends {
        let mut after = 0;
        if u.messages {
            after = days(o.reply_window_s);
        }
        if u.attributed {
            after = after.max(days(o.view_window_s));
        }
        let mut keys = vec![format!(
            "SELECT message_id FROM {} WHERE {}",
            raw("sends"),
            p.dates(0, Some(after))
        )];
        if u.carts {
            // Every reminder of a cart with one in range (which is the first?).
            keys.push(format!(
                "SELECT s.message_id FROM (SELECT DISTINCT cart_id FROM __reach_cohort WHERE cart_id IS NOT NULL) AS k \
                 RIGHT SEMI JOIN {} s ON s.cart_id = k.cart_id",
                raw("sends")
            ));
        }
        if u.attributed {
            keys.push("SELECT utm_content AS message_id FROM __reach_orders".into());
            keys.push("SELECT message_id FROM __reach_clicks".into());
        }
        if u.messages {
            keys.push("SELECT context_message_id AS message_id FROM __reach_inbound".into());
        }
        let sql = format!(
            "SELECT DISTINCT message_id FROM ({}) AS r WHERE message_id IS NOT NULL",
            keys.join("\nUNION ALL\n")
        );
        p.keep("__reach_send_ids", sql);
        p.view(
            "sends",
            format!(
                "SELECT s.* FROM __reach_send_ids k RIGHT SEMI JOIN {} s ON s.message_id = k.message_id",
                raw("sends")
            ),
        );
        if u.messages || u.attributed {
            // Every status of a reached message, whenever it came.
            p.view(
                "statuses",
                format!(
                    "SELECT s.* FROM __reach_send_ids k RIGHT SEMI JOIN {} s ON s.message_id = k.message_id",
                    raw("statuses")
                ),
            );
        }
        if u.carts {
            p.view(
                "carts",
                Plan::copies(
                    "carts",
                    "cart_id",
                    "SELECT cart_id FROM __reach_cohort WHERE cart_id IS NOT NULL",
                ),
            );
        }
    }
    if u.cases {
        // Every event of a case with an `opened` event in range, whenever it came.
        let opened = format!(
            "SELECT DISTINCT case_id FROM {} WHERE event = 'opened' AND {}",
            raw("cases"),
            p.dates(0, Some(0))
        );
        let events = format!(
            "SELECT DISTINCT e.event_id FROM ({opened}) AS k \
             RIGHT SEMI JOIN {} e ON e.case_id = k.case_id",
            raw("cases")
        );
        p.keep("__reach_case_events", events);
        p.view(
            "cases",
            Plan::copies(
                "cases",
                "event_id",
                "SELECT event_id FROM __reach_case_events",
            ),
        );
    }
    Some(p.steps)
}

/// The tables [`steps`] registers under their own names.
pub(crate) fn covered(steps: &[Step]) -> Vec<&str> {
    steps
        .iter()
        .filter(|s| !s.name.starts_with("__"))
        .map(|s| s.name.as_str())
        .collect()
}
