//! `chatlake-model`: the vocabulary every other crate shares.
//!
//! It owns the event tables of docs/metrics.md as Rust structs with their Arrow schemas
//! ([`tables`]), E.164 normalisation and the keyed phone hash ([`phone`]), inbound
//! intent classification ([`intent`]), timestamps ([`time`]) and the lake's paths and
//! partitioning ([`lake`]). It does no IO and knows nothing of tokio or DataFusion.
//!
//! Start reading at [`tables`]: the `event_table!` invocations there are the lake's
//! schema, one struct per table.

pub mod error;
pub mod experiment;
pub mod intent;
pub mod lake;
pub mod phone;
pub mod stats;
pub mod tables;
pub mod time;

pub use error::{Error, ErrorKind};
pub use intent::{Intent, IntentClassifier, IntentOptions};
pub use phone::{PhoneError, PhoneHasher, normalize_e164};
pub use tables::{Event, Table};
pub use time::{Clock, Ts};
