//! The one place where errors become HTTP statuses and the JSON error body of docs/api.md ("Errors"):
//! `{"error": {"code": "<snake_case>", "message": "<sentence>"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chatlake_ingest::{Error as IngestError, ErrorKind};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields in the error object (e.g. `record`, `field`).
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown API key (Authorization: Bearer <key>)",
        )
    }
    pub fn forbidden(need: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this key's role may not do this; it needs {need}"),
        )
    }
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {limit} bytes"),
        )
    }
}

/// The status for each kind of failure: the only such mapping in chatlake.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::TimedOut => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// The answer for an error of kind `kind`; server errors are logged here.
    fn of(
        kind: ErrorKind,
        code: &'static str,
        e: &dyn std::fmt::Display,
        detail: Option<serde_json::Value>,
    ) -> ApiError {
        let status = status_of(kind);
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError {
            status,
            code,
            message: e.to_string(),
            detail,
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        let detail = match &e {
            IngestError::InvalidRecord { index, field, .. } => {
                Some(json!({"record": index, "field": field}))
            }
            _ => None,
        };
        ApiError::of(e.kind(), e.code(), &e, detail)
    }
}

impl From<chatlake_sql::Error> for ApiError {
    fn from(e: chatlake_sql::Error) -> ApiError {
        let detail = match &e {
            chatlake_sql::Error::InvalidRequest { param, .. } => Some(json!({"param": param})),
            _ => None,
        };
        ApiError::of(e.kind(), e.code(), &e, detail)
    }
}

impl From<chatlake_send::Error> for ApiError {
    fn from(e: chatlake_send::Error) -> ApiError {
        let detail = match &e {
            chatlake_send::Error::InvalidSend { field, .. } => Some(json!({"field": field})),
            _ => None,
        };
        ApiError::of(e.kind(), e.code(), &e, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.detail, err.as_object_mut())
        {
            obj.extend(extra);
        }
        (self.status, Json(json!({ "error": err }))).into_response()
    }
}
