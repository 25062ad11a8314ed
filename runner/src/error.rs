//! The runner's API errors and their one mapping to HTTP: every 4xx/5xx body
//! is `{error, message, code, detail?}`.

use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use serde::Serialize;

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The HTTP reason phrase, e.g. `Not Found`.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// A stable machine code, e.g. `not_found`.
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_error",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooMany(_) => "too_many_requests",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        if let ApiError::Internal(error) = self {
            tracing::error!(error.cause_chain = ?error, "internal error");
        }
        error_response(self.status(), self.to_string(), self.code())
    }
}

/// The JSON error response for a status; used for errors poem raises itself
/// (bad JSON, unknown route, body too large) as well as ours.
pub fn error_response(status: StatusCode, message: String, code: &'static str) -> Response {
    let body = ErrorBody {
        error: status.canonical_reason().unwrap_or("Error").to_owned(),
        message,
        code,
        detail: None,
    };
    (status, poem::web::Json(body)).into_response()
}

/// Maps any error that reached the top of the app to the JSON schema.
pub async fn catch_all(error: poem::Error) -> Response {
    if let Some(api) = error.downcast_ref::<ApiError>() {
        return api.as_response();
    }
    let status = error.status();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let message = if status.is_server_error() {
        tracing::error!(%error, "unhandled error");
        "internal error".to_owned()
    } else {
        error.to_string()
    };
    error_response(status, message, code)
}

pub type Result<T> = std::result::Result<T, ApiError>;
