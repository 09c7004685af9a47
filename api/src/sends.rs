//! `POST /v1/sends` and `GET /v1/sends/{request_id}`: parse, authorise, gather what
//! the sender needs from the lake (the suppression list in effect; for free-form
//! messages each recipient's latest inbound message), call
//! [`chatlake_send::Sender`], encode. Every decision is the sender's.

use crate::auth::{Caller, Marketers};
use crate::{ApiResult, AppState, St, body};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chatlake_model::Ts;
use chatlake_send::request::SendRequest;
use std::collections::HashMap;

/// `POST /v1/sends`.
pub(crate) async fn post(
    _: Caller<Marketers>,
    State(s): St,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = body(&s, b)?;
    let req: SendRequest = crate::json_body(&raw, "the send request is invalid")?;
    let v = req.validate()?;
    let list = crate::suppressions::current(&s).await?;
    let last_inbound = if v.spec.category == "service" {
        last_inbound(&s, &s.sender.recipient_hashes(&v)).await?
    } else {
        HashMap::new()
    };
    let accepted = s.sender.submit(v, &*list, &last_inbound).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
}

/// The latest inbound message per recipient (for the service window).
async fn last_inbound(s: &AppState, hashes: &[String]) -> ApiResult<HashMap<String, Ts>> {
    // Phone hashes are 64 hex digits (ours), so they are safe as literals.
    let list: Vec<String> = hashes.iter().map(|h| format!("'{h}'")).collect();
    let sql = format!(
        "SELECT phone_hash, CAST(MAX(ts) AS BIGINT) FROM v_inbound WHERE phone_hash IN ({}) GROUP BY phone_hash",
        list.join(",")
    );
    let q = s.engine.query(&sql).await?;
    let mut out = HashMap::new();
    for b in q.collect().await? {
        for r in 0..b.num_rows() {
            let h = chatlake_sql::json::cell(b.column(0), r);
            let t = chatlake_sql::json::cell(b.column(1), r);
            if let (Some(h), Some(t)) = (h.as_str(), t.as_i64()) {
                out.insert(h.to_owned(), Ts(t));
            }
        }
    }
    Ok(out)
}

/// `GET /v1/sends/{request_id}`.
pub(crate) async fn get(
    _: Caller<Marketers>,
    State(s): St,
    Path(request_id): Path<String>,
) -> ApiResult {
    Ok(axum::Json(s.sender.status(&request_id)?).into_response())
}
