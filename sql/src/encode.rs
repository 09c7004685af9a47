//! Query results as HTTP bodies, one batch at a time: JSON (`{"columns", "types",
//! "rows"}`), CSV, Arrow IPC stream and Parquet, chosen by `Accept`.

use crate::error::{Error, Result};
use crate::json::cell;
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

/// A result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
    Parquet,
}

impl Format {
    /// Every format with its media type.
    pub const ALL: [(Format, &'static str); 4] = [
        (Format::Json, "application/json"),
        (Format::Csv, "text/csv"),
        (Format::Arrow, "application/vnd.apache.arrow.stream"),
        (Format::Parquet, "application/vnd.apache.parquet"),
    ];

    /// The format an `Accept` header asks for (JSON when absent or `*/*`); `None` when
    /// it names only types chatlake cannot produce.
    pub fn from_accept(accept: Option<&str>) -> Option<Format> {
        let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
            return Some(Format::Json);
        };
        for part in accept.split(',') {
            let media = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if media == "*/*" || media == "application/*" {
                return Some(Format::Json);
            }
            if let Some((f, _)) = Format::ALL.iter().find(|(_, m)| *m == media) {
                return Some(*f);
            }
        }
        None
    }

    /// From a name: `json`, `csv`, `arrow`, `parquet`.
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "arrow" => Some(Format::Arrow),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The media type of the answer.
    pub fn content_type(self) -> &'static str {
        Format::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("application/octet-stream", |(_, m)| m)
    }
}

enum State {
    Json { rows: usize },
    Csv { header_done: bool },
    Arrow(StreamWriter<Vec<u8>>),
    Parquet(ArrowWriter<Vec<u8>>),
}

/// Encodes one result, batch by batch.
pub struct Encoder {
    schema: SchemaRef,
    state: Option<State>,
}

fn encode_err(e: impl Into<crate::error::Cause>) -> Error {
    Error::execute("encoding the result", e)
}

impl Encoder {
    /// An encoder and the first bytes of the body.
    pub fn new(format: Format, schema: SchemaRef) -> Result<(Encoder, Vec<u8>)> {
        let mut head = Vec::new();
        let state = match format {
            Format::Json => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let types: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| f.data_type().to_string())
                    .collect();
                head.extend_from_slice(b"{\"columns\":");
                head.extend(serde_json::to_vec(&names).map_err(encode_err)?);
                head.extend_from_slice(b",\"types\":");
                head.extend(serde_json::to_vec(&types).map_err(encode_err)?);
                head.extend_from_slice(b",\"rows\":[");
                State::Json { rows: 0 }
            }
            Format::Csv => State::Csv { header_done: false },
            Format::Arrow => {
                let mut w = StreamWriter::try_new(Vec::new(), &schema).map_err(encode_err)?;
                head = std::mem::take(w.get_mut());
                State::Arrow(w)
            }
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                let w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
                    .map_err(encode_err)?;
                State::Parquet(w)
            }
        };
        Ok((
            Encoder {
                schema,
                state: Some(state),
            },
            head,
        ))
    }

    /// The bytes of one more batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        match self.state.as_mut() {
            Some(State::Json { rows }) => {
                for r in 0..batch.num_rows() {
                    if *rows > 0 {
                        out.push(b',');
                    }
                    *rows += 1;
                    let row: Vec<serde_json::Value> =
                        batch.columns().iter().map(|c| cell(c, r)).collect();
                    out.extend(serde_json::to_vec(&row).map_err(encode_err)?);
                }
            }
            Some(State::Csv { header_done }) => {
                let mut w = CsvWriterBuilder::new()
                    .with_header(!*header_done)
                    .build(&mut out);
                w.write(batch).map_err(encode_err)?;
                drop(w);
                *header_done = true;
            }
            Some(State::Arrow(w)) => {
                w.write(batch).map_err(encode_err)?;
                out = std::mem::take(w.get_mut());
            }
            Some(State::Parquet(w)) => {
                w.write(batch).map_err(encode_err)?;
                out = std::mem::take(w.inner_mut());
            }
            None => {}
        }
        Ok(out)
    }

    /// The last bytes of a complete body.
    pub fn finish(&mut self) -> Result<Vec<u8>> {
        match self.state.take() {
            Some(State::Json { .. }) => Ok(b"]}".to_vec()),
            Some(State::Csv { header_done }) => {
                if header_done {
                    return Ok(Vec::new());
                }
                // No rows: still the header.
                let names: Vec<&str> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                Ok(format!("{}\n", names.join(",")).into_bytes())
            }
            Some(State::Arrow(mut w)) => {
                w.finish().map_err(encode_err)?;
                Ok(std::mem::take(w.get_mut()))
            }
            Some(State::Parquet(w)) => w.into_inner().map_err(encode_err),
            None => Ok(Vec::new()),
        }
    }

    /// For a failure after the body started: the JSON body ends with an `error`
    /// object (still valid JSON); the other formats have no way to say it, so the
    /// caller must abort the body instead (`None`).
    pub fn fail(&mut self, error: &Error) -> Option<Vec<u8>> {
        match self.state.take() {
            Some(State::Json { .. }) => {
                let e = serde_json::json!({"code": error.code(), "message": error.to_string()});
                let mut out = b"],\"error\":".to_vec();
                out.extend(serde_json::to_vec(&e).ok()?);
                out.push(b'}');
                Some(out)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_format() {
        assert_eq!(Format::from_accept(None), Some(Format::Json));
        assert_eq!(Format::from_accept(Some("*/*")), Some(Format::Json));
        assert_eq!(
            Format::from_accept(Some("text/csv; charset=utf-8")),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_accept(Some("image/png, application/vnd.apache.parquet")),
            Some(Format::Parquet)
        );
        assert_eq!(Format::from_accept(Some("image/png")), None);
    }
}
