//! Live events as Server-Sent Events. Each SSE event is named after the
//! Tether event (`open`, `message`, `error`, `close`, `state`, `module`,
//! `reconnecting`) and its data is the event's JSON.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use super::{ApiError, AppState};
use crate::host::HostError;

fn stream(s: &AppState, key: Option<String>) -> impl Stream<Item = Result<Event, Infallible>> {
    BroadcastStream::new(s.host.events().subscribe()).filter_map(move |item| {
        let key = key.clone();
        async move {
            let event = match item {
                Ok(e) => e,
                // A slow reader skipped events: say so instead of failing.
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    return Some(Ok(Event::default()
                        .event("lagged")
                        .data(format!("{{\"skipped\":{n}}}"))));
                }
            };
            if key.as_ref().is_some_and(|k| *k != event.client) {
                return None;
            }
            let data = serde_json::to_string(&*event).unwrap_or_default();
            Some(Ok(Event::default().event(event.name()).data(data)))
        }
    })
}

pub(super) async fn client_events(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if !s.host.has_client(&key) {
        return Err(HostError::NotFound(key).into());
    }
    Ok(Sse::new(stream(&s, Some(key)))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

pub(super) async fn all_events(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(stream(&s, None)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
