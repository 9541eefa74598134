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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OpenBody {
    key: Option<String>,
    url: String,
    #[serde(rename = "type")]
    type_name: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

pub(super) async fn open(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<OpenBody>,
) -> Result<impl IntoResponse, ApiError> {
    let view = s.host.open_dynamic(b.key, b.url, b.type_name, b.headers)?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn list(State(s): State<AppState>) -> Json<Value> {
    Json(Value::Array(s.host.list_dynamic()))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.host.get_dynamic(&key)?))
}

pub(super) async fn close(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.host.close_dynamic(&key)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"closing": key}))))
}

pub(super) async fn send(
    State(s): State<AppState>,
    Path(key): Path<String>,
    ApiJson(mut body): ApiJson<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    s.host.send_dynamic(&key, &body.message()?)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))))
}
