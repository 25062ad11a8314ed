//! The one error type of the API, declared in the spec for every operation:
//! every 4xx/5xx body is `{error, message, code}`. The codes and their
//! statuses are `service_kit`'s table, the same as the runner's.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use service_kit::ErrorCode;

use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ErrorBody {
    /// The HTTP reason phrase, e.g. `Not Found`.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// A stable machine code, one per status: `bad_request` (400),
    /// `unauthorized` (401), `forbidden` (403), `not_found` (404),
    /// `method_not_allowed` (405), `conflict` (409), `payload_too_large`
    /// (413), `uri_too_long` (414), `unsupported_media_type` (415),
    /// `host_not_allowed` (421), `validation_error` (422),
    /// `too_many_requests` (429), `headers_too_large` (431),
    /// `internal_error` (500), `not_ready` or `too_many_connections` (503).
    pub code: String,
}

/// Every error status of the API. Some are answered before an operation
/// runs (405, 414, 415, 421, 431, 403, 503 `too_many_connections`); they are
/// declared here all the same, so a client generated from the spec knows
/// them.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ApiError {
    /// The request cannot be read: malformed JSON, an unknown or missing
    /// field, a value of the wrong type, a bad path, parameter or header.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No credentials, or credentials that sign nobody in: a missing, wrong
    /// or revoked API token, or an expired sign-in cookie.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer`: how to authenticate.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// A cross-origin request from an origin `CORS_ORIGINS` does not list,
    /// or a state-changing request made with the sign-in cookie from
    /// another origin (CSRF).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such session, run or file.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The path does not answer this method; `Allow` lists those it does.
    #[oai(status = 405)]
    MethodNotAllowed(
        Json<ErrorBody>,
        /// The methods the path answers, e.g. `GET, HEAD, POST`.
        #[oai(header = "Allow")]
        String,
    ),
    /// The request conflicts with the current state.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body or the file is too large.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The URL is longer than `HTTP_MAX_URL_BYTES`.
    #[oai(status = 414)]
    UriTooLong(Json<ErrorBody>),
    /// The request body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The `Host` is not this server's (see `ALLOWED_HOSTS`).
    #[oai(status = 421)]
    MisdirectedRequest(Json<ErrorBody>),
    /// The request was read, and a value in it was refused (repo_url, ref,
    /// depth, prompt).
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// A per-user limit is reached (sessions, runs at once, workspace
    /// bytes, open event streams), or a request rate limit (per address or
    /// per user), which says when to try again.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds to wait before the next request (rate limits only).
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
    /// The headers are larger than `HTTP_MAX_HEADER_BYTES`.
    #[oai(status = 431)]
    HeadersTooLarge(Json<ErrorBody>),
    /// Something failed on our side; the log says what.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// A dependency is not ready, or the server holds as many connections
    /// as it may.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(code: ErrorCode, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: code.reason().to_owned(),
        message: message.into(),
        code: code.as_str().to_owned(),
    })
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(body(ErrorCode::BadRequest, message))
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(body(ErrorCode::Unauthorized, message), "Bearer".into())
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(body(ErrorCode::Forbidden, message))
    }

    pub(crate) fn too_many(message: impl Into<String>) -> Self {
        Self::TooManyRequests(body(ErrorCode::TooManyRequests, message), None)
    }

    /// A rate limit: 429 with `Retry-After: secs`.
    pub(crate) fn rate_limited(secs: u64, message: impl Into<String>) -> Self {
        Self::TooManyRequests(body(ErrorCode::TooManyRequests, message), Some(secs))
    }

    /// The `Retry-After` of a rate limit's 429.
    #[cfg(test)]
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests(_, secs) => *secs,
            _ => None,
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(body(ErrorCode::NotFound, message))
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(body(ErrorCode::Conflict, message))
    }

    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::PayloadTooLarge(body(ErrorCode::PayloadTooLarge, message))
    }

    pub(crate) fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::UnsupportedMediaType(body(ErrorCode::UnsupportedMediaType, message))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Unprocessable(body(ErrorCode::ValidationError, message))
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(body(ErrorCode::NotReady, message))
    }

    /// A 500 says nothing inside; the log says everything.
    pub(crate) fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error.cause_chain = ?ErrorChain(error), "internal error");
        Self::Internal(body(ErrorCode::InternalError, "internal error"))
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

/// Request parse errors (bad JSON, a missing field, a bad parameter, a
/// body that is too large or not JSON).
fn bad_request(error: poem::Error) -> ApiError {
    match error.status() {
        s if s == ErrorCode::PayloadTooLarge.status() => ApiError::too_large(error.to_string()),
        s if s == ErrorCode::UnsupportedMediaType.status() => {
            ApiError::unsupported_media_type(error.to_string())
        }
        _ => ApiError::bad_request(error.to_string()),
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Errors raised outside the OpenAPI operations (unknown route, wrong
/// method, body limit) get the same JSON body; ours pass as they are.
pub(crate) use service_kit::json_error as catch_all;

#[cfg(test)]
mod tests {
    use poem::IntoResponse;

    use super::*;

    /// Each constructor answers the status its code has in `service_kit`'s
    /// table, and the body says that code.
    #[tokio::test]
    async fn every_error_has_the_status_of_its_code() {
        let io = std::io::Error::other("disk on fire");
        for (error, code) in [
            (ApiError::bad_request("m"), ErrorCode::BadRequest),
            (ApiError::unauthorized("m"), ErrorCode::Unauthorized),
            (ApiError::forbidden("m"), ErrorCode::Forbidden),
            (ApiError::too_many("m"), ErrorCode::TooManyRequests),
            (ApiError::not_found("m"), ErrorCode::NotFound),
            (ApiError::conflict("m"), ErrorCode::Conflict),
            (ApiError::too_large("m"), ErrorCode::PayloadTooLarge),
            (
                ApiError::unsupported_media_type("m"),
                ErrorCode::UnsupportedMediaType,
            ),
            (ApiError::invalid("m"), ErrorCode::ValidationError),
            (ApiError::unavailable("m"), ErrorCode::NotReady),
            (ApiError::internal(&io), ErrorCode::InternalError),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), code.status(), "{code}");
            let body: serde_json::Value =
                serde_json::from_slice(&response.into_body().into_vec().await.unwrap()).unwrap();
            assert_eq!(body["code"], code.as_str());
            assert_eq!(body["error"], code.reason());
        }
    }
}
