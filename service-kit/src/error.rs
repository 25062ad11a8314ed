//! The error contract of every service: one table of machine codes, each
//! with the one status it is answered with, and the JSON body
//! `{error, message, code}` built from it.
//!
//! A code is never spelled by hand in a service: the runner, the backend
//! and the frontend-proxy name an [`ErrorCode`], so the same code cannot
//! mean two statuses.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};

/// A stable machine code of the error schema. Its status is fixed by
/// [`ErrorCode::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the request cannot be read: malformed JSON, an unknown or
    /// missing field, a value of the wrong type, a bad path, parameter or
    /// header.
    BadRequest,
    /// 401: the request lacks the credentials this service asks for (the
    /// runner's `RUNNER_TOKEN`).
    Unauthorized,
    /// 403: the request asks for more than the configuration allows (the
    /// runner's sandbox limits), or comes from an origin `CORS_ORIGINS`
    /// does not list.
    Forbidden,
    /// 404: no such route or resource.
    NotFound,
    /// 405: the path exists but does not answer this method; the response
    /// carries `Allow`.
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    Conflict,
    /// 413: the body (or the file asked for) is too large.
    PayloadTooLarge,
    /// 414: the URL is longer than `HTTP_MAX_URL_BYTES`.
    UriTooLong,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 421: the `Host` is not this service's (DNS rebinding).
    HostNotAllowed,
    /// 422: the request was read, and a value in it was refused.
    ValidationError,
    /// 429: a limit on concurrent work was reached.
    TooManyRequests,
    /// 431: the headers are larger than `HTTP_MAX_HEADER_BYTES`.
    HeadersTooLarge,
    /// 500: something failed on our side; the log says what.
    InternalError,
    /// 502: the frontend-proxy cannot reach the backend.
    BackendUnavailable,
    /// 503: a dependency (Postgres, the runner) is not ready.
    NotReady,
    /// 503: the service holds as many connections as it may.
    TooManyConnections,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::HostNotAllowed,
        ErrorCode::ValidationError,
        ErrorCode::TooManyRequests,
        ErrorCode::HeadersTooLarge,
        ErrorCode::InternalError,
        ErrorCode::BackendUnavailable,
        ErrorCode::NotReady,
        ErrorCode::TooManyConnections,
    ];

    /// The code as it appears in the body's `code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::ValidationError => "validation_error",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::TooManyConnections => "too_many_connections",
        }
    }

    /// The one status this code is answered with, in every service.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BackendUnavailable => StatusCode::BAD_GATEWAY,
            ErrorCode::NotReady | ErrorCode::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The body's `error`: the status's reason phrase.
    pub fn reason(self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }

    /// The code for an error poem raised itself with `status` (unknown
    /// route, wrong method, unreadable body).
    fn for_poem_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::NotReady,
            s if s.is_server_error() => ErrorCode::InternalError,
            _ => ErrorCode::BadRequest,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error schema of every service: `{error, message, code}`, `error`
/// being the reason phrase of the code's status.
pub fn error_response(code: ErrorCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "error": code.reason(),
        "message": message.into(),
        "code": code.as_str(),
    });
    (code.status(), poem::web::Json(body)).into_response()
}

/// For `catch_all_error`: an error that already carries its response (a
/// service's own error type) passes as it is; an error poem raised itself
/// (unknown route, wrong method, unreadable body) gets the JSON schema. A
/// 500 says nothing inside; the log says everything.
pub async fn json_error(error: poem::Error) -> Response {
    let status = error.status();
    // Not an error to the client: a `304 Not Modified` (static files
    // answer an `If-None-Match` with it) passes as poem made it.
    if error.is_from_response() || !(status.is_client_error() || status.is_server_error()) {
        return error.into_response();
    }
    let code = ErrorCode::for_poem_status(status);
    if status.is_server_error() {
        tracing::error!(%error, "unhandled error");
        return error_response(code, "internal error");
    }
    // A client error our table does not name (a 411, say) is answered as
    // what it is to us, a request we cannot read: 400 `bad_request`, so
    // that a code never stands for two statuses.
    error_response(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_spelled_once_and_is_an_error_status() {
        let mut spelled: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        spelled.sort_unstable();
        spelled.dedup();
        assert_eq!(spelled.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code}"
            );
        }
        assert_eq!(
            ErrorCode::ValidationError.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(ErrorCode::BadRequest.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn poem_statuses_map_to_codes_of_that_status() {
        for status in [403, 404, 405, 413, 415, 503, 500] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(ErrorCode::for_poem_status(status).status(), status);
        }
    }
}
