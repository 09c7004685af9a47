//! The sql crate's error type. `api` maps [`ErrorKind`] to an HTTP status in one place.

pub use chatlake_model::ErrorKind;

/// Errors of the sql crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `.sql` definition shipped with chatlake is broken: our bug.
    #[error("the definition `{name}` is broken: {message}")]
    Definition { name: String, message: String },
    /// Opening the lake (its URL or object store) failed.
    #[error("opening the lake at {url}: {message}")]
    OpenLake { url: String, message: String },
    /// A setting of `[sql]` that cannot be used.
    #[error("[sql] {field}: {message}")]
    InvalidOption {
        field: &'static str,
        message: String,
    },
    /// A metrics request names something that does not exist or does not fit.
    #[error("{message}")]
    InvalidRequest {
        /// `metrics`, `group_by`, `from`, `to`.
        param: &'static str,
        message: String,
    },
    /// User SQL that is not a read-only query over the lake's tables.
    #[error("{message}")]
    Refused { message: String },
    /// User SQL that does not parse or plan.
    #[error("the query is invalid: {message}")]
    InvalidQuery { message: String },
    /// A query went past the configured row limit.
    #[error(
        "the result has more than {limit} rows (the configured row limit); add a LIMIT or aggregate"
    )]
    RowLimit { limit: usize },
    /// A query went past the configured memory limit even with spilling.
    #[error(
        "the query needs more memory than the configured limit of {limit_bytes} bytes: {message}"
    )]
    MemoryLimit { limit_bytes: usize, message: String },
    /// A query ran past the configured time limit and was cancelled.
    #[error("the query ran longer than the configured limit of {limit_ms} ms and was cancelled")]
    Timeout { limit_ms: u64 },
    /// Executing a query failed for a reason that is not the query's fault.
    #[error("running the query failed: {message}")]
    Execute { message: String },
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidRequest { .. }
            | Error::Refused { .. }
            | Error::InvalidQuery { .. }
            | Error::RowLimit { .. }
            | Error::MemoryLimit { .. }
            | Error::InvalidOption { .. } => ErrorKind::InvalidInput,
            Error::Timeout { .. } => ErrorKind::TimedOut,
            Error::OpenLake { .. } => ErrorKind::Unavailable,
            Error::Definition { .. } | Error::Execute { .. } => ErrorKind::Internal,
        }
    }

    /// The snake_case code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Definition { .. } => "broken_definition",
            Error::OpenLake { .. } => "lake_unavailable",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::InvalidOption { .. } => "invalid_option",
            Error::Refused { .. } => "query_refused",
            Error::InvalidQuery { .. } => "invalid_query",
            Error::RowLimit { .. } => "row_limit_exceeded",
            Error::MemoryLimit { .. } => "memory_limit_exceeded",
            Error::Timeout { .. } => "query_timeout",
            Error::Execute { .. } => "query_failed",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
