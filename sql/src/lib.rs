//! `chatlake-sql`: the metric layer.
//!
//! It registers every lake table in DataFusion (listing tables over `date=`
//! partitions, schemas from `chatlake-model`), loads the definitions of `sql/` — the
//! deduplicated `v_<table>` views (`sql/views/`), the unit relations metrics aggregate
//! over (`sql/units/`) and one file per metric (`sql/metrics/`) — builds the metric
//! catalog from their headers ([`catalog`]), computes `/v1/metrics` requests
//! ([`metrics`]) and guards and runs analysts' SQL ([`query`]).
//!
//! Start reading at [`Engine::open`], then `sql/units/message_units.sql`.

pub mod catalog;
pub mod encode;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod json;
pub mod metrics;
pub mod options;
pub mod quantile;
pub mod query;
pub mod reach;
pub mod suppressions;

pub use catalog::{Catalog, Metric, MetricType};
pub use encode::{Encoder, Format};
pub use engine::{Engine, LakeLocation};
pub use error::{Error, ErrorKind, Result};
pub use metrics::MetricsRequest;
pub use options::SqlOptions;
pub use query::{UserQuery, check_read_only};
