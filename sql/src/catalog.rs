//! The definitions shipped in `sql/`: views, units and metrics, each one `.sql` file
//! whose comment header (`-- key: value` lines) documents it. The metric catalog is
//! built from those headers, so documentation cannot drift from code.

use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;

mod files {
    include!(concat!(env!("OUT_DIR"), "/files.rs"));
}

/// What a metric's value is, which decides its JSON form and its value in a group
/// where its unit has no rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    /// An integer count (0 when there is nothing to count).
    Count,
    /// A ratio (JSON null for an empty denominator).
    Rate,
    /// A duration in seconds (null without data).
    Seconds,
    /// A mean (null without data).
    Mean,
    /// A money amount, per currency: a JSON object keyed by ISO currency code.
    Amount,
}

/// One definition file: its header fields and its SQL body.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub header: BTreeMap<String, String>,
    pub body: String,
}

fn parse(kind: &str, name: &str, text: &str) -> Result<Definition> {
    let mut header = BTreeMap::new();
    let mut body = String::new();
    let mut in_header = true;
    for line in text.lines() {
        if in_header {
            if let Some((k, v)) = line.strip_prefix("--").and_then(|r| r.split_once(':')) {
                header.insert(k.trim().to_owned(), v.trim().to_owned());
                continue;
            }
            in_header = false;
        }
        body.push_str(line);
        body.push('\n');
    }
    let declared = header.get(kind).cloned().unwrap_or_default();
    if declared != name {
        return Err(Error::Definition {
            name: name.into(),
            message: format!("its header must start with `-- {kind}: {name}`"),
        });
    }
    Ok(Definition {
        name: name.into(),
        header,
        body: body.trim().to_owned(),
    })
}

/// A unit relation: one row per message / order / cart / case, the rows metrics
/// aggregate over.
#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    pub name: String,
    pub definition: String,
    pub grain: String,
    pub dimensions: Vec<String>,
    #[serde(skip)]
    pub sql: String,
}

/// A metric of docs/metrics.md.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub definition: String,
    pub grain: String,
    /// The dimensions besides `day` / `week` / `month` it can be grouped by.
    pub dimensions: Vec<String>,
    /// The unit relation it aggregates (`derived` for a ratio of two other metrics).
    pub from: String,
    #[serde(rename = "type")]
    pub ty: MetricType,
    /// Whether the value is an object keyed by currency.
    pub per_currency: bool,
    /// The aggregate SQL expression over `from`, or `a / b` for a derived metric.
    pub sql: String,
}

impl Metric {
    /// For a derived metric, the names of its numerator and denominator.
    pub fn ratio_of(&self) -> Option<(&str, &str)> {
        if self.from != "derived" {
            return None;
        }
        let (a, b) = self.sql.split_once('/')?;
        Some((a.trim(), b.trim()))
    }
}

/// The time buckets every metric can be grouped by.
pub const TIME_BUCKETS: [(&str, &str); 3] = [
    ("day", "the cohort time's UTC day, labelled YYYY-MM-DD"),
    (
        "week",
        "the cohort time's ISO week (starting Monday), labelled with the Monday's date YYYY-MM-DD",
    ),
    ("month", "the cohort time's month, labelled YYYY-MM"),
];

/// The dimensions of docs/metrics.md, "Grouping", with their one-line definitions.
pub const DIMENSIONS: [(&str, &str); 8] = [
    (
        "campaign_id",
        "the message's campaign (for cart metrics, the first reminder's)",
    ),
    ("template", "the message's template name"),
    (
        "category",
        "the message's category: marketing, utility, authentication or service",
    ),
    ("experiment_id", "the experiment the message was sent under"),
    ("arm", "the experiment arm the message was sent under"),
    ("segment", "the audience segment the send carried"),
    ("country", "the recipient's country the send carried"),
    (
        "step",
        "cart metrics: the step of the last reminder sent before the recovering order (for a cart not recovered, its last reminder)",
    ),
];

