//! The one error type of the API, declared in the spec for every operation:
//! every 4xx/5xx body is `{error, message, code, detail?}`.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ErrorBody {
    /// The HTTP reason phrase, e.g. `Not Found`.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// A stable machine code: `bad_request`, `validation_error`, `not_found`,
    /// `conflict`, `payload_too_large`, `internal_error`, `not_ready`.
    pub code: String,
    /// Extra structured information, when there is any.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ApiError {
    /// The request is malformed (bad JSON, bad path, bad parameter).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No such session, run or file.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body or the file is too large.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// A value was refused (repo_url, ref, depth, prompt).
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// Something failed on our side; the log says what.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// A dependency is not ready.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(error: &str, code: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: error.to_owned(),
        message: message.into(),
        code: code.to_owned(),
        detail: None,
    })
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(body("Bad Request", "bad_request", message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(body("Not Found", "not_found", message))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(body("Conflict", "conflict", message))
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::PayloadTooLarge(body("Payload Too Large", "payload_too_large", message))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Unprocessable(body("Unprocessable Entity", "validation_error", message))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(body("Service Unavailable", "not_ready", message))
    }

    /// A 500 says nothing inside; the log says everything.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error.cause_chain = ?ErrorChain(error), "internal error");
        Self::Internal(body(
            "Internal Server Error",
            "internal_error",
            "internal error",
        ))
    }
}

struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Pool(_) => {
                tracing::error!(%error, "database unavailable");
                Self::unavailable("the database is unavailable; try again shortly")
            }
            other => Self::internal(&other),
        }
    }
}

/// Request parse errors (bad JSON, a missing field, a bad parameter).
fn bad_request(error: poem::Error) -> ApiError {
    if error.status() == poem::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::too_large(error.to_string());
    }
    ApiError::bad_request(error.to_string())
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Errors raised outside the OpenAPI operations (unknown route, wrong
/// method, body limit) get the same JSON body; ours pass as they are.
pub use service_kit::json_error as catch_all;
