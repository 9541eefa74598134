//! The management REST API: JSON over HTTP, Bearer-token auth on every
//! route but `/healthz`, Server-Sent Events for live events.
//! The routes are documented from their handlers (see [`openapi`]): served at
//! `/api/openapi.json` and kept in `docs/openapi.json`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::host::Host;

mod clients;
mod cluster;
mod connections;
mod error;
mod forward;
mod openapi;
pub mod session;
mod sse;
mod ui;
mod webhooks;

pub use error::ApiError;
pub use openapi::{document as openapi_document, documented_routes};

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// Checks Bearer tokens against a SHA-256 hash, in constant time.
#[derive(Clone)]
pub struct TokenCheck {
    hash: [u8; 32],
}

impl TokenCheck {
    /// Accepts exactly `token`.
    pub fn new(token: &str) -> Self {
        TokenCheck {
            hash: sha256(token),
        }
    }

    /// Accepts the token whose SHA-256 hex digest is `hex`.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<_>>()?;
        Some(TokenCheck {
            hash: bytes.try_into().ok()?,
        })
    }

    /// The hex digest, for storing.
    pub fn hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `token` is the admin token.
    pub fn accepts(&self, token: &str) -> bool {
        bool::from(sha256(token).ct_eq(&self.hash))
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The host.
    pub host: Arc<Host>,
    /// The admin token check.
    pub token: TokenCheck,
    /// Web UI sessions.
    pub sessions: session::Sessions,
    /// Serve `/metrics` without a token (only allowed on loopback).
    pub metrics_public: bool,
    /// Cancelled when the host begins to shut down: live event streams end.
    pub stopping: tokio_util::sync::CancellationToken,
    /// An event stream that has been quiet this long gets a comment line,
    /// so proxies do not close it (15 s).
    pub sse_keep_alive: std::time::Duration,
}

impl AppState {
    /// State for `host` guarded by `token`, with no sessions yet.
    pub fn new(host: Arc<Host>, token: TokenCheck) -> Self {
        AppState {
            host,
            token,
            sessions: session::Sessions::default(),
            metrics_public: false,
            stopping: tokio_util::sync::CancellationToken::new(),
            sse_keep_alive: std::time::Duration::from_secs(15),
        }
    }
}

/// A JSON body whose rejections are [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(ApiError::from)
    }
}

/// Who made a change, for the audit log: the `X-Tether-Actor` header
/// (letters, digits, `-_.@`, up to 64) or `api`.
pub fn actor(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-tether-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|a| {
            !a.is_empty()
                && a.len() <= 64
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        })
        .unwrap_or("api")
        .to_string()
}

/// The token of `Authorization: Bearer <token>` (the scheme is matched
/// without regard to case, as RFC 9110 says). The one parser for the API
/// and `/metrics`.
fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim_start();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match bearer_token(request.headers()) {
        Some(t) if state.token.accepts(t) => next.run(request).await,
        Some(_) => ApiError::unauthorized("the admin token is wrong").into_response(),
        None if session::session_id(request.headers()).is_some() => {
            match session::check(&state.sessions, request.method(), request.headers()) {
                Ok(()) => next.run(request).await,
                Err(e) => e.into_response(),
            }
        }
        None => ApiError::unauthorized("send the admin token as 'Authorization: Bearer <token>'")
            .into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "host",
    summary = "Metrics in the OpenMetrics text format; needs the token unless metrics_public = true on a loopback listener",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String), (status = 401, description = "missing or wrong admin token", body = openapi::ErrorBody)))]
async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    if !state.metrics_public {
        let headers = request.headers();
        let bearer_ok = bearer_token(headers).is_some_and(|t| state.token.accepts(t));
        if !bearer_ok && session::check(&state.sessions, request.method(), headers).is_err() {
            return ApiError::unauthorized("send the admin token as 'Authorization: Bearer <token>', or set metrics_public = true on a loopback listener").into_response();
        }
    }
    let body = crate::metrics::render(&state.host).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "host", summary = "This API's OpenAPI document",
    responses((status = 200, description = "OpenAPI 3.1", body = Object), (status = 401, description = "missing or wrong admin token", body = openapi::ErrorBody)))]
async fn openapi_json() -> impl IntoResponse {
    openapi::json()
}

#[utoipa::path(get, path = "/healthz", tag = "host", summary = "Liveness; needs no token", security(()),
    responses((status = 200, description = "ok", body = Object, example = json!({"status": "ok"}))))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Every route, as (method, path). `docs/openapi.json`
/// documents exactly these; a test holds the two together.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/api/types"),
    ("GET", "/api/clients"),
    ("POST", "/api/clients"),
    ("GET", "/api/clients/{key}"),
    ("PATCH", "/api/clients/{key}"),
    ("DELETE", "/api/clients/{key}"),
    ("POST", "/api/clients/{key}/connect"),
    ("POST", "/api/clients/{key}/disconnect"),
    ("POST", "/api/clients/{key}/send"),
    ("GET", "/api/clients/{key}/outbox"),
    ("DELETE", "/api/clients/{key}/outbox"),
    ("POST", "/api/clients/{key}/outbox/retry"),
    ("GET", "/api/clients/{key}/events"),
    ("GET", "/api/clients/{key}/history"),
    ("GET", "/metrics"),
    ("GET", "/api/events"),
    ("GET", "/api/connections"),
    ("POST", "/api/connections"),
    ("GET", "/api/connections/{key}"),
    ("DELETE", "/api/connections/{key}"),
    ("POST", "/api/connections/{key}/send"),
    ("GET", "/api/audit"),
    ("GET", "/api/cluster"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/webhooks"),
    ("GET", "/api/webhooks/{name}/dead"),
    ("POST", "/api/webhooks/{name}/replay"),
];

/// The management API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/types", get(clients::types))
        .route("/api/clients", get(clients::list).post(clients::create))
        .route(
            "/api/clients/{key}",
            get(clients::show)
                .patch(clients::update)
                .delete(clients::delete),
        )
        .route("/api/clients/{key}/connect", post(clients::connect))
        .route("/api/clients/{key}/disconnect", post(clients::disconnect))
        .route("/api/clients/{key}/send", post(clients::send))
        .route(
            "/api/clients/{key}/outbox",
            get(clients::outbox).delete(clients::outbox_purge),
        )
        .route(
            "/api/clients/{key}/outbox/retry",
            post(clients::outbox_retry),
        )
        .route("/api/clients/{key}/events", get(sse::client_events))
        .route("/api/clients/{key}/history", get(clients::history))
        .route("/api/events", get(sse::all_events))
        .route(
            "/api/connections",
            get(connections::list).post(connections::open),
        )
        .route(
            "/api/connections/{key}",
            get(connections::show).delete(connections::close),
        )
        .route("/api/connections/{key}/send", post(connections::send))
        .route("/api/audit", get(clients::audit))
        .route("/api/cluster", get(cluster::show))
        .route("/api/openapi.json", get(openapi_json))
        .route("/api/webhooks", get(webhooks::list))
        .route("/api/webhooks/{name}/dead", get(webhooks::dead))
        .route("/api/webhooks/{name}/replay", post(webhooks::replay))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(ui::index))
        .route("/app.js", get(ui::script))
        .route("/app.css", get(ui::style))
        .route("/ui/login", post(session::login))
        .route("/ui/session", get(session::current))
        .route("/ui/logout", post(session::logout))
        // Nodes of a cluster, with the cluster secret instead of the token.
        .route("/internal/clients/{key}/send", post(forward::internal_send))
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
