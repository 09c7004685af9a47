//! The sql crate's error type. `api` maps [`ErrorKind`] to an HTTP status in one place.

pub use chatlake_model::ErrorKind;

/// The underlying error a failure keeps as its cause (`std::error::Error::source`).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the sql crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `.sql` definition shipped with chatlake is broken: our bug.
    #[error("the definition `{name}` is broken: {message}")]
    Definition { name: String, message: String },
    /// Opening the lake (its URL or object store) failed.
    #[error("opening the lake at {url}: {source}")]
    OpenLake {
        url: String,
        #[source]
        source: Cause,
    },
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
    /// Executing a query (or what surrounds it: encoding, listing, writing a
    /// snapshot) failed for a reason that is not the query's fault.
    #[error("{doing} failed: {source}")]
    Execute {
        /// What was being done, e.g. `running the query`.
        doing: &'static str,
        #[source]
        source: Cause,
    },
}

impl Error {
    /// An [`Error::Execute`] while `doing` something, keeping `source` as the cause.
    pub fn execute(doing: &'static str, source: impl Into<Cause>) -> Error {
        Error::Execute {
            doing,
            source: source.into(),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only lake");
        let e = Error::execute("writing the experiment snapshot", io);
        assert_eq!(
            e.to_string(),
            "writing the experiment snapshot failed: read-only lake"
        );
        let cause = std::error::Error::source(&e).expect("a source");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("the io::Error itself");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        let open = Error::OpenLake {
            url: "s3://b/p".into(),
            source: "no credentials".into(),
        };
        assert!(std::error::Error::source(&open).is_some());
    }
}
