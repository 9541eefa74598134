//! Live events as Server-Sent Events. Each SSE event is named after the
//! Tether event (`open`, `message`, `close`, `state`, `module`,
//! `reconnecting`; errors are `client-error`) and its data is the event's JSON. Streams end when the
//! host begins to shut down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use super::{ApiError, AppState};
use crate::host::HostError;

fn stream(s: &AppState, key: Option<String>) -> impl Stream<Item = Result<Event, Infallible>> {
    let stopping = s.stopping.clone().cancelled_owned();
    BroadcastStream::new(s.host.events().subscribe())
        .take_until(stopping)
        .filter_map(move |item| {
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
                Some(Ok(Event::default()
                    .event(sse_name(event.name()))
                    .data(data)))
            }
        })
}

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
