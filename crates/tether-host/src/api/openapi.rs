//! The API's OpenAPI document, generated from the handlers' annotations
//! and the types they take and return (utoipa), served at
//! `/api/openapi.json` and kept in `docs/openapi.json` (a test fails when
//! that file is stale).

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{clients, connections, sse, webhooks};

/// Every error answer: `{"error": code, "detail": text}`, with more fields
/// for some codes (`current_version` for 412, `retry_after_secs` and sizes
/// for 429).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid`, `not_found`, `duplicate_key`, `not_open`,
    /// `closing`, `buffer_full`, `outbox_full`, `unauthorized`, …
    pub error: String,
    /// What happened and what to do, in words.
    pub detail: String,
    /// The id of the request, on 500 answers (it is in the log too).
    pub request_id: Option<String>,
}

/// The answer to a send: queued in memory, or stored in the outbox.
#[derive(Serialize, ToSchema)]
pub struct SendAnswer {
    /// A plain send: handed to the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<bool>,
    /// A durable send: on disk before this answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<bool>,
    /// Its place in the client's outbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The message id (yours, or a generated one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// True when this id was stored before: nothing new was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

impl SendAnswer {
    /// A plain send.
    pub fn queued() -> Self {
        SendAnswer {
            queued: Some(true),
            durable: None,
            seq: None,
            id: None,
            duplicate: None,
        }
    }

    /// A stored durable send.
    pub fn stored(stored: crate::outbox::Stored) -> Self {
        SendAnswer {
            queued: None,
            durable: Some(true),
            seq: Some(stored.seq),
            id: Some(stored.id),
            duplicate: Some(stored.duplicate),
        }
    }
}

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tether management API",
        description = "Manage WebSocket client instances. Every route but /healthz needs 'Authorization: Bearer <admin token>'. Errors are {\"error\": code, \"detail\": text}. Bodies over 1 MiB get 413."
    ),
    modifiers(&BearerToken),
    security(("admin_token" = [])),
    paths(
        super::healthz,
        super::metrics,
        super::openapi_json,
        clients::types,
        clients::list,
        clients::create,
        clients::show,
        clients::update,
        clients::delete,
        clients::connect,
        clients::disconnect,
        clients::send,
        clients::outbox,
        clients::outbox_purge,
        clients::outbox_retry,
        clients::history,
        clients::audit,
        super::cluster::show,
        sse::client_events,
        sse::all_events,
        connections::list,
        connections::open,
        connections::show,
        connections::close,
        connections::send,
        webhooks::list,
        webhooks::dead,
        webhooks::replay,
    ),
    components(schemas(ErrorBody, SendAnswer))
)]
pub struct ApiDoc;

/// The document as JSON, pretty-printed (what `docs/openapi.json` holds).
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}"))
}

/// Every documented (method, path), for the test that compares them with
/// the router's.
pub fn documented_routes() -> Vec<(String, String)> {
    let doc = ApiDoc::openapi();
    let mut routes = Vec::new();
    for (path, item) in doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PATCH", &item.patch),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ] {
            if op.is_some() {
                routes.push((method.to_string(), path.clone()));
            }
        }
    }
    routes.sort();
    routes
}

/// `GET /api/openapi.json`.
pub(super) fn json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
