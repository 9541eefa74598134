//! `/api/connections…`: dynamic connections, opened by key and URL, not
//! stored, gone once closed.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::clients::SendBody;
use super::{ApiError, ApiJson, AppState};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenBody {
    /// The key; generated when absent.
    key: Option<String>,
    /// ws:// or wss://.
    url: String,
    /// A client type whose module handles it.
    #[serde(rename = "type")]
    type_name: Option<String>,
    /// Request headers for the handshake.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/api/connections", tag = "connections", summary = "Open a dynamic connection (not stored)",
    request_body = OpenBody,
    responses((status = 201, description = "opened", body = Object), (status = 400, description = "bad URL or unknown type", body = super::openapi::ErrorBody), (status = 409, description = "duplicate key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn open(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<OpenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let view = s.host.open_dynamic(b.key, b.url, b.type_name, b.headers)?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/api/connections", tag = "connections", summary = "Dynamic connections",
    responses((status = 200, description = "connections", body = Vec<Object>), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn list(State(s): State<AppState>) -> Json<Value> {
    Json(Value::Array(s.host.list_dynamic()))
}

#[utoipa::path(get, path = "/api/connections/{key}", tag = "connections", summary = "One dynamic connection",
    params(("key" = String, Path, description = "The instance key")), responses((status = 200, description = "connection", body = Object), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn show(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.host.get_dynamic(&key)?))
}

#[utoipa::path(delete, path = "/api/connections/{key}", tag = "connections", summary = "Close a dynamic connection",
    params(("key" = String, Path, description = "The instance key")), responses((status = 202, description = "closing", body = Object), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn close(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.host.close_dynamic(&key)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"closing": key}))))
}

#[utoipa::path(post, path = "/api/connections/{key}/send", tag = "connections", summary = "Send on a dynamic connection",
    params(("key" = String, Path, description = "The instance key")), request_body = super::clients::SendBody,
    responses((status = 202, description = "queued", body = super::openapi::SendAnswer), (status = 404, description = "unknown key", body = super::openapi::ErrorBody),
        (status = 409, description = "not_open or closing", body = super::openapi::ErrorBody),
        (status = 429, description = "buffer_full", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn send(
    State(s): State<AppState>,
    Path(key): Path<String>,
    ApiJson(mut body): ApiJson<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    s.host.send_dynamic(&key, &body.message()?)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(super::openapi::SendAnswer::queued()),
    ))
}
