//! `chatlake-ingest`: everything between a request body and a Parquet file.
//!
//! * Parsing and validation: [`whatsapp`] (Cloud API webhooks), [`shopify`] (orders and
//!   checkouts), [`generic`] (`POST /v1/events/{table}`), with [`signature`] checks and
//!   signed click [`links`].
//! * Durability: [`pipeline::Ingestor`] puts each request in the write-ahead log
//!   ([`wal`]) with group commit, buffers it, and flushes to the [`lake`] with a
//!   checkpoint; [`compact`] merges a closed day's files.
//! * Payloads that are authentic but not understood go to [`deadletter`].
//!
//! Start reading at [`pipeline`].

pub mod compact;
pub mod deadletter;
pub mod error;
pub mod generic;
pub mod json;
pub mod lake;
pub mod links;
pub mod options;
pub mod pipeline;
pub mod record;
pub mod shopify;
pub mod signature;
pub mod wal;
pub mod whatsapp;

pub use error::{Error, ErrorKind, Result};
pub use options::IngestOptions;
pub use pipeline::Ingestor;

use chatlake_model::{IntentClassifier, IntentOptions, PhoneHasher};

/// What every parser needs to turn input into lake rows: the phone hash, the intent
/// keywords and the consent policy version. Built once at start-up.
#[derive(Debug, Clone)]
pub struct Normalizer {
    pub hasher: PhoneHasher,
    pub classifier: IntentClassifier,
    pub policy_version: String,
}

impl Normalizer {
    /// A normaliser for hash key `hash_key`.
    pub fn new(hash_key: &str, intents: &IntentOptions, policy_version: &str) -> Normalizer {
        Normalizer {
            hasher: PhoneHasher::new(hash_key),
            classifier: IntentClassifier::new(intents),
            policy_version: policy_version.to_owned(),
        }
    }
}
