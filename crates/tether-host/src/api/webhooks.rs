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

/// A webhook's delivery state.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct WebhookView {
    status: crate::webhooks::WebhookStatus,
    /// The newest logged event's number.
    newest: i64,
    /// Logged events not delivered yet.
    lag: i64,
}

#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    summary = "Webhook sinks: cursor (last sequence delivered), lag behind the log, attempts and last error of the current batch",
    responses((status = 200, description = "list", body = Vec<WebhookView>), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn list(State(s): State<AppState>) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let newest = s
        .host
        .store()
        .events_bounds()
        .await
        .map_err(HostError::from)?
        .1;
    let hooks = s
        .host
        .webhooks()
        .iter()
        .map(|w| {
            let status = w.status();
            let lag = (newest - status.cursor).max(0);
            WebhookView {
                status,
                newest,
                lag,
            }
        })
        .collect();
    Ok(Json(hooks))
}

#[utoipa::path(get, path = "/api/webhooks/{name}/dead", tag = "webhooks",
    summary = "Dead-lettered batches of a webhook, newest first", params(("name" = String, Path, description = "The webhook's name")),
    responses((status = 200, description = "list", body = Vec<crate::store::DeadBatch>), (status = 404, description = "unknown webhook", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Replay {
    /// Deliver again from just after this sequence number.
    after: i64,
}

/// Delivers again from just after `after` (e.g. a dead batch's `from_seq - 1`).
#[utoipa::path(post, path = "/api/webhooks/{name}/replay", tag = "webhooks",
    summary = "Deliver again from just after a sequence number", params(("name" = String, Path, description = "The webhook's name")),
    request_body = Replay,
    responses((status = 202, description = "the new cursor", body = Object, example = json!({"cursor": 41})), (status = 400, description = "bad body", body = super::openapi::ErrorBody), (status = 404, description = "unknown webhook", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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
