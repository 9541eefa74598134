//! `/api/types`, `/api/clients…` and `/api/audit`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{actor, ApiError, ApiJson, AppState};
use crate::host::InstanceInput;

pub(super) async fn types(State(s): State<AppState>) -> Json<Value> {
    Json(Value::Array(s.host.types()))
}

pub(super) async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(s.host.list_clients().await?)))
}

pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<InstanceInput>,
) -> Result<impl IntoResponse, ApiError> {
    let view = s.host.create_client(input, &actor(&headers)).await?;
    Ok((StatusCode::CREATED, Json(json!(view))))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(s.host.get_client(&key).await?)))
}

pub(super) async fn update(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<InstanceInput>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        s.host.update_client(&key, input, &actor(&headers)).await?
    )))
}

pub(super) async fn delete(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    s.host.delete_client(&key, &actor(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn connect(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(json!(s.host.connect_client(&key, &actor(&headers)).await?)),
    ))
}

pub(super) async fn disconnect(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(json!(
            s.host.disconnect_client(&key, &actor(&headers)).await?
        )),
    ))
}

/// `{"text": …}` or `{"base64": …}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SendBody {
    text: Option<String>,
    base64: Option<String>,
}

impl SendBody {
    pub(super) fn message(self) -> Result<tether::Message, ApiError> {
        match (self.text, self.base64) {
            (Some(t), None) => Ok(tether::Message::Text(t)),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map(tether::Message::Binary)
                .map_err(|e| ApiError::invalid(format!("\"base64\" is not valid base64: {e}"))),
            _ => Err(ApiError::invalid(
                "send exactly one of \"text\" or \"base64\"",
            )),
        }
    }
}

pub(super) async fn send(
    State(s): State<AppState>,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    s.host.send(&key, &body.message()?)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))))
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    limit: Option<u32>,
}

pub(super) async fn audit(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let entries = s
        .host
        .store()
        .audit_log(limit)
        .await
        .map_err(crate::host::HostError::from)?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id, "at": crate::store::rfc3339(e.at_ms), "actor": e.actor,
                "action": e.action, "key": e.key, "detail": e.detail,
            })
        })
        .collect();
    Ok(Json(Value::Array(entries)))
}

pub(super) async fn history(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let events = s.host.client_history(&key)?;
    Ok(Json(json!(events.iter().map(|e| &**e).collect::<Vec<_>>())))
}
