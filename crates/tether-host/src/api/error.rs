//! The API's one error type: a status and a stable JSON body,
//! `{"error": "<code>", "detail": "<what happened and what to do>"}`.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::host::HostError;
use crate::store::StoreError;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// 401.
    pub fn unauthorized(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 400.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": self.code, "detail": self.detail})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let detail = e.to_string();
        match e {
            HostError::UnknownType(_) => Self::new(StatusCode::BAD_REQUEST, "unknown_type", detail),
            HostError::Invalid(_) => Self::invalid(detail),
            HostError::Duplicate(_) => Self::new(StatusCode::CONFLICT, "duplicate_key", detail),
            HostError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", detail),
            HostError::Predefined(_) => Self::new(StatusCode::CONFLICT, "predefined", detail),
            HostError::NotOpen(_) => Self::new(StatusCode::CONFLICT, "not_open", detail),
            HostError::Store(StoreError::Duplicate(_)) => {
                Self::new(StatusCode::CONFLICT, "duplicate_key", detail)
            }
            HostError::Store(_) => {
                tracing::error!(error = %detail, "store failure");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "store", detail)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let detail = r.body_text();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                status,
                "payload_too_large",
                "the request body is over 1 MiB",
            )
        } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            Self::new(
                status,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            )
        } else {
            Self::new(StatusCode::BAD_REQUEST, "bad_json", detail)
        }
    }
}
