//! The one place where errors become HTTP statuses and JSON bodies.

use http::StatusCode;
use serde::Serialize;

use crate::decision::RequestError;

/// An error answered to the caller: a status, a stable code and a message that names
/// what was wrong. Never carries internals.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint at `{path}`"),
        )
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("`{path}` does not accept `{method}`"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "entity_store_unavailable",
            message,
        )
    }

    /// Prefixes the message with where in a batch the problem is.
    pub fn at(mut self, location: &str) -> Self {
        self.message = format!("{location}: {}", self.message);
        self
    }

    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            error: self.code,
            message: &self.message,
        })
        .unwrap_or_else(|_| String::from(r#"{"error":"internal","message":"unencodable error"}"#))
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        Self::bad_request(e.code(), e.to_string())
    }
}

/// A JSON body that failed to decode: a syntax error or a shape error, both named.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => ApiError::bad_request("invalid_request", e.to_string()),
        _ => ApiError::bad_request(
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        ),
    }
}
