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

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{ApiError, AppState};
use crate::events::HostEvent;
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

/// Checks that the log still holds everything after `after`.
async fn check_kept(store: &Arc<dyn Store>, after: i64) -> Result<(), ApiError> {
    let (oldest, newest) = store.events_bounds().await.map_err(HostError::from)?;
    // Numbers start at 1: nothing is missing before the oldest unless
    // something was trimmed.
    if after.max(0) + 1 < oldest && after < newest {
        return Err(ApiError::new(
            StatusCode::GONE,
            "events_gone",
            format!("events after {after} are no longer kept: the oldest kept is {oldest} (see event_log_max_events / event_log_max_age_secs); resume from {} and reconcile what you missed", oldest - 1),
        )
        .with("oldest", json!(oldest)));
    }
    Ok(())
}

/// A logged event as SSE: its stored JSON with `seq` added.
fn logged_sse(e: &LoggedEvent) -> Event {
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
    Event::default()
        .event(sse_name(name))
        .id(e.seq.to_string())
        .data(crate::events::with_seq(&e.json, e.seq))
}

fn live_sse(e: &HostEvent) -> Event {
    let event = Event::default()
        .event(sse_name(e.name()))
        .data(e.json_with_seq());
    match e.seq.get() {
        Some(seq) => event.id(seq.to_string()),
        None => event,
    }
}

struct Follow {
    store: Arc<dyn Store>,
    live: broadcast::Receiver<Arc<HostEvent>>,
    key: Option<String>,
    /// The newest logged event sent (or skipped as before the start).
    last: i64,
    /// Read the log after `last` before taking live events again.
    catch_up: bool,
    queue: VecDeque<Event>,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some((Ok(e), self));
            }
            if self.catch_up {
                match self
                    .store
                    .events_after(self.last, self.key.as_deref(), PAGE)
                    .await
                {
                    Ok(page) if !page.is_empty() => {
                        self.last = page.last().map_or(self.last, |e| e.seq);
                        self.queue.extend(page.iter().map(logged_sse));
                        continue;
                    }
                    Ok(_) => self.catch_up = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream cannot read the log");
                        return None;
                    }
                }
            }
            match self.live.recv().await {
                Ok(e) => {
                    if self.key.as_ref().is_some_and(|k| *k != e.client) {
                        continue;
                    }
                    match e.seq.get() {
                        Some(seq) if seq <= self.last => continue,
                        Some(seq) => self.last = seq,
                        None => {}
                    }
                    return Some((Ok(live_sse(&e)), self));
                }
                // Fell behind the live stream: catch up from the log.
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

async fn open_stream(
    s: &AppState,
    key: Option<String>,
    after: Option<i64>,
) -> Result<impl Stream<Item = Result<Event, Infallible>>, ApiError> {
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
        queue: VecDeque::new(),
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
    let store = s.host.store();
    check_kept(store, after).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let events = store
        .events_after(after, key, limit)
        .await
        .map_err(HostError::from)?;
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

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
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
