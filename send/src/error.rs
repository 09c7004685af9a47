//! The send crate's error type. `api` maps [`ErrorKind`] to an HTTP status in one place.

use std::path::PathBuf;

pub use chatlake_model::ErrorKind;

/// Errors of the send crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or migrating the database failed.
    #[error("opening the database {path}: {source}")]
    OpenStore {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A read or write of the database failed.
    #[error("{operation} in the database: {source}")]
    Store {
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A stored definition could not be read back (written by a newer version?).
    #[error("stored {what} `{id}` cannot be read: {message}")]
    Corrupt {
        what: &'static str,
        id: String,
        message: String,
    },
    /// An experiment with this id exists already.
    #[error("an experiment with id `{id}` exists already")]
    DuplicateExperiment { id: String },
    /// A consent entry with a bad field.
    #[error("consent field `{field}`: {message}")]
    InvalidConsent {
        field: &'static str,
        message: String,
    },
    /// No experiment has this id.
    #[error("no experiment has id `{id}`")]
    UnknownExperiment { id: String },
    /// A send request with a bad or missing field; nothing was recorded.
    #[error("{message}")]
    InvalidSend { field: String, message: String },
    /// No send request has this id.
    #[error("no send request has id `{id}`")]
    UnknownSend { id: String },
    /// The Cloud API token or sending number is not configured.
    #[error(
        "the Cloud API token and sending number are not configured (CHATLAKE_WHATSAPP_TOKEN, CHATLAKE_WHATSAPP_PHONE_NUMBER_ID)"
    )]
    NotConfigured,
    /// Recording events (skips, assignments, sends) durably failed, or a send call's
    /// task stopped: the kind and code are the cause's own.
    #[error("recording send events: {source}")]
    Record {
        kind: ErrorKind,
        code: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::OpenStore { .. } | Error::Store { .. } => ErrorKind::Unavailable,
            Error::Corrupt { .. } => ErrorKind::Internal,
            Error::DuplicateExperiment { .. } => ErrorKind::Conflict,
            Error::InvalidConsent { .. } => ErrorKind::InvalidInput,
            Error::UnknownExperiment { .. } | Error::UnknownSend { .. } => ErrorKind::NotFound,
            Error::InvalidSend { .. } => ErrorKind::InvalidInput,
            Error::NotConfigured => ErrorKind::Unavailable,
            Error::Record { kind, .. } => *kind,
        }
    }

    /// The snake_case code of the error body (docs/api.md, "Errors").
    pub fn code(&self) -> &'static str {
        match self {
            Error::OpenStore { .. } | Error::Store { .. } => "store_unavailable",
            Error::Corrupt { .. } => "internal",
            Error::DuplicateExperiment { .. } => "duplicate_experiment",
            Error::InvalidConsent { .. } => "invalid_consent",
            Error::UnknownExperiment { .. } => "unknown_experiment",
            Error::InvalidSend { .. } => "invalid_send",
            Error::UnknownSend { .. } => "unknown_send",
            Error::NotConfigured => "sender_not_configured",
            Error::Record { code, .. } => code,
        }
    }
}

/// The crate's result.
pub type Result<T> = std::result::Result<T, Error>;
