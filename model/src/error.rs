//! The model crate's error type.

/// What kind of failure an error of any chatlake crate is, for the caller's answer;
/// `api` maps it to an HTTP status in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (400).
    InvalidInput,
    /// A signature or token did not verify (401).
    Unauthenticated,
    /// The thing asked for does not exist (404).
    NotFound,
    /// It exists already, or the change clashes with what is there (409).
    Conflict,
    /// Storage or configuration is missing or failing; the caller should retry (503).
    Unavailable,
    /// The work took longer than its configured limit and was cancelled (408).
    TimedOut,
    /// Our bug (500).
    Internal,
}

/// Errors of the model crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building an Arrow record batch from events failed (a bug: schemas and builders
    /// are generated together).
    #[error("building the Arrow batch for table `{table}`: {source}")]
    BuildBatch {
        table: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
}
