//! The browser's `WebSocket` objects and their callbacks. JavaScript
//! objects cannot leave the page's thread, so they live in a table here,
//! keyed by the connection's id; the connection's faces hold the id. A
//! socket's entry (and its callbacks) is freed right after its close event.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use super::connection::{Connection, Receiver, Shared};
use crate::error::Error;
use crate::event::{Closed, Event, Message, State};
use crate::options::ConnectOptions;

/// A live socket and the callbacks the browser calls on it.
struct Entry {
    socket: WebSocket,
    _on_open: Closure<dyn FnMut(web_sys::Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

thread_local! {
    static SOCKETS: RefCell<HashMap<u64, Entry>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Runs `f` on the socket with this id, if it is still open or closing.
pub(super) fn with<R>(id: u64, f: impl FnOnce(&WebSocket) -> R) -> Option<R> {
    SOCKETS.with(|table| table.borrow().get(&id).map(|entry| f(&entry.socket)))
}

/// Creates the browser's socket and wires its events to a new connection.
pub(super) fn start(
    key: String,
    url: &str,
    options: &ConnectOptions,
) -> Result<(Connection, Receiver), Error> {
    let protocols = js_sys::Array::new();
    for p in &options.protocols {
        protocols.push(&JsValue::from_str(p));
    }
    let socket =
        WebSocket::new_with_str_sequence(url, &protocols).map_err(|e| Error::InvalidUrl {
            url: super::shown(url).to_string(),
            reason: describe(&e),
        })?;
    socket.set_binary_type(BinaryType::Arraybuffer);
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let shared = Arc::new(Shared::new(id, key, super::shown(url), options));
    let (tx, rx) = mpsc::unbounded_channel();

    let on_open = {
        let (shared, tx) = (shared.clone(), tx.clone());
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_: web_sys::Event| {
            let (protocol, extensions) =
                with(id, |ws| (ws.protocol(), ws.extensions())).unwrap_or_default();
            let protocol = (!protocol.is_empty()).then_some(protocol);
            let _ = shared.protocol.set(protocol.clone());
            shared.opened.store(true, Ordering::Release);
            shared.set_state(State::Open);
            let _ = tx.send(Event::Open {
                protocol,
                compression: extensions.contains("permessage-deflate"),
            });
        })
    };
    let on_message = {
        let (shared, tx) = (shared.clone(), tx.clone());
        Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let message = if let Some(text) = data.as_string() {
                Message::Text(text)
            } else if let Some(buffer) = data.dyn_ref::<js_sys::ArrayBuffer>() {
                Message::Binary(js_sys::Uint8Array::new(buffer).to_vec())
            } else {
                return; // binaryType is arraybuffer: no Blob arrives
            };
            shared
                .undelivered
                .fetch_add(message.len(), Ordering::AcqRel);
            let _ = tx.send(Event::Message(message));
        })
    };
    let on_close = {
        let shared = shared.clone();
        Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            shared.set_state(State::Closed);
            let _ = tx.send(Event::Closed(Box::new(Closed {
                code: event.code(),
                reason: event.reason(),
                clean: event.was_clean(),
                error: why_closed(&shared, event.code()),
            })));
            shared.on_exit.run();
            // This callback is running: free it (and the sender it holds,
            // which ends the receiver's stream) once it has returned.
            wasm_bindgen_futures::spawn_local(async move {
                SOCKETS.with(|table| table.borrow_mut().remove(&id));
            });
        })
    };
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    SOCKETS.with(|table| {
        table.borrow_mut().insert(
            id,
            Entry {
                socket,
                _on_open: on_open,
                _on_message: on_message,
                _on_close: on_close,
            },
        )
    });
    watch_connect_timeout(shared.clone(), options.connect_timeout);
    let receiver = Receiver {
        rx,
        shared: shared.clone(),
    };
    Ok((Connection::new(shared), receiver))
}

/// What went wrong, when something did: our own reason (a timeout), a
/// connection that never opened, or one that ended without a close frame.
fn why_closed(shared: &Shared, code: u16) -> Option<Error> {
    let ours = shared
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if ours.is_some() {
        return ours;
    }
    if shared.abandoned.load(Ordering::Acquire) {
        None
    } else if !shared.opened.load(Ordering::Acquire) {
        Some(Error::BrowserConnect {
            url: shared.url.to_string(),
        })
    } else if code == 1006 {
        Some(Error::Abnormal)
    } else {
        None
    }
}

/// The browser has no connect timeout: end the attempt ourselves.
fn watch_connect_timeout(shared: Arc<Shared>, timeout: std::time::Duration) {
    crate::rt::spawn(async move {
        crate::rt::sleep(timeout).await;
        if shared.state() == State::Connecting {
            *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Error::ConnectTimeout(timeout));
            let _ = with(shared.id, |ws| ws.close());
        }
    });
}

/// A JavaScript exception's message.
fn describe(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| "the browser refused the URL".to_string())
}
