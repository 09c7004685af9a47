//! The ingest crate's error type. `api` maps [`ErrorKind`] to an HTTP status in one place.

use std::path::PathBuf;

pub use chatlake_model::ErrorKind;

/// The underlying error a failure keeps as its cause (`std::error::Error::source`).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the ingest crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record of a request failed validation; nothing of the request was written.
    #[error("record {index}: field `{field}`: {message}")]
    InvalidRecord {
        index: usize,
        field: String,
        message: String,
    },
    /// The body is not what the endpoint takes (malformed JSON, wrong shape).
    #[error("{message}")]
    InvalidBody { message: String },
    /// An unknown event table was named.
    #[error("unknown table `{table}`; valid tables: {valid}")]
    UnknownTable { table: String, valid: String },
    /// A webhook signature header is missing or wrong.
    #[error("{header} is missing or does not match the body")]
    BadSignature { header: &'static str },
    /// A click token was forged, damaged or truncated.
    #[error("the link token is not valid")]
    BadLinkToken,
    /// A secret needed by this endpoint is not configured.
    #[error("{what} is not configured")]
    NotConfigured { what: &'static str },
    /// Writing or syncing the write-ahead log failed.
    #[error("writing the write-ahead log in {dir}: {source}")]
    WriteWal {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading the write-ahead log at start-up failed.
    #[error("reading the write-ahead log {path}: {source}")]
    ReadWal {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    /// The ingest pipeline is shutting down.
    #[error("ingest is shutting down")]
    ShuttingDown,
    /// Writing a file to the lake failed.
    #[error("writing {path} to the lake: {source}")]
    WriteLake {
        path: String,
        #[source]
        source: Cause,
    },
    /// Reading from the lake failed.
    #[error("reading {path} from the lake: {source}")]
    ReadLake {
        path: String,
        #[source]
        source: Cause,
    },
    /// Opening the lake URL failed.
    #[error("opening the lake at {url}: {source}")]
    OpenLake {
        url: String,
        #[source]
        source: Cause,
    },
    /// Local state (checkpoint, intent, dead letters) could not be read or written.
    #[error("{action} {path}: {source}")]
    LocalState {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dead letter does not exist.
    #[error("no dead letter with id `{id}`")]
    DeadLetterNotFound { id: String },
    /// Encoding Parquet failed (our bug or a corrupt input file during compaction).
    #[error("encoding Parquet for {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: Cause,
    },
    /// Building an Arrow batch failed.
    #[error(transparent)]
    Model(#[from] chatlake_model::Error),
}

impl Error {
    /// The kind of failure, which decides the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidRecord { .. } | Error::InvalidBody { .. } => ErrorKind::InvalidInput,
            Error::UnknownTable { .. } => ErrorKind::NotFound,
            Error::BadSignature { .. } | Error::BadLinkToken => ErrorKind::Unauthenticated,
            Error::DeadLetterNotFound { .. } => ErrorKind::NotFound,
            Error::NotConfigured { .. }
            | Error::WriteWal { .. }
            | Error::ShuttingDown
            | Error::WriteLake { .. }
            | Error::ReadLake { .. }
            | Error::OpenLake { .. }
            | Error::LocalState { .. } => ErrorKind::Unavailable,
            Error::ReadWal { .. } | Error::Parquet { .. } | Error::Model(_) => ErrorKind::Internal,
        }
    }

    /// A short snake_case code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRecord { .. } => "invalid_record",
            Error::InvalidBody { .. } => "invalid_body",
            Error::UnknownTable { .. } => "unknown_table",
            Error::BadSignature { .. } => "bad_signature",
            Error::BadLinkToken => "bad_link_token",
            Error::NotConfigured { .. } => "not_configured",
            Error::WriteWal { .. } => "wal_unavailable",
            Error::ReadWal { .. } => "wal_corrupt",
            Error::ShuttingDown => "shutting_down",
            Error::WriteLake { .. } | Error::ReadLake { .. } | Error::OpenLake { .. } => {
                "lake_unavailable"
            }
            Error::LocalState { .. } => "local_state_unavailable",
            Error::DeadLetterNotFound { .. } => "not_found",
            Error::Parquet { .. } | Error::Model(_) => "internal",
        }
    }

    pub(crate) fn local(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::LocalState {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result with the ingest error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod cause_tests {
    use super::*;

    #[test]
    fn a_lake_failure_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let e = Error::WriteLake {
            path: "events/sends/date=2026-01-01/w-1.parquet".into(),
            source: io.into(),
        };
        assert!(e.to_string().ends_with(": disk full"), "{e}");
        let cause = std::error::Error::source(&e).expect("a source");
        assert_eq!(
            cause
                .downcast_ref::<std::io::Error>()
                .expect("the io::Error")
                .kind(),
            std::io::ErrorKind::StorageFull
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }
}
