//! `chatlake-send`: the send/consent module (ARCHITECTURE.md, "The sender") — the
//! local state the sender needs and the lake cannot hold, and the sender itself.
//!
//! Start reading at [`sender::Sender`]: it takes a validated request
//! ([`request::SendRequest`]), decides per recipient with the pure
//! [`policy::Policy::plan`], keeps intents in the [`outbox::Outbox`] and calls the
//! Cloud API ([`cloud`]). State lives in three SQLite files under the data dir:
//! `chatlake.db`, the consent [`ledger::Ledger`] (the one place raw numbers are kept),
//! `outbox.db` (phone hashes only) and `experiments.db` ([`experiments::Experiments`]).

pub mod cloud;
mod db;
pub mod error;
pub mod experiments;
pub mod ledger;
mod migrate;
pub mod options;
pub mod outbox;
pub mod policy;
pub mod request;
pub mod sender;

pub use error::{Error, ErrorKind};
pub use experiments::Experiments;
pub use ledger::Ledger;
pub use options::SendOptions;
pub use outbox::Outbox;
pub use sender::Sender;

use std::path::Path;

/// The sender's three databases under a data dir.
pub struct Stores {
    pub ledger: Ledger,
    pub experiments: Experiments,
    pub outbox: Outbox,
}

impl Stores {
    /// Opens (creating when missing) `chatlake.db`, `experiments.db` and `outbox.db`
    /// under `dir`, moving the tables of an older layout out of `chatlake.db` first.
    pub fn open(dir: &Path) -> Result<Stores, Error> {
        let s = Stores {
            ledger: Ledger::open(&dir.join("chatlake.db"))?,
            experiments: Experiments::open(&dir.join("experiments.db"))?,
            outbox: Outbox::open(&dir.join("outbox.db"))?,
        };
        migrate::split_legacy(&s.ledger, &s.experiments, &s.outbox)?;
        Ok(s)
    }
}
