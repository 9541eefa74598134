//! A live ticker page: one [`tether::Persistent`] connection to a feed of
//! JSON ticks, a row per symbol, and an indicator that shows the
//! connection's state and every reconnect attempt. The same code as a
//! server-side client; only the transport underneath is the browser's.
#![cfg(target_arch = "wasm32")]

use std::collections::BTreeMap;
use std::time::Duration;

use tether::{
    ConnectOptions, Message, Persistent, PersistentEvent, PersistentOptions, ReconnectPolicy,
};
use wasm_bindgen::prelude::*;
use web_sys::{Document, Element};

/// One tick of the feed.
#[derive(serde::Deserialize)]
struct Tick {
    symbol: String,
    price: f64,
    seq: u64,
}

/// Connects to `url` and keeps the page up to date until the page closes.
#[wasm_bindgen]
pub fn start(url: String) -> Result<(), JsError> {
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| JsError::new("no document"))?;
    let options = PersistentOptions {
        policy: ReconnectPolicy {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            ..ReconnectPolicy::default()
        },
        queue_bytes: 0,
        before_attempt: None,
    };
    let (feed, mut events) = Persistent::open("ticker", &url, &ConnectOptions::new(), options)
        .map_err(|e| JsError::new(&e.to_string()))?;
    let page = Page::new(document)?;
    page.status("connecting", &format!("connecting to {url}"));
    wasm_bindgen_futures::spawn_local(async move {
        let _feed = feed; // keeps the connection wanted while the page lives
        let mut page = page;
        while let Some(event) = events.next().await {
            match event {
                PersistentEvent::Open { .. } => page.status("open", "live"),
                PersistentEvent::Message(Message::Text(text)) => page.tick(&text),
                PersistentEvent::Disconnected(closed) => page.status(
                    "reconnecting",
                    &format!("disconnected ({} {})", closed.code, closed.reason),
                ),
                PersistentEvent::Reconnecting { attempt, delay } => page.status(
                    "reconnecting",
                    &format!(
                        "reconnecting: attempt {attempt} in {} ms",
                        delay.as_millis()
                    ),
                ),
                PersistentEvent::GaveUp { attempts } => {
                    page.status("closed", &format!("gave up after {attempts} attempts"))
                }
                PersistentEvent::Failed(error) => page.status("closed", &error.to_string()),
                _ => {}
            }
        }
    });
    Ok(())
}

/// The page's elements.
struct Page {
    document: Document,
    status: Element,
    count: Element,
    table: Element,
    rows: BTreeMap<String, Element>,
    ticks: u64,
}

impl Page {
    fn new(document: Document) -> Result<Page, JsError> {
        let find = |id: &str| {
            document
                .get_element_by_id(id)
                .ok_or_else(|| JsError::new(&format!("the page has no #{id}")))
        };
        Ok(Page {
            status: find("status")?,
            count: find("count")?,
            table: find("ticks")?,
            document,
            rows: BTreeMap::new(),
            ticks: 0,
        })
    }

    /// Shows the connection's state (also as the `data-state` attribute).
    fn status(&self, state: &str, text: &str) {
        let _ = self.status.set_attribute("data-state", state);
        self.status.set_text_content(Some(text));
    }

    fn tick(&mut self, text: &str) {
        let Ok(tick) = serde_json::from_str::<Tick>(text) else {
            self.status("open", "live (a message that is not a tick was skipped)");
            return;
        };
        self.ticks += 1;
        self.count
            .set_text_content(Some(&format!("{} ticks, last #{}", self.ticks, tick.seq)));
        let row = match self.rows.get(&tick.symbol) {
            Some(row) => row.clone(),
            None => {
                let Ok(row) = self.document.create_element("tr") else {
                    return;
                };
                let _ = self.table.append_child(&row);
                self.rows.insert(tick.symbol.clone(), row.clone());
                row
            }
        };
        row.set_inner_html(&format!(
            "<td>{}</td><td>{:.2}</td>",
            escape(&tick.symbol),
            tick.price
        ));
    }
}

/// The text as HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
