//! Events for consumers: Server-Sent Events that resume without gaps, and
//! pages for polling, both from the durable event log.
//!
//! Each SSE event is named after the Tether event (`open`, `message`,
//! `close`, `state`, `module`, `reconnecting`; errors are `client-error`),
//! carries `id: SEQ` (its number in the log) and the event's JSON as data.
//! A consumer that comes back with `Last-Event-ID` (or `?after=SEQ`) first
//! gets every logged event after that number, then the live ones, with
//! nothing missed or repeated; a slow consumer that falls behind the live
//! stream is caught up from the log. Asking for events older than the log
//! keeps is a 410, never a silent gap. Streams end when the host shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{ApiError, AppState};
use crate::events::{self, HostEvent};
use crate::host::HostError;
use crate::store::{LoggedEvent, Store};

/// Events read from the log per round while catching up.
const PAGE: u32 = 500;

/// The SSE event name of a Tether event: its own name, except that client
/// errors are `client-error`, because a browser's `EventSource` fires its
/// own `error` event (a lost stream) at the listeners of `error`.
fn sse_name(name: &str) -> &str {
    if name == "error" {
        "client-error"
    } else {
        name
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
    client: Option<String>,
}

/// Where a consumer resumes: `?after=` wins over `Last-Event-ID`.
fn resume_point(q: &EventsQuery, headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    if let Some(a) = q.after {
        return Ok(Some(a));
    }
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event's sequence number")),
    }
}

/// 410 `events_gone`: what is after `after` was trimmed; `oldest` is kept.
fn events_gone(after: i64, oldest: i64) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "events_gone",
        format!("events after {after} are no longer kept: the oldest kept is {oldest} (see event_log_max_events / event_log_max_age_secs); resume from {} and reconcile what you missed", oldest - 1),
    )
    .with("oldest", json!(oldest))
}

/// Checks that the log still holds everything after `after`.
async fn check_kept(store: &Arc<dyn Store>, after: i64) -> Result<(), ApiError> {
    let bounds = store.events_bounds().await.map_err(HostError::from)?;
    match events::gone_after(after, bounds) {
        Some(oldest) => Err(events_gone(after, oldest)),
        None => Ok(()),
    }
}

/// The page of the log after `after`, known to miss nothing
/// ([`events::read_after`]).
async fn read_kept(
    store: &Arc<dyn Store>,
    after: i64,
    key: Option<&str>,
    limit: u32,
) -> Result<Vec<LoggedEvent>, ApiError> {
    match events::read_after(store.as_ref(), after, key, limit)
        .await
        .map_err(HostError::from)?
    {
        events::LogPage::Events(page) => Ok(page),
        events::LogPage::Gone { oldest } => Err(events_gone(after, oldest)),
    }
}

/// Appends one SSE event: `event:`, `data:` (one line: the JSON has no raw
/// newline) and, for a logged event, `id:`. A logged event's `seq` goes
/// first in its JSON object, written straight into `out`.
fn write_sse(out: &mut Vec<u8>, name: &str, json: &str, seq: Option<i64>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(sse_name(name).as_bytes());
    out.extend_from_slice(b"\ndata: ");
    match (seq, json.strip_prefix('{')) {
        (Some(seq), Some(rest)) => {
            out.extend_from_slice(format!("{{\"seq\":{seq}").as_bytes());
            match rest.trim_start() {
                empty if empty.starts_with('}') => out.push(b'}'),
                fields => {
                    out.push(b',');
                    out.extend_from_slice(fields.as_bytes());
                }
            }
        }
        _ => out.extend_from_slice(json.as_bytes()),
    }
    if let Some(seq) = seq {
        out.extend_from_slice(format!("\nid: {seq}").as_bytes());
    }
    out.extend_from_slice(b"\n\n");
}

/// A logged event: its stored JSON with `seq` added.
fn write_logged(out: &mut Vec<u8>, e: &LoggedEvent) {
    /// Only the name: the rest is skipped, not built into a value.
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        event: Option<std::borrow::Cow<'a, str>>,
    }
    let named = serde_json::from_str::<Named>(&e.json).ok();
    let name = named
        .as_ref()
        .and_then(|n| n.event.as_deref())
        .unwrap_or("event");
    write_sse(out, name, &e.json, Some(e.seq));
}

/// A live event: its JSON made once for every stream, `seq` added here.
fn write_live(out: &mut Vec<u8>, e: &HostEvent) {
    write_sse(out, e.name(), e.json(), e.seq.get());
}

/// Events already waiting go out in one body chunk (one socket write per
/// subscriber instead of one per event), up to this many bytes.
const CHUNK_BYTES: usize = 64 << 10;

/// A comment line that keeps proxies from closing an idle stream.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

struct Follow {
    store: Arc<dyn Store>,
    live: broadcast::Receiver<Arc<HostEvent>>,
    key: Option<String>,
    /// The newest logged event sent (or skipped as before the start).
    last: i64,
    /// Read the log after `last` before taking live events again.
    catch_up: bool,
    keep_alive: Duration,
}

impl Follow {
    /// Whether a live event goes to this stream; skips what it has sent.
    fn wants(&mut self, e: &HostEvent) -> bool {
        if self.key.as_ref().is_some_and(|k| *k != e.client) {
            return false;
        }
        match e.seq.get() {
            Some(seq) if seq <= self.last => false,
            Some(seq) => {
                self.last = seq;
                true
            }
            None => true,
        }
    }

