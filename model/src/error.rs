//! The model crate's error type.

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
