//! Starting a connection: the entry points, connecting (TCP, proxy, TLS,
//! the opening handshake), and handing the open socket to the
//! [`Driver`](crate::driver::Driver).

use std::future::poll_fn;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use tether_proto::ClientConnection;

use crate::connection::{Closed, Connection, Event, Receiver, Shared, State};
use crate::dial::{establish, handshake};
use crate::driver::Driver;
use crate::error::Error;
use crate::options::ConnectOptions;
use crate::target::{redact, Target};

/// A byte stream a connection can run over: TCP, TLS over TCP, or anything
/// else a caller brings (a proxy tunnel, an in-memory pipe in tests).
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// Starts a connection in the background and returns at once, in state
/// `Connecting`. The receiver reports `Open`, then messages, then `Closed`;
/// a connection that fails to open reports only `Closed`, with the error.
///
/// Fails only for what can be checked without the network: the URL, the
/// headers, the options.
pub fn open(
    key: impl Into<String>,
    url: &str,
    options: &ConnectOptions,
) -> Result<(Connection, Receiver), Error> {
    let target = Target::parse(url, options)?;
    if let Some(d) = &options.config.deflate {
        d.validate()
            .map_err(tether_proto::RequestError::InvalidExtensionConfig)?;
    }
    let mut options = options.clone();
    if target.secure && options.tls.is_none() && !options.tls_options.is_default() {
        options.tls = Some(options.tls_options.build()?);
    }
    let proxy = crate::proxy::resolve(&options.proxy, &target.host, target.port, target.secure)?;
    let (shared, tx, conn, rx) = faces(key.into(), url, &options);
    tokio::spawn(drive(shared, target, proxy, options, tx));
    Ok((conn, rx))
}

/// Checks what can be checked without the network: the URL, the headers,
/// the subprotocols.
pub(crate) fn check(url: &str, options: &ConnectOptions) -> Result<(), Error> {
    Target::parse(url, options).map(|_| ())
}

/// Checks a close code and reason before closing.
pub(crate) fn check_close(code: u16, _reason: &str) -> Result<(), crate::SendError> {
    if tether_proto::CloseCode(code).is_sendable() {
        Ok(())
    } else {
        Err(crate::SendError::Invalid(
            tether_proto::SendError::InvalidCloseCode(code),
        ))
    }
}

/// The close code used when nobody holds a connection any more.
pub(crate) const GOING_AWAY: u16 = 1001;

/// The shared state, the event channel, and the two faces handed to the
/// application.
fn faces(
    key: String,
    url: &str,
    options: &ConnectOptions,
) -> (Arc<Shared>, mpsc::Sender<Event>, Connection, Receiver) {
    let mut shared = Shared::new(
        key,
        redact(url),
        options.max_buffered,
        options.backpressure,
        options.receive_window,
    );
    shared.write_gate = options.write_gate.clone();
    let shared = Arc::new(shared);
    let (tx, rx) = mpsc::channel(options.event_queue.max(1));
    let receiver = Receiver {
        rx,
        driver: shared.clone(),
    };
    (shared.clone(), tx, Connection::new(shared), receiver)
}

/// Runs a connection over a transport the caller already has (after its own
/// TCP, TLS or proxy setup). `url` gives the Host header and the path.
pub fn open_on<T: Transport>(
    key: impl Into<String>,
    url: &str,
    io: T,
    options: &ConnectOptions,
) -> Result<(Connection, Receiver), Error> {
    let target = Target::parse(url, options)?;
    let (shared, tx, conn, rx) = faces(key.into(), url, options);
    let options = options.clone();
    tokio::spawn(async move {
        let host = target.host.clone();
        let timeout = options.connect_timeout;
        let opened = tokio::time::timeout(
            timeout,
            Box::pin(async move { handshake(Box::new(io), &target, &options).await }),
        )
        .await;
        let prepared = prepare(&shared, opened, host, timeout, tx);
        run(shared, prepared).await;
    });
    Ok((conn, rx))
}

async fn drive(
    shared: Arc<Shared>,
    target: Target,
    proxy: Option<crate::proxy::Proxy>,
    options: ConnectOptions,
    tx: mpsc::Sender<Event>,
) {
    let connect_timeout = options.connect_timeout;
    let host = target.host.clone();
    // Boxed so that its state (TLS handshake, buffers, the options) is
    // freed once connected instead of living inside every driver task.
    let connecting = Box::pin(async move {
        let io = establish(&target, proxy.as_ref(), &options).await?;
        handshake(io, &target, &options).await
    });
    let abort = shared.clone();
    let opened = Box::pin(async move {
        tokio::select! {
            r = tokio::time::timeout(connect_timeout, connecting) => r,
            _ = abort.abort.notified() => Ok(Err(Error::Abnormal)),
        }
    })
    .await;
    let prepared = prepare(&shared, opened, host, connect_timeout, tx);
    run(shared, prepared).await;
}

type Opened = Result<(Box<dyn Transport>, ClientConnection, tether_proto::Opened), Error>;

/// After connecting: either the failure to report, or a driver to run.
enum Prepared {
    Failed(Box<Closed>, mpsc::Sender<Event>),
    Running(Box<Driver>),
}

/// Turns the outcome of connecting into what `run` does next. Synchronous,
/// so the large values it handles never become part of the task's state.
fn prepare(
    shared: &Arc<Shared>,
    opened: Result<Opened, tokio::time::error::Elapsed>,
    host: String,
    connect_timeout: std::time::Duration,
    tx: mpsc::Sender<Event>,
) -> Prepared {
    let aborted = shared.lock().early_close;
    let opened = match opened {
        Ok(Ok(_)) if aborted => Err(None),
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(_)) if aborted => Err(None),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(Some(Error::ConnectTimeout(connect_timeout))),
    };
    match opened {
        Err(error) => {
            if let Some(e) = &error {
                tracing::debug!(key = %shared.key, url = %shared.url, error = %e, "connection failed");
            }
            shared.set_state(State::Closed);
            let reason = if error.is_none() {
                "closed before open"
            } else {
                ""
            };
            let closed = Closed {
                code: 1006,
                reason: reason.into(),
                clean: false,
                error,
            };
            Prepared::Failed(Box::new(closed), tx)
        }
        Ok((io, mut engine, opened)) => {
            shared.set_state(engine.state());
            // The handshake's buffers are done with.
            engine.shrink_buffers();
            shared.lock().engine = Some(engine);
            let mut driver = Box::new(Driver::new(shared.clone(), io, host, tx));
            driver.pending = driver.convert(tether_proto::Event::Open(opened));
            Prepared::Running(driver)
        }
    }
}

async fn run(shared: Arc<Shared>, prepared: Prepared) {
    match prepared {
        Prepared::Failed(closed, tx) => {
            let _ = tx.send(Event::Closed(closed)).await;
        }
        Prepared::Running(mut driver) => {
            poll_fn(|cx| driver.poll_run(cx)).await;
            // Boxed: its read buffer would otherwise sit inside every idle task.
            Box::pin(driver.shut_down()).await;
        }
    }
    shared.set_state(State::Closed);
    shared.drained.notify_waiters();
    shared.on_exit.run();
}