    /// The next body chunk: a page caught up from the log, or the live
    /// events waiting (at least one), or a keep-alive after a quiet while.
    async fn next(mut self) -> Option<(Result<Vec<u8>, Infallible>, Self)> {
        let mut out = Vec::new();
        loop {
            if self.catch_up {
                match read_kept(&self.store, self.last, self.key.as_deref(), PAGE).await {
                    Ok(page) if !page.is_empty() => {
                        self.last = page.last().map_or(self.last, |e| e.seq);
                        for e in &page {
                            write_logged(&mut out, e);
                        }
                        return Some((Ok(out), self));
                    }
                    Ok(_) => self.catch_up = false,
                    // Trimmed past where this stream is, or unreadable: end
                    // it. The consumer resumes from its last id and is told
                    // what is gone (410), instead of being handed a gap.
                    Err(e) => {
                        tracing::warn!(after = self.last, code = e.code, detail = %e.detail, "event stream ends: it cannot catch up from the log");
                        return None;
                    }
                }
            }
            let first = match tokio::time::timeout(self.keep_alive, self.live.recv()).await {
                Err(_) => return Some((Ok(KEEP_ALIVE.to_vec()), self)),
                Ok(r) => r,
            };
            match first {
                Ok(e) => {
                    if self.wants(&e) {
                        write_live(&mut out, &e);
                    }
                }
                // Fell behind the live stream: catch up from the log.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.catch_up = true;
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
            // What else has arrived goes in the same chunk.
            while out.len() < CHUNK_BYTES {
                match self.live.try_recv() {
                    Ok(e) => {
                        if self.wants(&e) {
                            write_live(&mut out, &e);
                        }
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        self.catch_up = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !out.is_empty() {
                return Some((Ok(out), self));
            }
        }
    }
}

async fn open_stream(
    s: &AppState,
    key: Option<String>,
    after: Option<i64>,
) -> Result<impl Stream<Item = Result<Vec<u8>, Infallible>>, ApiError> {
    let store = s.host.store().clone();
    // Subscribe before reading where the log is, so nothing falls between.
    let live = s.host.events().subscribe();
    let (last, catch_up) = match after {
        Some(a) => {
            check_kept(&store, a).await?;
            (a, true)
        }
        None => (
            store.events_bounds().await.map_err(HostError::from)?.1,
            false,
        ),
    };
    let follow = Follow {
        store,
        live,
        key,
        last,
        catch_up,
        keep_alive: s.sse_keep_alive,
    };
    let stopping = s.stopping.clone().cancelled_owned();
    Ok(futures_util::stream::unfold(follow, Follow::next).take_until(stopping))
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// A page of logged events for polling consumers.
async fn page(s: &AppState, key: Option<&str>, q: &EventsQuery) -> Result<Response, ApiError> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let events = read_kept(s.host.store(), after, key, limit).await?;
    let next = events.last().map_or(after, |e| e.seq);
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut v: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("seq".into(), json!(e.seq));
            }
            v
        })
        .collect();
    Ok(Json(json!({"events": events, "next_after": next})).into_response())
}

fn sse(stream: impl Stream<Item = Result<Vec<u8>, Infallible>> + Send + 'static) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/event-stream"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/clients/{key}/events", tag = "events",
    summary = "One client's events: Server-Sent Events (id: SEQ), or a JSON page with ?after= and without Accept: text/event-stream",
    params(("key" = String, Path, description = "The instance key"), ("after" = Option<i64>, Query, description = "Resume after this sequence number (wins over Last-Event-ID); without Accept: text/event-stream, a JSON page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 10000; 100 by default"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this sequence number")),
    responses((status = 200, description = "Server-Sent Events named after each event (client errors: client-error), or {events, next_after}", content_type = "text/event-stream", body = String),
        (status = 410, description = "events_gone: events after that number are no longer kept", body = super::openapi::ErrorBody), (status = 404, description = "unknown key", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn client_events(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !s.host.has_client(&key) {
        return Err(HostError::NotFound(key).into());
    }
    if q.client.is_some() {
        return Err(ApiError::invalid("the client is in the path here"));
    }
    if !wants_stream(&headers) && q.after.is_some() {
        return page(&s, Some(&key), &q).await;
    }
    let after = resume_point(&q, &headers)?;
    Ok(sse(open_stream(&s, Some(key), after).await?))
}

#[utoipa::path(get, path = "/api/events", tag = "events",
    summary = "Every client's events: Server-Sent Events (id: SEQ) resuming after Last-Event-ID or ?after=; or, without that Accept and with ?after=, a JSON page {events, next_after} for polling",
    params(("after" = Option<i64>, Query, description = "Resume after this sequence number (wins over Last-Event-ID); without Accept: text/event-stream, a JSON page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 10000; 100 by default"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this sequence number"), ("client" = Option<String>, Query, description = "Only this client's events")),
    responses((status = 200, description = "Server-Sent Events, or {events, next_after}", content_type = "text/event-stream", body = String),
        (status = 410, description = "events_gone: events after that number are no longer kept", body = super::openapi::ErrorBody), (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn all_events(
    State(s): State<AppState>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !wants_stream(&headers) && (q.after.is_some() || q.limit.is_some()) {
        return page(&s, q.client.as_deref(), &q).await;
    }
    let after = resume_point(&q, &headers)?;
    Ok(sse(open_stream(&s, q.client.clone(), after).await?))
}