/// Every view, unit and metric shipped with chatlake.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub views: Vec<Definition>,
    pub units: Vec<Unit>,
    pub metrics: Vec<Metric>,
}

/// An embedded statement of `sql/experiments/` or `sql/suppressions/` by name.
pub(crate) fn embedded(dir: &str, name: &str) -> Result<&'static str> {
    let files = match dir {
        "experiments" => files::EXPERIMENTS,
        "suppressions" => files::SUPPRESSIONS,
        _ => &[],
    };
    files
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, body)| *body)
        .ok_or_else(|| Error::Definition {
            name: name.to_owned(),
            message: format!("sql/{dir}/{name}.sql is missing"),
        })
}

/// The identifier-like words of `sql` (runs of ASCII letters, digits and `_`).
pub fn words(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Whether `sql` names the relation `name` (as a whole word).
pub fn reads(sql: &str, name: &str) -> bool {
    words(sql).any(|w| w == name)
}

/// The dedupe a `v_<table>` view of `sql/views/` spells as
/// `SELECT * EXCLUDE (rn) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY <key> ORDER
/// BY <order>) AS rn FROM <table>) WHERE rn = 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedupe {
    pub table: String,
    pub key: Vec<String>,
    pub order: String,
}

impl Dedupe {
    /// The dedupe of a view's body, when it has exactly the shape above.
    pub fn of(body: &str) -> Option<Dedupe> {
        // One space between tokens, none inside parentheses' edges.
        let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let flat = flat.replace("( ", "(").replace(" )", ")");
        let rest = flat.strip_prefix(
            "SELECT * EXCLUDE (rn) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY ",
        )?;
        let (key, rest) = rest.split_once(" ORDER BY ")?;
        let (order, rest) = rest.split_once(") AS rn FROM ")?;
        let table = rest.strip_suffix(") WHERE rn = 1")?;
        let ident = |w: &str| !w.is_empty() && words(w).eq(std::iter::once(w));
        let key: Vec<String> = key.split(',').map(|k| k.trim().to_owned()).collect();
        let balanced = order.matches('(').count() == order.matches(')').count();
        (key.iter().all(|k| ident(k)) && ident(table) && !order.is_empty() && balanced).then(|| {
            Dedupe {
                table: table.to_owned(),
                key,
                order: order.to_owned(),
            }
        })
    }

    /// The same rows as the view, computed so that only keys with several copies go
    /// through the `ROW_NUMBER()` sort: the keys seen more than once are found with a
    /// hash aggregate; every row of any other key is its key's only copy and passes
    /// untouched (an anti join), and the rows of the repeated keys are ranked as the
    /// view ranks them (a semi join). Keys match as GROUP BY and PARTITION BY group
    /// them, NULL with NULL. In a lake with few duplicates this is several times
    /// faster in DataFusion 55, whose window sorts every row (BENCHMARKS.md).
    pub fn split_sql(&self) -> String {
        format!(
            "WITH repeated AS ({})\n{}",
            self.repeated_sql(),
            self.split_sql_over("repeated")
        )
    }

    /// [`Dedupe::split_sql`] in DuckDB's spelling, which has `ANTI JOIN` and `SEMI
    /// JOIN` (the left side kept) but no `RIGHT ANTI`/`RIGHT SEMI`; DataFusion builds
    /// its hash table from the left side, so there the small side goes first.
    pub fn split_sql_duckdb(&self) -> String {
        let t = &self.table;
        self.split_sql()
            .replace(
                &format!("FROM repeated d RIGHT ANTI JOIN {t} s ON"),
                &format!("FROM {t} s ANTI JOIN repeated d ON"),
            )
            .replace(
                &format!("FROM repeated d RIGHT SEMI JOIN {t} s ON"),
                &format!("FROM {t} s SEMI JOIN repeated d ON"),
            )
    }

    /// The keys with more than one copy.
    pub fn repeated_sql(&self) -> String {
        let keys = self.key.join(", ");
        format!(
            "SELECT {keys} FROM {} GROUP BY {keys} HAVING count(*) > 1",
            self.table
        )
    }

