//! `/api/types`, `/api/clients…` and `/api/audit`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::openapi::SendAnswer;
use super::{actor, ApiError, ApiJson, AppState};
use crate::host::{ClientView, HostError, InstanceInput};
use crate::store::outbox::OutboxStatus;

#[utoipa::path(get, path = "/api/types", tag = "clients", summary = "The client types with their defaults",
    responses((status = 200, description = "types", body = Vec<Object>), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn types(State(s): State<AppState>) -> Json<Value> {
    Json(Value::Array(s.host.types()))
}

#[utoipa::path(get, path = "/api/clients", tag = "clients", summary = "Every instance with its live state and outbox counts",
    responses((status = 200, description = "clients", body = Vec<ClientView>), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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

#[utoipa::path(post, path = "/api/clients", tag = "clients", summary = "Create an instance",
    request_body = InstanceInput,
    responses(
        (status = 201, description = "created; ETag is its version", body = ClientView),
        (status = 400, description = "unknown type, bad URL, bad field or malformed JSON", body = super::openapi::ErrorBody),
        (status = 409, description = "duplicate key", body = super::openapi::ErrorBody),
        (status = 413, description = "body over 1 MiB", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<InstanceInput>,
) -> Result<impl IntoResponse, ApiError> {
    let view = s.host.create_client(input, &actor(&headers)).await?;
    Ok(with_etag(StatusCode::CREATED, &view))
}

#[utoipa::path(get, path = "/api/clients/{key}", tag = "clients", summary = "One instance", params(("key" = String, Path, description = "The instance key")),
    responses((status = 200, description = "client; ETag is its version", body = ClientView), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn show(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(with_etag(StatusCode::OK, &s.host.get_client(&key).await?))
}

#[utoipa::path(patch, path = "/api/clients/{key}", tag = "clients",
    summary = "Change an instance; applies from the next connection. If-Match with a version refuses a stale edit (412)",
    params(("key" = String, Path, description = "The instance key"), ("If-Match" = Option<String>, Header, description = "The ETag of a GET, like \"3\"")),
    request_body = InstanceInput,
    responses(
        (status = 200, description = "client", body = ClientView),
        (status = 400, description = "bad field", body = super::openapi::ErrorBody), (status = 404, description = "unknown key", body = super::openapi::ErrorBody),
        (status = 409, description = "predefined flag change", body = super::openapi::ErrorBody),
        (status = 412, description = "version_conflict: changed since that version (current_version)", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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

#[utoipa::path(delete, path = "/api/clients/{key}", tag = "clients", summary = "Delete an instance",
    params(("key" = String, Path, description = "The instance key"), ("If-Match" = Option<String>, Header, description = "The ETag of a GET")),
    responses((status = 204, description = "deleted"), (status = 404, description = "unknown key", body = super::openapi::ErrorBody),
        (status = 409, description = "predefined instance", body = super::openapi::ErrorBody),
        (status = 412, description = "version_conflict", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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

#[utoipa::path(post, path = "/api/clients/{key}/connect", tag = "clients", summary = "Connect", params(("key" = String, Path, description = "The instance key")),
    responses((status = 202, description = "connecting", body = ClientView), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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

#[utoipa::path(post, path = "/api/clients/{key}/disconnect", tag = "clients", summary = "Disconnect and stop reconnecting", params(("key" = String, Path, description = "The instance key")),
    responses((status = 202, description = "closing", body = ClientView), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendBody {
    /// A text message.
    text: Option<String>,
    /// A binary message, base64.
    base64: Option<String>,
    /// STOMP: where to send.
    destination: Option<String>,
    /// MQTT: where to publish.
    topic: Option<String>,
    /// Broker types: the body (a string, or JSON that is sent as text).
    body: Option<Value>,
    /// STOMP: frame headers.
    headers: Option<Value>,
    /// MQTT: 0 or 1.
    qos: Option<Value>,
    /// MQTT: the retain flag.
    retain: Option<Value>,
    /// Store first, deliver in order, at least once.
    #[serde(default)]
    durable: Option<bool>,
    /// Durable: an idempotency key (1 to 200 characters).
    #[serde(default)]
    id: Option<String>,
    /// Durable: expire after this long undelivered.
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

#[utoipa::path(post, path = "/api/clients/{key}/send", tag = "clients",
    summary = "Send a text or binary (base64) message, or a broker message; with durable: true (or the type's outbox default) it is stored first and delivered in order, at least once",
    params(("key" = String, Path, description = "The instance key")), request_body = SendBody,
    responses(
        (status = 202, description = "queued, or stored (durable)", body = super::openapi::SendAnswer),
        (status = 400, description = "neither or both of text and base64, or a bad field", body = super::openapi::ErrorBody), (status = 404, description = "unknown key", body = super::openapi::ErrorBody),
        (status = 409, description = "not sent: not_open (connecting or closed) or closing", body = super::openapi::ErrorBody),
        (status = 429, description = "outbox_full (durable) or buffer_full (plain: the outgoing buffer is full; buffered_bytes, limit_bytes); Retry-After: 1", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn send(
    State(s): State<AppState>,
    Path(key): Path<String>,
    ApiJson(mut body): ApiJson<SendBody>,
) -> Result<Response, ApiError> {
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
        return send_broker(s, key, body, durable)
            .await
            .map(IntoResponse::into_response);
    }
    let message = body.message()?;
    if !durable {
        if body.id.is_some() || body.ttl_secs.is_some() {
            return Err(ApiError::invalid(
                "\"id\" and \"ttl_secs\" are for durable sends: add \"durable\": true",
            ));
        }
        return match s.host.send(&key, &message) {
            // In a cluster: the node holding the client's lease sends it.
            Err(HostError::NotOwner { .. }) => super::forward::to_owner(&s, &key, &message).await,
            other => {
                other?;
                Ok((StatusCode::ACCEPTED, Json(SendAnswer::queued())).into_response())
            }
        };
    }
    let stored = s
        .host
        .send_durable(&key, &message, body.id.clone(), body.ttl_secs)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(SendAnswer::stored(stored))).into_response())
}

/// A send to a broker type, framed by the host.
async fn send_broker(
    s: AppState,
    key: String,
    body: SendBody,
    durable: bool,
) -> Result<(StatusCode, Json<SendAnswer>), ApiError> {
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
        return Ok((StatusCode::ACCEPTED, Json(SendAnswer::queued())));
    }
    let stored = s
        .host
        .send_broker(&key, &send, Some((body.id, body.ttl_secs)))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(stored.map_or_else(SendAnswer::queued, SendAnswer::stored)),
    ))
}

/// One audit entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AuditView {
    id: i64,
    /// When, RFC 3339.
    at: String,
    /// Who: the session's user, or `api`.
    actor: String,
    /// What: create, update, delete, connect, disconnect, outbox_retry, …
    action: String,
    /// The client (or webhook).
    key: String,
    /// What changed, secrets redacted.
    detail: Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/audit", tag = "host", summary = "The audit log, newest first (secrets redacted)",
    params(("limit" = Option<u32>, Query, description = "1 to 1000; 200 by default")),
    responses((status = 200, description = "entries", body = Vec<AuditView>), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn audit(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let entries = s
        .host
        .store()
        .audit_log(limit)
        .await
        .map_err(crate::host::HostError::from)?;
    let entries = entries
        .into_iter()
        .map(|e| AuditView {
            id: e.id,
            at: crate::store::rfc3339(e.at_ms),
            actor: e.actor,
            action: e.action,
            key: e.key,
            detail: e.detail,
        })
        .collect();
    Ok(Json(entries))
}

#[utoipa::path(get, path = "/api/clients/{key}/history", tag = "events",
    summary = "The events one client keeps in memory (stored or dynamic), oldest first", params(("key" = String, Path, description = "The instance key")),
    responses((status = 200, description = "events", body = Vec<Object>), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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

/// A client's outbox.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct OutboxAnswer {
    /// Counts by status and the oldest undelivered message's time.
    stats: crate::store::outbox::OutboxStats,
    /// Messages in delivery order, without payloads.
    messages: Vec<crate::store::outbox::OutboxMessage>,
}

/// `GET /api/clients/{key}/outbox`: counts and messages (payloads not shown).
#[utoipa::path(get, path = "/api/clients/{key}/outbox", tag = "outbox",
    summary = "The client's durable outbox: counts by status, oldest message, and messages in delivery order (payloads not shown)",
    params(("key" = String, Path, description = "The instance key"), ("status" = Option<String>, Query, description = "pending, in-flight, done, expired or dead"), ("limit" = Option<u32>, Query, description = "1 to 10000; 200 by default")),
    responses((status = 200, description = "stats and messages", body = OutboxAnswer), (status = 400, description = "unknown status", body = super::openapi::ErrorBody), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn outbox(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<OutboxAnswer>, ApiError> {
    s.host.get_client(&key).await?;
    let status = status_filter(q.status.as_deref())?;
    let store = s.host.store();
    let stats = store.outbox_stats(&key).await.map_err(HostError::from)?;
    let messages = store
        .outbox_list(&key, status, q.limit.unwrap_or(200).clamp(1, 10_000))
        .await
        .map_err(HostError::from)?;
    Ok(Json(OutboxAnswer { stats, messages }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryBody {
    /// Only this message.
    seq: Option<i64>,
}

/// `POST /api/clients/{key}/outbox/retry`: dead and expired messages (or
/// the one with `seq`) go back to pending.
#[utoipa::path(post, path = "/api/clients/{key}/outbox/retry", tag = "outbox",
    summary = "Dead and expired messages (or the one with seq) back to pending", params(("key" = String, Path, description = "The instance key")),
    request_body(content = Option<RetryBody>, description = "optional: {\"seq\": N}"),
    responses((status = 202, description = "how many went back", body = Object, example = json!({"retried": 3})), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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
#[utoipa::path(delete, path = "/api/clients/{key}/outbox", tag = "outbox",
    summary = "Purge messages that are not in flight (optionally of one status)",
    params(("key" = String, Path, description = "The instance key"), ("status" = Option<String>, Query, description = "pending, done, expired or dead")),
    responses((status = 200, description = "how many were deleted", body = Object, example = json!({"purged": 10})), (status = 400, description = "unknown status", body = super::openapi::ErrorBody), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
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
