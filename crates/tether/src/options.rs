//! Options for opening a connection.

use std::sync::Arc;
use std::time::Duration;

use tether_proto::{Config, DeflateConfig};

/// What to do when a send would push the outgoing buffer past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackpressurePolicy {
    /// `send_*` waits until the buffer drains below the limit. Below the
    /// limit, a send that leaves a lot queued also waits while the previous
    /// batch is written, unless reading is held up by messages you have not
    /// taken yet. A task that both sends and receives should keep taking
    /// messages: a server that stops reading until it can write to you
    /// would otherwise leave a send waiting at the limit for good; use
    /// `Error` or a separate receiving task if that can happen.
    #[default]
    Wait,
    /// `send_*` fails with [`SendError::BufferFull`](crate::SendError::BufferFull).
    Error,
    /// The connection is closed with 1001 (as OkHttp does) and the send fails.
    Close,
}

/// How to open a connection. Every setter takes `&mut self` and returns it,
/// so options can be built in one expression or step by step.
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) config: Arc<Config>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) protocols: Vec<String>,
    pub(crate) origin: Option<String>,
    pub(crate) basic_auth: Option<(String, String)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_buffered: usize,
    pub(crate) backpressure: BackpressurePolicy,
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    // A browser queues without a bound: nothing to size there.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) event_queue: usize,
    pub(crate) receive_window: usize,
    pub(crate) tls_options: TlsOptions,
    pub(crate) proxy: ProxyMode,
    pub(crate) write_gate: Option<WriteGate>,
}

/// Asked before any bytes go to the socket; see
/// [`ConnectOptions::write_gate`].
pub type WriteGate = Arc<dyn Fn() -> bool + Send + Sync>;

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            config: Arc::new(Config::default()),
            headers: Vec::new(),
            protocols: Vec::new(),
            origin: None,
            basic_auth: None,
            connect_timeout: Duration::from_secs(30),
            max_buffered: 16 << 20,
            backpressure: BackpressurePolicy::Wait,
            #[cfg(not(target_arch = "wasm32"))]
            tls: None,
            event_queue: 64,
            receive_window: 1 << 20,
            tls_options: TlsOptions::default(),
            proxy: ProxyMode::None,
            write_gate: None,
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and credentials may be secrets: names only.
        f.debug_struct("ConnectOptions")
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("protocols", &self.protocols)
            .field("basic_auth", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("connect_timeout", &self.connect_timeout)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Default options: 30 s connect timeout, 64 MiB messages, compression
    /// offered, keepalive every 20 s, 16 MiB outgoing buffer that waits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a request header.
    pub fn header(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol (repeat for several, in order of preference).
    pub fn protocol(&mut self, name: impl Into<String>) -> &mut Self {
        self.protocols.push(name.into());
        self
    }

    /// Sets the Origin header.
    pub fn origin(&mut self, origin: impl Into<String>) -> &mut Self {
        self.origin = Some(origin.into());
        self
    }

    /// Sends `Authorization: Basic …` with the handshake. Credentials in the
    /// URL do the same; these win over them.
    pub fn basic_auth(
        &mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> &mut Self {
        self.basic_auth = Some((user.into(), password.into()));
        self
    }

    /// Time allowed for TCP connect, TLS and the WebSocket handshake together.
    pub fn connect_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for the close handshake before the TCP connection is dropped.
    pub fn close_timeout(&mut self, timeout: Duration) -> &mut Self {
        Arc::make_mut(&mut self.config).close_timeout = timeout;
        self
    }

    /// The largest message accepted, in bytes (default 64 MiB).
    pub fn max_message_size(&mut self, bytes: usize) -> &mut Self {
        Arc::make_mut(&mut self.config).max_message_size = bytes;
        Arc::make_mut(&mut self.config).max_frame_size = bytes;
        self
    }

    /// Turns permessage-deflate on (with default parameters) or off.
    pub fn compression(&mut self, on: bool) -> &mut Self {
        Arc::make_mut(&mut self.config).deflate = on.then(DeflateConfig::default);
        self
    }

    /// Offers permessage-deflate with these parameters.
    pub fn deflate(&mut self, deflate: DeflateConfig) -> &mut Self {
        Arc::make_mut(&mut self.config).deflate = Some(deflate);
        self
    }

    /// Keepalive: a ping every `interval`, and the connection is dead when a
    /// pong takes longer than `timeout`. `None` turns either off.
    pub fn keepalive(
        &mut self,
        interval: Option<Duration>,
        timeout: Option<Duration>,
    ) -> &mut Self {
        Arc::make_mut(&mut self.config).ping_interval = interval;
        Arc::make_mut(&mut self.config).ping_timeout = timeout;
        self
    }

    /// The outgoing buffer limit in bytes and what to do when it is full.
    pub fn backpressure(&mut self, max_buffered: usize, policy: BackpressurePolicy) -> &mut Self {
        self.max_buffered = max_buffered;
        self.backpressure = policy;
        self
    }

    /// How many bytes of received messages may wait for the application
    /// before the connection stops reading from the socket (default 1 MiB;
    /// also at most 64 waiting events). The kernel's socket buffer and TCP
    /// flow control then hold the server back, and a slow application costs
    /// bounded memory. A message is always read whole, however large.
    pub fn receive_window(&mut self, bytes: usize) -> &mut Self {
        self.receive_window = bytes;
        self
    }

    /// Uses this TLS configuration for `wss://` instead of the platform roots.
    /// (Not in a browser, which brings its own TLS.)
    #[cfg(not(target_arch = "wasm32"))]
    pub fn tls_config(&mut self, config: Arc<rustls::ClientConfig>) -> &mut Self {
        self.tls = Some(config);
        self
    }

    /// Extra CA files, a client certificate, or `insecure` for `wss://`.
    pub fn tls(&mut self, tls: TlsOptions) -> &mut Self {
        self.tls_options = tls;
        self
    }

    /// How to reach the server: directly, through the proxy the environment
    /// names, or through this proxy.
    pub fn proxy(&mut self, proxy: ProxyMode) -> &mut Self {
        self.proxy = proxy;
        self
    }

    /// Asks `gate` before writing anything to the socket once the
    /// connection is open; when it says no, the connection is dropped at
    /// once, without writing what is queued (not even a close frame). For
    /// fencing: a cluster node that lost a client's lease while it was
    /// paused must not put bytes on the wire that it queued before the
    /// pause.
    pub fn write_gate(&mut self, gate: WriteGate) -> &mut Self {
        self.write_gate = Some(gate);
        self
    }

    /// The protocol engine's configuration, for settings without a setter here.
    pub fn engine_config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }
}

/// TLS settings beyond the platform roots.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra CA certificates (PEM files) to trust, on top of the platform's.
    pub ca_files: Vec<std::path::PathBuf>,
    /// A client certificate chain and its private key (PEM), for mTLS.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Skip server certificate verification. Dangerous: anyone on the path
    /// can read and change the traffic. Logged as a warning every time.
    pub insecure: bool,
}

impl TlsOptions {
    /// Whether these options differ from the defaults.
    pub fn is_default(&self) -> bool {
        self.ca_files.is_empty() && self.client_cert.is_none() && !self.insecure
    }
}

/// Where proxy settings come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyMode {
    /// No proxy (the default for the library).
    #[default]
    None,
    /// The environment variables, as curl reads them.
    Environment,
    /// This proxy URL: `http://[user:pass@]host:port` or
    /// `socks5://[user:pass@]host:port` (`socks5h://` is the same here:
    /// names are always resolved by the proxy).
    Url(String),
}
