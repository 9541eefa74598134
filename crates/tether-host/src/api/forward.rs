//! In a cluster, a send that reaches a node not holding the client's lease
//! goes to the node that does: over HTTP to its internal route, with the
//! cluster secret and the lease's epoch. The owner refuses a stale epoch
//! (409), and the caller reads the owner again and retries until its
//! deadline.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::clients::SendBody;
use super::openapi::SendAnswer;
use super::{ApiError, ApiJson, AppState};
use crate::host::HostError;

/// The header a node shows another: `TETHER_CLUSTER_SECRET`.
pub(super) const SECRET_HEADER: &str = "Tether-Cluster-Secret";
/// How long a forwarded send keeps looking for the owner.
const DEADLINE: Duration = Duration::from_secs(3);

/// Sends `message` through the node holding `key`'s lease; answers what
/// that node answered.
pub(super) async fn to_owner(
    s: &AppState,
    key: &str,
    message: &tether::Message,
) -> Result<Response, ApiError> {
    let Some(cluster) = s.host.cluster() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_owner",
            format!("client {key:?} is not connected on this host"),
        ));
    };
    let Some(secret) = cluster.secret() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_secret_missing",
            format!("client {key:?} is connected on another node, and sends are forwarded between nodes only with TETHER_CLUSTER_SECRET set (the same on every node)"),
        ));
    };
    let body = match message {
        tether::Message::Text(t) => json!({ "text": t }),
        tether::Message::Binary(b) => {
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
    }
    .to_string();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last = String::from("no node holds its lease");
    while tokio::time::Instant::now() < deadline {
        match cluster.owner_of(key).await.map_err(HostError::from)? {
            // The lease came here meanwhile.
            Some(o) if o.node_id == cluster.node_id() => match s.host.send(key, message) {
                Err(HostError::NotOwner { .. }) => {}
                other => {
                    other?;
                    return Ok((StatusCode::ACCEPTED, Json(SendAnswer::queued())).into_response());
                }
            },
            Some(o) => {
                let mut url = url::Url::parse(&o.addr).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "owner_unreachable",
                        format!("node {} advertises {:?}, not a URL: {e}", o.node_id, o.addr),
                    )
                })?;
                if let Ok(mut path) = url.path_segments_mut() {
                    path.pop_if_empty()
                        .extend(["internal", "clients", key, "send"]);
                }
                url.query_pairs_mut()
                    .append_pair("epoch", &o.epoch.to_string());
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match crate::http_client::post_json(
                    url.as_str(),
                    &[(SECRET_HEADER, secret)],
                    body.as_bytes(),
                    left.max(Duration::from_millis(100)),
                )
                .await
                {
                    Ok(a) if a.status == 409 && a.body.windows(11).any(|w| w == b"stale_epoch") => {
                        last = format!("node {} no longer holds it", o.node_id);
                    }
                    Ok(a) => {
                        let status =
                            StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
                        return Ok((
                            status,
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            a.body,
                        )
                            .into_response());
                    }
                    Err(e) => last = format!("node {} at {}: {e}", o.node_id, o.addr),
                }
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_owner",
        format!("client {key:?} could not be reached through its owner within {} s: {last}; retry, or send durably (\"durable\": true) to have it stored and delivered by whichever node owns the client", DEADLINE.as_secs()),
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct EpochQuery {
    epoch: i64,
}

/// `POST /internal/clients/{key}/send?epoch=N`: a send another node
/// forwarded. Needs the cluster secret; refuses an epoch this node does not
/// hold (409 `stale_epoch`).
pub(super) async fn internal_send(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<EpochQuery>,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    let cluster = s.host.cluster().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this host is not in a cluster",
        )
    })?;
    let shown = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let secret = cluster.secret().unwrap_or_default().as_bytes();
    if secret.is_empty() || !bool::from(shown.ct_eq(secret)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a forwarded send needs the cluster secret (TETHER_CLUSTER_SECRET)",
        ));
    }
    if cluster.epoch(&key) != Some(q.epoch) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_epoch",
            format!(
                "this node does not hold client {key:?} at epoch {}",
                q.epoch
            ),
        ));
    }
    let message = body.message()?;
    s.host.send(&key, &message)?;
    Ok((StatusCode::ACCEPTED, Json(SendAnswer::queued())))
}
