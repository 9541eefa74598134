//! Opening a connection and waiting for it to open, on either transport.

use crate::error::Error;
use crate::event::Event;
use crate::options::ConnectOptions;
use crate::transport::{open, Connection, Receiver};

/// Opens a connection and waits until it is open (or fails).
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<(Connection, Receiver), Error> {
    connect_keyed(url.to_string(), url, options).await
}

/// Like [`connect`], with a key of your choice.
pub async fn connect_keyed(
    key: impl Into<String>,
    url: &str,
    options: &ConnectOptions,
) -> Result<(Connection, Receiver), Error> {
    let (conn, mut rx) = open(key, url, options)?;
    match rx.next().await {
        Some(Event::Open { .. }) => Ok((conn, rx)),
        Some(Event::Closed(c)) => Err(c.error.unwrap_or(Error::Abnormal)),
        _ => Err(Error::Abnormal),
    }
}
