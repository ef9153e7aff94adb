//! The one place where outcomes and errors become HTTP statuses and JSON bodies, for
//! every surface: the Cedar-native API, AuthZEN, the gateway and the admin endpoints.
//! Domain modules return typed errors and outcomes; only this file knows which status
//! each one gets.

use http::StatusCode;
use serde::Serialize;

use crate::authzen::AuthzenError;
use crate::decision::{Outcome, RequestError};
use crate::gateway::Verdict;
use crate::plan::PlanError;

/// The code of a request whose body did not arrive in time.
pub const BODY_TIMEOUT: &str = "body_timeout";

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

/// The body of an error: `{"error": code, "message": ...}`.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::to_string(&Body {
        error: code,
        message,
    })
    .unwrap_or_else(|_| String::from(r#"{"error":"internal","message":"unencodable error"}"#))
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

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "`Content-Type` must be `application/json`",
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            BODY_TIMEOUT,
            format!(
                "request body did not arrive within {} s (`--body-read-timeout-secs`)",
                limit.as_secs()
            ),
        )
    }

    pub fn batch_too_large(field: &str, count: usize, limit: usize) -> Self {
        Self::bad_request(
            "batch_too_large",
            format!("`{field}` holds {count} requests; the limit is {limit}"),
        )
    }

    /// Prefixes the message with where in a batch the problem is.
    pub fn at(mut self, location: &str) -> Self {
        self.message = format!("{location}: {}", self.message);
        self
    }

    pub fn body(&self) -> String {
        error_body(self.code, &self.message)
    }
}

/// A Cedar-native request error, named with Cedar's field names.
impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        Self::bad_request(e.code(), e.to_string())
    }
}

/// The status of a decision outcome that is not an answer of its own: `None` when the
/// outcome is answered as a decision (Cedar's, or a Deny carrying the problem).
pub fn outcome_error(outcome: &Outcome) -> Option<ApiError> {
    match outcome {
        Outcome::StoreUnavailable(m) => Some(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "entity_store_unavailable",
            m.clone(),
        )),
        Outcome::DescriptionInvalid(m) => {
            Some(ApiError::bad_request("invalid_properties", m.clone()))
        }
        Outcome::Decided(_)
        | Outcome::DataInvalid { .. }
        | Outcome::Undecidable(_)
        | Outcome::MissingEntity { .. }
        | Outcome::DepthExceeded { .. } => None,
    }
}

impl From<&AuthzenError> for ApiError {
    fn from(e: &AuthzenError) -> Self {
        let status = match e {
            AuthzenError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // The spec answers every malformed request with 400.
            AuthzenError::Wire(_)
            | AuthzenError::Request(_)
            | AuthzenError::UnknownType { .. }
            | AuthzenError::UnknownAction { .. }
            | AuthzenError::Convert(_)
            | AuthzenError::InvalidProperties(_)
            | AuthzenError::InvalidPageToken { .. }
            | AuthzenError::BatchTooLarge { .. } => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<AuthzenError> for ApiError {
    fn from(e: AuthzenError) -> Self {
        ApiError::from(&e)
    }
}

/// A query plan's error: the caller's request, or a service that cannot plan.
impl From<&PlanError> for ApiError {
    fn from(e: &PlanError) -> Self {
        let status = match e {
            PlanError::Field { .. } | PlanError::Request(_) => StatusCode::BAD_REQUEST,
            // Only for a caller that asks for the snapshot's own data where there is none.
            PlanError::NoEntityData => StatusCode::NOT_IMPLEMENTED,
            PlanError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PlanError::Entities(_) | PlanError::Evaluation(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// How a gateway verdict is answered: status, error code and message (the code and
/// message are `None` for an allow, whose body the handler writes).
pub fn verdict_status(v: &Verdict) -> (StatusCode, Option<(&'static str, String)>) {
    match v {
        Verdict::Allow { .. } | Verdict::AllowUnmatched => (StatusCode::OK, None),
        Verdict::Deny { code, message } => (StatusCode::FORBIDDEN, Some((code, message.clone()))),
        Verdict::Unauthenticated(e) => (StatusCode::UNAUTHORIZED, Some((e.code(), e.to_string()))),
        // A configuration problem of the service, not the caller's.
        Verdict::NotConfigured(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some((e.code(), e.to_string())),
        ),
        Verdict::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some((
                "entity_store_unavailable",
                "entity data is unavailable; the request is denied".to_string(),
            )),
        ),
        // A proxy denies on a 400 from its authorizer (nginx answers its client 500):
        // right for a proxy whose configuration does not name the request. A request
        // that merely cannot be matched is a `Deny`, answered 403.
        Verdict::BadCheck(e) => (
            StatusCode::BAD_REQUEST,
            Some(("invalid_forward_auth_request", e.to_string())),
        ),
    }
}

/// The gRPC status of a gateway verdict, carried in an Envoy gRPC check's answer next
/// to the HTTP status [`verdict_status`] gives. Every verdict but an allow is an answer
/// with a non-OK status (a deny to Envoy), never a failed call: Envoy may be configured
/// to let requests through when the call itself fails (`failure_mode_allow`).
pub fn verdict_grpc_code(v: &Verdict) -> tonic::Code {
    match v {
        Verdict::Allow { .. } | Verdict::AllowUnmatched => tonic::Code::Ok,
        Verdict::Deny { .. } => tonic::Code::PermissionDenied,
        Verdict::Unauthenticated(_) => tonic::Code::Unauthenticated,
        Verdict::NotConfigured(_) | Verdict::Unavailable(_) => tonic::Code::Unavailable,
        Verdict::BadCheck(_) => tonic::Code::InvalidArgument,
    }
}

/// A gRPC call that failed before its message could be decided (its body was too
/// large, too slow, or it named no service here): the status it ends with.
pub fn grpc_status(e: &ApiError) -> tonic::Status {
    let code = match e.status {
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        StatusCode::REQUEST_TIMEOUT => tonic::Code::DeadlineExceeded,
        StatusCode::NOT_FOUND => tonic::Code::Unimplemented,
        _ => tonic::Code::InvalidArgument,
    };
    tonic::Status::new(code, e.message.clone())
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
