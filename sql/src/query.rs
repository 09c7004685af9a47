//! User SQL (`POST /v1/sql`, `chatlake sql`): read-only queries over the lake's
//! registered tables, views and units, under a time limit, a row limit and the
//! memory pool.
//!
//! The guard parses the text with DataFusion's own parser and admits exactly one
//! statement that is a query (`SELECT`, `WITH`, `VALUES`) or an `EXPLAIN` of one; planning
//! then runs with DDL, DML and other statements disallowed, as a second fence. Nothing
//! can name a file or URL: the session has no URL tables and no file-reading table
//! functions, so a query sees only the lake's registered tables.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::options::SqlOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use futures_util::StreamExt;
use tokio::time::Instant;

/// Maps a DataFusion error: running out of the memory pool and our own bugs are told
/// apart from a bad query.
pub(crate) fn map_df_error(e: DataFusionError, options: &SqlOptions) -> Error {
    let root = e.find_root();
    match root {
        DataFusionError::ResourcesExhausted(m) => Error::MemoryLimit {
            limit_bytes: options.memory_limit_bytes,
            message: m.clone(),
        },
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::SQL(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => Error::InvalidQuery {
            message: root.to_string(),
        },
        _ => Error::execute("running the query", e),
    }
}

fn refused(what: &str) -> Error {
    Error::Refused {
        message: format!(
            "only read-only queries (SELECT, WITH, VALUES, EXPLAIN) are allowed; this is {what}"
        ),
    }
}

/// Admits exactly one read-only query.
pub fn check_read_only(sql: &str) -> Result<()> {
    let mut statements = DFParser::parse_sql(sql).map_err(|e| Error::InvalidQuery {
        message: e.to_string(),
    })?;
    if statements.len() != 1 {
        return Err(Error::Refused {
            message: format!("send exactly one statement, not {}", statements.len()),
        });
    }
    let Some(statement) = statements.pop_front() else {
        return Err(refused("empty"));
    };
    let is_query = |s: &Statement| matches!(s, Statement::Query(_));
    match statement {
        DfStatement::Statement(s) if is_query(&s) => Ok(()),
        DfStatement::Statement(s) => match *s {
            Statement::Explain { statement, .. } if is_query(&statement) => Ok(()),
            other => Err(refused(&format!("a {} statement", statement_kind(&other)))),
        },
        DfStatement::Explain(e) => match *e.statement {
            DfStatement::Statement(s) if is_query(&s) => Ok(()),
            _ => Err(refused("an EXPLAIN of something that is not a query")),
        },
        DfStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(refused("COPY")),
        _ => Err(refused("not a query")),
    }
}

fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [a, b] if matches!(a.to_ascii_uppercase().as_str(), "CREATE" | "DROP" | "ALTER") => {
            format!("{} {}", a.to_ascii_uppercase(), b.to_ascii_uppercase())
        }
        [a, ..] => a.to_ascii_uppercase(),
        [] => "empty".into(),
    }
}

/// A running user query. Its first batch has already been computed, so a query that
/// fails, times out or exhausts memory before producing rows is an error before any
/// answer is sent; later failures end the stream with an error.
pub struct UserQuery {
    schema: SchemaRef,
    first: Option<RecordBatch>,
    stream: SendableRecordBatchStream,
    deadline: Instant,
    rows: usize,
    max_rows: usize,
    options: SqlOptions,
}

impl UserQuery {
    /// The result's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch, or an error once a limit is passed.
    pub async fn next(&mut self) -> Option<Result<RecordBatch>> {
        if let Some(b) = self.first.take() {
            return Some(Ok(b));
        }
        let item = match tokio::time::timeout_at(self.deadline, self.stream.next()).await {
            Err(_) => {
                return Some(Err(Error::Timeout {
                    limit_ms: self.options.query_timeout_ms,
                }));
            }
            Ok(None) => return None,
            Ok(Some(item)) => item,
        };
        Some(self.admit(item))
    }

    fn admit(&mut self, item: Result<RecordBatch, DataFusionError>) -> Result<RecordBatch> {
        let batch = item.map_err(|e| map_df_error(e, &self.options))?;
        self.rows += batch.num_rows();
        if self.rows > self.max_rows {
            return Err(Error::RowLimit {
                limit: self.max_rows,
            });
        }
        Ok(batch)
    }

    /// Every remaining batch (for the CLI and tests).
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(b) = self.next().await {
            out.push(b?);
        }
        Ok(out)
    }
}

impl Engine {
    /// Starts a user query: guard, plan, execute, and wait for its first batch.
    pub async fn query(&self, sql: &str) -> Result<UserQuery> {
        check_read_only(sql)?;
        let deadline =
            Instant::now() + std::time::Duration::from_millis(self.options.query_timeout_ms);
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let start = async {
            let df = self
                .ctx
                .sql_with_options(sql, options)
                .await
                .map_err(|e| map_df_error(e, &self.options))?;
            let schema: SchemaRef = df.schema().inner().clone();
            let stream = df
                .execute_stream()
                .await
                .map_err(|e| map_df_error(e, &self.options))?;
            Ok::<_, Error>((schema, stream))
        };
        let timeout = || Error::Timeout {
            limit_ms: self.options.query_timeout_ms,
        };
        let (schema, mut stream) = tokio::time::timeout_at(deadline, start)
            .await
            .map_err(|_| timeout())??;
        let first = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| timeout())?;
        let mut q = UserQuery {
            schema,
            first: None,
            stream,
            deadline,
            rows: 0,
            max_rows: self.options.max_result_rows,
            options: self.options.clone(),
        };
        if let Some(item) = first {
            q.first = Some(q.admit(item)?);
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queries_pass_the_guard() {
        for ok in [
            "SELECT 1",
            "with a as (select 1 as x) select * from a",
            "EXPLAIN SELECT * FROM sends",
            "VALUES (1), (2)",
        ] {
            check_read_only(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "CREATE TABLE t AS SELECT 1",
            "CREATE VIEW v AS SELECT 1",
            "DROP TABLE sends",
            "INSERT INTO sends SELECT * FROM sends",
            "DELETE FROM sends",
            "UPDATE sends SET template = 'x'",
            "COPY sends TO '/tmp/x.parquet'",
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
            "SET datafusion.execution.batch_size = 1",
            "SELECT 1; SELECT 2",
            "EXPLAIN CREATE TABLE t AS SELECT 1",
        ] {
            let e = check_read_only(bad).expect_err(bad);
            assert!(matches!(e, Error::Refused { .. }), "{bad}: {e:?}");
        }
        assert!(matches!(
            check_read_only("SELEC 1"),
            Err(Error::InvalidQuery { .. })
        ));
    }
}
