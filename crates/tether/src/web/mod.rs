//! The browser transport: the page's `WebSocket` behind the same
//! [`Connection`] and [`Receiver`] as natively. The browser does the
//! framing, compression and TLS; what its API cannot do (request headers,
//! credentials, proxies, TLS settings, pings, compression and keepalive
//! settings) fails with [`Error::Unsupported`] instead of being ignored.

mod connection;
mod socket;

use std::sync::Arc;

pub use connection::{Connection, Receiver};

use crate::error::{Error, SendError};
use crate::options::ConnectOptions;
use crate::target::{redact, Target};

/// The close code used when nobody holds a connection any more: the
/// browser only lets a page send 1000 and 3000–4999.
pub(crate) const GOING_AWAY: u16 = 1000;

/// Starts a connection and returns at once, in state `Connecting`. The
/// receiver reports `Open`, then messages, then `Closed`; a connection that
/// fails to open reports only `Closed`, with the error.
///
/// Fails only for what can be checked before connecting: the URL, the
/// subprotocols, and options a browser cannot honour.
pub fn open(
    key: impl Into<String>,
    url: &str,
    options: &ConnectOptions,
) -> Result<(Connection, Receiver), Error> {
    check(url, options)?;
    socket::start(key.into(), url, options)
}

/// Checks the URL and that every option set is one a browser can honour.
pub(crate) fn check(url: &str, options: &ConnectOptions) -> Result<(), Error> {
    let parsed = url::Url::parse(url).ok();
    if parsed.as_ref().is_some_and(|u| !u.username().is_empty()) {
        return Err(Error::Unsupported {
            option: "credentials in the URL",
        });
    }
    Target::parse(url, options)?;
    if let Some(option) = unsupported(options) {
        return Err(Error::Unsupported { option });
    }
    Ok(())
}

/// The first option set that the browser's WebSocket API cannot honour.
fn unsupported(options: &ConnectOptions) -> Option<&'static str> {
    let defaults = ConnectOptions::default();
    let (config, default) = (&options.config, &defaults.config);
    let checks: [(bool, &'static str); 11] = [
        (!options.headers.is_empty(), "headers"),
        (options.origin.is_some(), "origin"),
        (options.basic_auth.is_some(), "basic_auth"),
        (!options.tls_options.is_default(), "tls"),
        (options.proxy != defaults.proxy, "proxy"),
        (options.write_gate.is_some(), "write_gate"),
        (
            options.receive_window != defaults.receive_window,
            "receive_window",
        ),
        (config.deflate != default.deflate, "compression"),
        (
            config.ping_interval != default.ping_interval
                || config.ping_timeout != default.ping_timeout,
            "keepalive",
        ),
        (
            config.close_timeout != default.close_timeout,
            "close_timeout",
        ),
        (
            config.max_message_size != default.max_message_size
                || config.max_frame_size != default.max_frame_size
                || config.max_handshake_size != default.max_handshake_size,
            "max_message_size",
        ),
    ];
    checks
        .into_iter()
        .find(|(set, _)| *set)
        .map(|(_, name)| name)
}

/// Checks a close code and reason against what a browser lets a page send.
pub(crate) fn check_close(code: u16, reason: &str) -> Result<(), SendError> {
    if !(code == 1000 || (3000..=4999).contains(&code)) {
        return Err(SendError::Unsupported(
            "close codes other than 1000 and 3000-4999",
        ));
    }
    if reason.len() > 123 {
        return Err(SendError::Unsupported("a close reason over 123 bytes"));
    }
    Ok(())
}

/// The URL as messages show it.
fn shown(url: &str) -> Arc<str> {
    redact(url).into()
}
