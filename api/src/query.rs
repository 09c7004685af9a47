//! The Query routes of docs/api.md: `GET /v1/metrics`, `GET /v1/metrics/catalog` and
//! `POST /v1/sql` (streamed in the format `Accept` asks for).

use crate::auth::{Analysts, Caller, Readers};
use crate::error::ApiError;
use crate::{ApiResult, St, body};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chatlake_sql::catalog::{DIMENSIONS, TIME_BUCKETS};
use chatlake_sql::{Encoder, Format, MetricsRequest, UserQuery};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

/// `GET /v1/metrics?metrics=&from=&to=&group_by=`.
pub(crate) async fn metrics(
    _: Caller<Readers>,
    State(s): St,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let get = |k: &str| q.get(k).map(String::as_str);
    let req = MetricsRequest::parse(get("metrics"), get("from"), get("to"), get("group_by"))?;
    let rows = s.engine.metrics(&req).await?;
    Ok(axum::Json(json!({ "rows": rows })).into_response())
}

/// `GET /v1/metrics/catalog`.
pub(crate) async fn catalog(_: Caller<Readers>, State(s): St) -> ApiResult {
    let cat = s.engine.catalog();
    let mut dimensions: Vec<serde_json::Value> = TIME_BUCKETS
        .iter()
        .map(|(n, d)| json!({"name": n, "definition": d, "time_bucket": true}))
        .collect();
    dimensions.extend(
        DIMENSIONS
            .iter()
            .map(|(n, d)| json!({"name": n, "definition": d, "time_bucket": false})),
    );
    let units: Vec<_> = cat.units.iter().collect();
    Ok(axum::Json(json!({
        "metrics": cat.metrics,
        "dimensions": dimensions,
        "units": units,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

/// `POST /v1/sql` `{"sql": "..."}`.
pub(crate) async fn sql(
    _: Caller<Analysts>,
    State(s): St,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept).ok_or_else(|| {
        let valid: Vec<&str> = Format::ALL.iter().map(|(_, m)| *m).collect();
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!(
                "cannot answer in `{}`; ask for one of: {}",
                accept.unwrap_or(""),
                valid.join(", ")
            ),
        )
    })?;
    let raw = body(&s, b)?;
    let req: SqlRequest = crate::json_body(&raw, "the body must be {\"sql\": \"<query>\"}")?;
    let query = s.engine.query(&req.sql).await?;
    let (encoder, head) = Encoder::new(format, query.schema())?;
    let stream = futures_util::stream::unfold(
        Stream {
            query,
            encoder,
            head: Some(head),
            done: false,
        },
        next_chunk,
    );
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(stream),
    )
        .into_response())
}

struct Stream {
    query: UserQuery,
    encoder: Encoder,
    head: Option<Vec<u8>>,
    done: bool,
}

async fn next_chunk(mut st: Stream) -> Option<(Result<Bytes, std::io::Error>, Stream)> {
    if let Some(h) = st.head.take() {
        return Some((Ok(Bytes::from(h)), st));
    }
    if st.done {
        return None;
    }
    loop {
        match st.query.next().await {
            Some(Ok(batch)) => match st.encoder.batch(&batch) {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Some((Ok(Bytes::from(bytes)), st)),
                Err(e) => return fail(st, e),
            },
            Some(Err(e)) => return fail(st, e),
            None => {
                st.done = true;
                return match st.encoder.finish() {
                    Ok(bytes) => Some((Ok(Bytes::from(bytes)), st)),
                    Err(e) => fail(st, e),
                };
            }
        }
    }
}

/// A failure after the answer started: JSON ends with an `error` object; the other
/// formats abort the body, so the client sees a broken transfer, never a short file
/// that looks complete.
fn fail(mut st: Stream, e: chatlake_sql::Error) -> Option<(Result<Bytes, std::io::Error>, Stream)> {
    tracing::warn!(error = %e, "query stopped while streaming");
    st.done = true;
    match st.encoder.fail(&e) {
        Some(bytes) => Some((Ok(Bytes::from(bytes)), st)),
        None => Some((Err(std::io::Error::other(e.to_string())), st)),
    }
}
