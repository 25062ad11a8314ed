//! The runner's API errors and their one mapping to HTTP: every 4xx/5xx body
//! is `{error, message, code, detail?}`.

use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::Response;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    /// The request asks for more than the operator's configuration allows.
    #[error("{0}")]
    Forbidden(String),
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
            ApiError::Forbidden(_) => "forbidden",
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
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
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
        let mut response =
            service_kit::error_response(self.status(), self.to_string(), self.code());
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
pub async fn catch_all(error: poem::Error) -> Response {
    if let Some(api) = error.downcast_ref::<ApiError>() {
        return api.as_response();
    }
    service_kit::json_error(error).await
}

pub type Result<T> = std::result::Result<T, ApiError>;