    /// [`Dedupe::split_sql`] with the repeated keys ([`Dedupe::repeated_sql`]) read
    /// from the relation `repeated` (so that they can be computed once beforehand).
    pub fn split_sql_over(&self, repeated: &str) -> String {
        let Dedupe { table, key, order } = self;
        let keys = key.join(", ");
        let on = key
            .iter()
            .map(|k| format!("(s.{k} IS NOT DISTINCT FROM d.{k})"))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "SELECT s.* FROM {repeated} d RIGHT ANTI JOIN {table} s ON {on}\n\
             UNION ALL\n\
             SELECT * EXCLUDE (rn) FROM (\n  \
               SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {order}) AS rn\n  \
               FROM (SELECT s.* FROM {repeated} d RIGHT SEMI JOIN {table} s ON {on}) AS copies\n\
             ) WHERE rn = 1"
        )
    }
}

/// The SQL a view runs as: [`Dedupe::split_sql`] for a dedupe view, else its body.
pub fn planned_view_sql(body: &str) -> String {
    Dedupe::of(body).map_or_else(|| body.to_owned(), |d| d.split_sql())
}

/// Units ordered so that each comes after the units it reads.
fn in_dependency_order(mut pending: Vec<Unit>) -> Result<Vec<Unit>> {
    let mut ordered: Vec<Unit> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|u| {
            pending
                .iter()
                .all(|o| o.name == u.name || !reads(&u.sql, &o.name))
        });
        match ready {
            Some(i) => ordered.push(pending.remove(i)),
            None => {
                return Err(Error::Definition {
                    name: pending[0].name.clone(),
                    message: "the units read each other in a cycle".into(),
                });
            }
        }
    }
    Ok(ordered)
}

