//! The API's one error type: a status and a stable JSON body,
//! `{"error": "<code>", "detail": "<what happened and what to do>"}`.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::host::HostError;
use crate::store::{SecretError, StoreError};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// More fields for the body (`current_version`, `request_id`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// Adds a field to the body.
    pub fn with(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra.insert(name.to_string(), value);
        self
    }

    /// 500 for a failure inside the host: the cause goes to the log under a
    /// fresh request id, and only the id goes to the caller.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(request_id = %id, error = %chain, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the host failed; its log has the cause under request id {id}"),
        )
        .with("request_id", json!(id))
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
        let mut body = self.extra;
        body.insert("error".into(), json!(self.code));
        body.insert("detail".into(), json!(self.detail));
        let mut response = (self.status, Json(serde_json::Value::Object(body))).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
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
            HostError::Send { source, .. } => match source {
                tether::SendError::NotOpen => Self::new(StatusCode::CONFLICT, "not_open", detail),
                tether::SendError::Closed => Self::new(StatusCode::CONFLICT, "closing", detail),
                tether::SendError::BufferFull { buffered, limit } => {
                    Self::new(StatusCode::TOO_MANY_REQUESTS, "buffer_full", detail)
                        .with("buffered_bytes", json!(buffered))
                        .with("limit_bytes", json!(limit))
                        .with("retry_after_secs", json!(1))
                }
                _ => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "send_refused", detail),
            },
            HostError::NotOwner { owner, .. } => {
                let e = Self::new(StatusCode::CONFLICT, "not_owner", detail);
                match owner {
                    Some(o) => e.with("owner", json!({"node_id": o.node_id, "addr": o.addr})),
                    None => e,
                }
            }
            HostError::Store(StoreError::Duplicate(_)) => {
                Self::new(StatusCode::CONFLICT, "duplicate_key", detail)
            }
            HostError::Store(StoreError::NotFound(_)) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", detail)
            }
            HostError::Store(StoreError::Conflict { current, .. }) => {
                Self::new(StatusCode::PRECONDITION_FAILED, "version_conflict", detail)
                    .with("current_version", json!(current))
            }
            HostError::Store(StoreError::Secret(SecretError::NoKey { .. })) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "no_secret_key", detail)
            }
            HostError::Store(e) => Self::internal(&e),
            HostError::Outbox(crate::outbox::OutboxError::Full { .. }) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "outbox_full", detail)
                    .with("retry_after_secs", json!(1))
            }
            HostError::Outbox(crate::outbox::OutboxError::Closed) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail)
            }
            HostError::Outbox(e) => Self::internal(&e),
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
