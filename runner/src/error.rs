//! The runner's API errors and their one mapping to a `service_kit`
//! [`ErrorCode`], which fixes the status: every 4xx/5xx body is
//! `{error, message, code}`, with the backend's codes and statuses.

use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use service_kit::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The request cannot be read: malformed JSON, an unknown or missing
    /// field, a value of the wrong type, a malformed header.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request was read, and a value in it was refused.
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    /// The request asks for more than the operator's configuration allows.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// A control the run did not take; the body's `reason` says why in the
    /// protocol's words.
    #[error("{0}")]
    Refused(runner_protocol::ControlRefusal),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::Validation(_) => ErrorCode::ValidationError,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::Refused(runner_protocol::ControlRefusal::NoSuchApproval) => {
                ErrorCode::NotFound
            }
            ApiError::Refused(_) => ErrorCode::Conflict,
            ApiError::TooMany(_) => ErrorCode::TooManyRequests,
            ApiError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.code().status()
    }

    fn as_response(&self) -> Response {
        if let ApiError::Internal(error) = self {
            tracing::error!(error.cause_chain = ?error, "internal error");
        }
        if let ApiError::Refused(reason) = self {
            let code = self.code();
            let body = serde_json::json!({
                "error": code.reason(),
                "message": self.to_string(),
                "code": code.as_str(),
                "reason": reason,
            });
            return (code.status(), poem::web::Json(body)).into_response();
        }
        let mut response = service_kit::error_response(self.code(), self.to_string());
        if let ApiError::TooLarge(_) = self {
            // The rest of the body is left unread, so the connection cannot
            // carry another request: say so, or a client may reuse it.
            response.headers_mut().insert(
                poem::http::header::CONNECTION,
                poem::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// Maps any error that reached the top of the app to the JSON schema: ours
/// by their own mapping, poem's by `service_kit::json_error`.
pub(crate) async fn catch_all(error: poem::Error) -> Response {
    if let Some(api) = error.downcast_ref::<ApiError>() {
        return api.as_response();
    }
    service_kit::json_error(error).await
}

pub(crate) type Result<T> = std::result::Result<T, ApiError>;
