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
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::OpenStore { .. } | Error::Store { .. } => ErrorKind::Unavailable,
            Error::Corrupt { .. } => ErrorKind::Internal,
            Error::DuplicateExperiment { .. } => ErrorKind::Conflict,
            Error::InvalidConsent { .. } => ErrorKind::InvalidInput,
            Error::UnknownExperiment { .. } => ErrorKind::NotFound,
        }
    }

    /// The snake_case code of the API.md error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::OpenStore { .. } | Error::Store { .. } => "store_unavailable",
            Error::Corrupt { .. } => "internal",
            Error::DuplicateExperiment { .. } => "duplicate_experiment",
            Error::InvalidConsent { .. } => "invalid_consent",
            Error::UnknownExperiment { .. } => "unknown_experiment",
        }
    }
}

/// The crate's result.
pub type Result<T> = std::result::Result<T, Error>;
