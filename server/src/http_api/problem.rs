//! [`Problem`]: an error as the HTTP API answers it: a status mapped from the gRPC code (and,
//! where one code covers several cases, from its ErrorInfo reason), and a JSON body
//! `{"code":"NOT_FOUND","message":"…"}` with the reason and its metadata when there are any.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::error::code_name;

/// An error answer of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(skip)]
    pub status: StatusCode,
    /// The gRPC code's name, as the proto's docs and every client's errors call it.
    pub code: &'static str,
    pub message: String,
    /// The ErrorInfo reason (REVISION_MISMATCH, PATCH_TEST_FAILED, ...), if the error has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ErrorInfo metadata: `current_mod_revision` of a failed If-Match, say.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub metadata: HashMap<String, String>,
}

impl Problem {
    /// A request the HTTP layer itself refuses, before any call: a malformed header or
    /// query, a body too large.
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Problem {
        Problem {
            status,
            code: code_name(code),
            message: message.into(),
            reason: None,
            metadata: HashMap::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    }
}

impl From<Status> for Problem {
    fn from(status: Status) -> Problem {
        let info = status.get_details_error_info();
        let reason = info.as_ref().map(|info| info.reason.as_str());
        Problem {
            status: http_status(status.code(), reason),
            code: code_name(status.code()),
            message: status.message().to_owned(),
            reason: reason.map(str::to_owned),
            metadata: info.map(|info| info.metadata).unwrap_or_default(),
        }
    }
}

impl From<crate::error::Error> for Problem {
    fn from(err: crate::error::Error) -> Problem {
        Problem::from(Status::from(err))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self).expect("a problem always serializes");
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The HTTP status for a gRPC code. FAILED_PRECONDITION covers a failed If-Match (412) and a
/// patch whose `test` failed (409); INVALID_ARGUMENT an oversized body (413) and any other
/// bad input (400). History already discarded is 410 Gone: the revision asked for will never
/// come back.
pub fn http_status(code: Code, reason: Option<&str>) -> StatusCode {
    match (code, reason) {
        (Code::Ok, _) => StatusCode::OK,
        (Code::InvalidArgument, Some("VALUE_TOO_LARGE")) => StatusCode::PAYLOAD_TOO_LARGE,
        (Code::InvalidArgument, _) => StatusCode::BAD_REQUEST,
        (Code::Unauthenticated, _) => StatusCode::UNAUTHORIZED,
        (Code::PermissionDenied, _) => StatusCode::FORBIDDEN,
        (Code::NotFound, _) => StatusCode::NOT_FOUND,
        (Code::FailedPrecondition, Some("REVISION_MISMATCH" | "STORE_MISMATCH")) => {
            StatusCode::PRECONDITION_FAILED
        }
        (Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition, _) => StatusCode::CONFLICT,
        (Code::OutOfRange, _) => StatusCode::GONE,
        (Code::ResourceExhausted, _) => StatusCode::TOO_MANY_REQUESTS,
        (Code::Unavailable, _) => StatusCode::SERVICE_UNAVAILABLE,
        (Code::DeadlineExceeded, _) => StatusCode::GATEWAY_TIMEOUT,
        (Code::Unimplemented, _) => StatusCode::NOT_IMPLEMENTED,
        // The client went away: nobody reads the answer, but logs should not say 500.
        (Code::Cancelled, _) => StatusCode::from_u16(499).expect("499 is a valid status"),
        (Code::Unknown | Code::Internal | Code::DataLoss, _) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
