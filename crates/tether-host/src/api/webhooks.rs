//! `/api/webhooks…`: delivery state, dead letters and replay.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{actor, ApiError, ApiJson, AppState};
use crate::host::HostError;
use crate::webhooks::Webhook;

fn find<'a>(s: &'a AppState, name: &str) -> Result<&'a std::sync::Arc<Webhook>, ApiError> {
    s.host
        .webhooks()
        .iter()
        .find(|w| w.name() == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no webhook named {name:?} in the config"),
            )
        })
}

pub(super) async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let newest = s
        .host
        .store()
        .events_bounds()
        .await
        .map_err(HostError::from)?
        .1;
    let hooks: Vec<Value> = s
        .host
        .webhooks()
        .iter()
        .map(|w| {
            let st = w.status();
            let lag = (newest - st.cursor).max(0);
            json!({"status": st, "newest": newest, "lag": lag})
        })
        .collect();
    Ok(Json(Value::Array(hooks)))
}

pub(super) async fn dead(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find(&s, &name)?;
    let dead = s
        .host
        .store()
        .webhook_dead_list(&name, 200)
        .await
        .map_err(HostError::from)?;
    Ok(Json(json!(dead)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Replay {
    after: i64,
}

/// Delivers again from just after `after` (e.g. a dead batch's `from_seq - 1`).
pub(super) async fn replay(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Replay>,
) -> Result<impl IntoResponse, ApiError> {
    let hook = find(&s, &name)?;
    hook.replay(body.after).await.map_err(HostError::from)?;
    s.host
        .store()
        .audit(
            &actor(&headers),
            "webhook_replay",
            &name,
            json!({"after": body.after}),
        )
        .await
        .map_err(HostError::from)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"cursor": body.after}))))
}
