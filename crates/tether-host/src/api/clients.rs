//! `/api/types`, `/api/clients…` and `/api/audit`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{actor, ApiError, ApiJson, AppState};
use crate::host::{ClientView, HostError, InstanceInput};
use crate::store::outbox::OutboxStatus;

pub(super) async fn types(State(s): State<AppState>) -> Json<Value> {
    Json(Value::Array(s.host.types()))
}

pub(super) async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(s.host.list_clients().await?)))
}

/// An instance as JSON with its version as the ETag.
fn with_etag(status: StatusCode, view: &ClientView) -> impl IntoResponse {
    (
        status,
        [(header::ETAG, format!("\"{}\"", view.version))],
        Json(json!(view)),
    )
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or `3`; `*` and
/// no header mean any version.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    tag.parse().map(Some).map_err(|_| {
        ApiError::invalid(format!(
            "If-Match {text:?} is not a version this API sent: use the ETag of a GET, like \"3\""
        ))
    })
}

pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<InstanceInput>,
) -> Result<impl IntoResponse, ApiError> {
    let view = s.host.create_client(input, &actor(&headers)).await?;
    Ok(with_etag(StatusCode::CREATED, &view))
}

pub(super) async fn show(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(with_etag(StatusCode::OK, &s.host.get_client(&key).await?))
}

pub(super) async fn update(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<InstanceInput>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = if_match(&headers)?;
    let view = s
        .host
        .update_client(&key, input, expected, &actor(&headers))
        .await?;
    Ok(with_etag(StatusCode::OK, &view))
}

pub(super) async fn delete(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = if_match(&headers)?;
    s.host
        .delete_client(&key, expected, &actor(&headers))
        .await?;
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

/// `{"text": …}` or `{"base64": …}`, and for a durable send `"durable"`,
/// `"id"` (idempotency key) and `"ttl_secs"`. A broker type takes
/// `{"destination", "body", "headers"}` (STOMP) or `{"topic", "body",
/// "qos", "retain"}` (MQTT) instead of text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SendBody {
    text: Option<String>,
    base64: Option<String>,
    destination: Option<String>,
    topic: Option<String>,
    body: Option<Value>,
    headers: Option<Value>,
    qos: Option<Value>,
    retain: Option<Value>,
    #[serde(default)]
    durable: Option<bool>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

impl SendBody {
    pub(super) fn message(&mut self) -> Result<tether::Message, ApiError> {
        match (self.text.take(), self.base64.take()) {
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
    ApiJson(mut body): ApiJson<SendBody>,
) -> Result<impl IntoResponse, ApiError> {
    let durable = body
        .durable
        .unwrap_or_else(|| s.host.durable_by_default(&key));
    if body
        .id
        .as_deref()
        .is_some_and(|id| id.is_empty() || id.len() > 200)
    {
        return Err(ApiError::invalid("\"id\" must be 1 to 200 characters"));
    }
    if body.destination.is_some() || body.topic.is_some() {
        return send_broker(s, key, body, durable).await;
    }
    let message = body.message()?;
    if !durable {
        if body.id.is_some() || body.ttl_secs.is_some() {
            return Err(ApiError::invalid(
                "\"id\" and \"ttl_secs\" are for durable sends: add \"durable\": true",
            ));
        }
        s.host.send(&key, &message)?;
        return Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))));
    }
    let stored = s
        .host
        .send_durable(&key, &message, body.id.clone(), body.ttl_secs)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"durable": true, "seq": stored.seq, "duplicate": stored.duplicate,
                    "id": stored.id}),
        ),
    ))
}

/// A send to a broker type, framed by the host.
async fn send_broker(
    s: AppState,
    key: String,
    body: SendBody,
    durable: bool,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.text.is_some() || body.base64.is_some() {
        return Err(ApiError::invalid(
            "a broker send has \"body\", not \"text\" or \"base64\"",
        ));
    }
    let mut send = serde_json::Map::new();
    for (k, v) in [
        ("destination", body.destination.map(Value::String)),
        ("topic", body.topic.map(Value::String)),
        ("body", body.body),
        ("headers", body.headers),
        ("qos", body.qos),
        ("retain", body.retain),
    ] {
        if let Some(v) = v {
            send.insert(k.into(), v);
        }
    }
    let send = Value::Object(send);
    if !durable {
        if body.id.is_some() || body.ttl_secs.is_some() {
            return Err(ApiError::invalid(
                "\"id\" and \"ttl_secs\" are for durable sends: add \"durable\": true",
            ));
        }
        s.host.send_broker(&key, &send, None).await?;
        return Ok((StatusCode::ACCEPTED, Json(json!({"queued": true}))));
    }
    let stored = s
        .host
        .send_broker(&key, &send, Some((body.id, body.ttl_secs)))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(match stored {
            Some(st) => {
                json!({"durable": true, "seq": st.seq, "duplicate": st.duplicate, "id": st.id})
            }
            None => json!({"queued": true}),
        }),
    ))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboxQuery {
    status: Option<String>,
    limit: Option<u32>,
}

fn status_filter(status: Option<&str>) -> Result<Option<OutboxStatus>, ApiError> {
    status
        .map(|s| {
            OutboxStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "status {s:?} is not one of pending, in-flight, done, expired, dead"
                ))
            })
        })
        .transpose()
}

/// `GET /api/clients/{key}/outbox`: counts and messages (payloads not shown).
pub(super) async fn outbox(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<Value>, ApiError> {
    s.host.get_client(&key).await?;
    let status = status_filter(q.status.as_deref())?;
    let store = s.host.store();
    let stats = store.outbox_stats(&key).await.map_err(HostError::from)?;
    let messages = store
        .outbox_list(&key, status, q.limit.unwrap_or(200).clamp(1, 10_000))
        .await
        .map_err(HostError::from)?;
    Ok(Json(json!({"stats": stats, "messages": messages})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryBody {
    seq: Option<i64>,
}

/// `POST /api/clients/{key}/outbox/retry`: dead and expired messages (or
/// the one with `seq`) go back to pending.
pub(super) async fn outbox_retry(
    State(s): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    s.host.get_client(&key).await?;
    let seq = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<RetryBody>(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?
            .seq
    };
    let n = s
        .host
        .store()
        .outbox_retry(&key, seq)
        .await
        .map_err(HostError::from)?;
    s.host.wake_outbox(&key);
    s.host
        .store()
        .audit(
            &actor(&headers),
            "outbox_retry",
            &key,
            json!({"seq": seq, "messages": n}),
        )
        .await
        .map_err(HostError::from)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"retried": n}))))
}

/// `DELETE /api/clients/{key}/outbox?status=…`: deletes messages that are
/// not in flight.
pub(super) async fn outbox_purge(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<OutboxQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    s.host.get_client(&key).await?;
    let status = status_filter(q.status.as_deref())?;
    let n = s
        .host
        .store()
        .outbox_purge(&key, status)
        .await
        .map_err(HostError::from)?;
    s.host
        .store()
        .audit(
            &actor(&headers),
            "outbox_purge",
            &key,
            json!({"status": q.status, "messages": n}),
        )
        .await
        .map_err(HostError::from)?;
    Ok(Json(json!({"purged": n})))
}