fn list(v: Option<&String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn field(d: &Definition, key: &str) -> Result<String> {
    d.header.get(key).cloned().ok_or_else(|| Error::Definition {
        name: d.name.clone(),
        message: format!("its header has no `-- {key}:` line"),
    })
}

impl Catalog {
    /// Loads and checks every embedded definition.
    pub fn load() -> Result<Catalog> {
        let views = files::VIEWS
            .iter()
            .map(|(n, t)| parse("view", n, t))
            .collect::<Result<Vec<_>>>()?;
        let mut units = Vec::new();
        for (n, t) in files::UNITS {
            let d = parse("unit", n, t)?;
            units.push(Unit {
                name: d.name.clone(),
                definition: field(&d, "definition")?,
                grain: field(&d, "grain")?,
                dimensions: list(d.header.get("dimensions")),
                sql: d.body,
            });
        }
        let mut metrics = Vec::new();
        for (n, t) in files::METRICS {
            let d = parse("metric", n, t)?;
            let ty = match field(&d, "type")?.as_str() {
                "count" => MetricType::Count,
                "rate" => MetricType::Rate,
                "seconds" => MetricType::Seconds,
                "mean" => MetricType::Mean,
                "amount" => MetricType::Amount,
                other => {
                    return Err(Error::Definition {
                        name: d.name,
                        message: format!("unknown type `{other}`"),
                    });
                }
            };
            metrics.push(Metric {
                name: d.name.clone(),
                definition: field(&d, "definition")?,
                grain: field(&d, "grain")?,
                dimensions: list(d.header.get("dimensions")),
                from: field(&d, "from")?,
                ty,
                per_currency: d.header.get("per").map(String::as_str) == Some("currency"),
                sql: d.body,
            });
        }
        let catalog = Catalog {
            views,
            units: in_dependency_order(units)?,
            metrics,
        };
        catalog.check()?;
        Ok(catalog)
    }

    fn check(&self) -> Result<()> {
        for m in &self.metrics {
            let bad = |message: String| Error::Definition {
                name: m.name.clone(),
                message,
            };
            if m.sql.is_empty() {
                return Err(bad("it has no SQL body".into()));
            }
            if let Some((a, b)) = m.ratio_of() {
                for part in [a, b] {
                    let Some(p) = self.metric(part) else {
                        return Err(bad(format!("it divides by unknown metric `{part}`")));
                    };
                    if p.from == "derived" {
                        return Err(bad(format!("`{part}` is itself derived")));
                    }
                    if !m.dimensions.iter().all(|d| p.dimensions.contains(d)) {
                        return Err(bad(format!("`{part}` lacks some of its dimensions")));
                    }
                }
            } else if m.from == "derived" {
                return Err(bad(
                    "a derived metric's body must be `<metric> / <metric>`".into()
                ));
            } else {
                if let Some(d) = m
                    .dimensions
                    .iter()
                    .find(|d| !DIMENSIONS.iter().any(|(n, _)| n == d))
                {
                    return Err(bad(format!(
                        "dimension `{d}` has no definition in DIMENSIONS"
                    )));
                }
                let Some(u) = self.unit(&m.from) else {
                    return Err(bad(format!("it reads unknown unit `{}`", m.from)));
                };
                if u.dimensions != m.dimensions || u.grain != m.grain {
                    return Err(bad(format!(
                        "its grain and dimensions must be those of `{}`",
                        u.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// A metric by name.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// A unit by name.
    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }

    /// Every dimension some metric carries, sorted.
    pub fn dimensions(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .metrics
            .iter()
            .flat_map(|m| m.dimensions.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_definition_loads_and_the_funnel_is_there() {
        let c = Catalog::load().expect("catalog");
        for name in [
            "sent",
            "delivery_rate",
            "read_rate",
            "ctr",
            "reply_rate",
            "rps",
            "cvr",
            "aov",
            "cart_recovery_rate",
            "fcr",
            "frt_median",
            "containment",
            "csat",
        ] {
            assert!(c.metric(name).is_some(), "{name}");
        }
        assert_eq!(c.views.len(), chatlake_model::Table::ALL.len());
        // Every view is a dedupe the engine runs in its split form.
        for v in &c.views {
            let d = Dedupe::of(&v.body).unwrap_or_else(|| panic!("{} is no dedupe", v.name));
            assert_eq!(format!("v_{}", d.table), v.name);
        }
        let st = Dedupe::of(
            &c.views
                .iter()
                .find(|v| v.name == "v_statuses")
                .expect("v")
                .body,
        );
        assert_eq!(
            st,
            Some(Dedupe {
                table: "statuses".into(),
                key: vec!["message_id".into(), "status".into()],
                order: "ts, received_at".into(),
            })
        );
        let o = Dedupe::of(
            &c.views
                .iter()
                .find(|v| v.name == "v_orders")
                .expect("v")
                .body,
        );
        assert_eq!(
            o.map(|d| d.order),
            Some("COALESCE(updated_at, received_at) DESC, received_at DESC".into())
        );
        // Anything else runs as written.
        for other in [
            "SELECT * FROM statuses",
            "SELECT * EXCLUDE (rn) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) AS rn FROM t) WHERE rn = 2",
            "SELECT * EXCLUDE (rn) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY a + 1 ORDER BY b) AS rn FROM t) WHERE rn = 1",
        ] {
            assert_eq!(Dedupe::of(other), None, "{other}");
            assert_eq!(planned_view_sql(other), other);
        }
        let rps = c.metric("rps").expect("rps");
        assert_eq!(rps.ratio_of(), Some(("attributed_revenue", "sent")));
        assert!(rps.per_currency);
        assert!(c.dimensions().contains(&"step".to_owned()));
        let pos = |n: &str| c.units.iter().position(|u| u.name == n);
        assert!(
            pos("attributed_orders") < pos("message_units"),
            "dependency order"
        );
    }

    #[test]
    fn a_header_must_name_its_file() {
        assert!(parse("metric", "a", "-- metric: b\nCOUNT(*)").is_err());
        let d = parse("metric", "a", "-- metric: a\n-- type: count\nCOUNT(*)\n").expect("ok");
        assert_eq!(d.body, "COUNT(*)");
        assert_eq!(d.header["type"], "count");
    }
}
