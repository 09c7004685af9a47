//! `chatlake-send`: the send/consent module — local state the sender needs and the lake
//! cannot hold (DESIGN.md, "The send/consent loop").
//!
//! Start reading at [`store::Store`]: one SQLite database (WAL mode) under the data
//! dir, `<dir>/chatlake.db`, holding the experiment definitions and the consent ledger
//! ([`ledger`]).

pub mod cloud;
pub mod error;
pub mod ledger;
pub mod options;
pub mod outbox;
pub mod policy;
pub mod store;

pub use error::{Error, ErrorKind};
pub use options::SendOptions;
pub use store::Store;
