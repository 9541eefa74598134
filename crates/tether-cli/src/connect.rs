//! `tether connect URL`: an interactive and scriptable client.
//!
//! Input: every stdin line, without its line ending, is one message (text,
//! or binary with `--binary`). At end of input it sends close 1000 and keeps
//! printing what arrives until the close handshake ends.
//!
//! Output: a text message is printed as its own line; a binary message is
//! printed as one line of base64 (standard alphabet, padded). With `--json`
//! every event is one JSON object per line. Errors and the close go to
//! stderr without `--json`.
//!
//! Exit status: 0 after a close handshake with 1000 or 1001; 1 for any other
//! end; 2 for usage errors.

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use clap::Args;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use tether::{ConnectOptions, Event, Message};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The server, ws://HOST[:PORT]/PATH or wss://…; user:password@ in it is
    /// sent as Basic auth.
    pub url: String,
    /// A request header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,
    /// A subprotocol to offer (repeatable, in order of preference).
    #[arg(short = 'p', long = "protocol", value_name = "NAME")]
    pub protocols: Vec<String>,
    /// Seconds allowed for TCP connect, TLS and the handshake together.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
    /// After the end of stdin, keep printing what arrives for SECS before
    /// closing (e.g. `echo '{"op":"ping"}' | tether connect --wait 2 URL`).
    #[arg(long, value_name = "SECS")]
    pub wait: Option<f64>,
    /// Seconds to wait for the close handshake before dropping the connection.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub close_timeout: f64,
    /// The largest message accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_message: usize,
    /// Send stdin lines as binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Print one JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    pub no_compression: bool,
    /// Trust this CA certificate (PEM) for wss:// too (repeatable).
    #[arg(long, value_name = "FILE")]
    pub ca: Vec<std::path::PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Do not verify the server's certificate. Dangerous; warns every time.
    #[arg(long)]
    pub insecure: bool,
    /// Proxy to use: http://[user:pass@]host:port or socks5://[user:pass@]host:port.
    /// Wins over HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY, which apply otherwise.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    pub proxy: Option<String>,
    /// Connect directly, ignoring the proxy environment variables.
    #[arg(long)]
    pub no_proxy: bool,
    /// Seconds between keepalive pings (0 turns them off).
    #[arg(long, value_name = "SECS", default_value_t = tether::proto::DEFAULT_PING_INTERVAL.as_secs_f64())]
    pub ping_interval: f64,
    /// Seconds to wait for a pong before the connection counts as dead (0: forever).
    #[arg(long, value_name = "SECS", default_value_t = tether::proto::DEFAULT_PING_TIMEOUT.as_secs_f64())]
    pub ping_timeout: f64,
    /// Outgoing buffer limit in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub max_buffered: usize,
    /// What a send does when the outgoing buffer is full: wait, error, or close (1001).
    #[arg(long, value_enum, default_value_t = Backpressure::Wait)]
    pub backpressure: Backpressure,
    /// Reconnect when the connection is lost (exponential backoff with full
    /// jitter, 1 s to 30 s), until stdin ends.
    #[arg(long)]
    pub reconnect: bool,
    /// With --reconnect: give up after this many attempts in a row.
    #[arg(long, value_name = "N", requires = "reconnect")]
    pub max_attempts: Option<u32>,
}

/// `--backpressure` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait until the server reads.
    Wait,
    /// Fail the send.
    Error,
    /// Close the connection with 1001.
    Close,
}

/// Prints events in the chosen format.
struct Output {
    json: bool,
}

impl Output {
    fn line(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    fn open(&self, protocol: Option<&str>) {
        if self.json {
            self.line(json!({"event": "open", "protocol": protocol}));
        }
    }

    fn message(&self, m: &Message) {
        match (self.json, m) {
            (true, Message::Text(t)) => {
                self.line(json!({"event": "message", "type": "text", "data": t}))
            }
            (true, Message::Binary(b)) => self.line(json!({
                "event": "message", "type": "binary",
                "base64": base64::engine::general_purpose::STANDARD.encode(b),
            })),
            (false, m) => {
                let mut out = std::io::stdout().lock();
                let _ = match m {
                    Message::Text(t) => writeln!(out, "{t}"),
                    Message::Binary(b) => writeln!(
                        out,
                        "{}",
                        base64::engine::general_purpose::STANDARD.encode(b)
                    ),
                };
                let _ = out.flush();
            }
        }
    }

    fn error(&self, kind: &str, message: &str, status: Option<u16>) {
        if self.json {
            let mut v = json!({"event": "error", "kind": kind, "message": message});
            if let Some(s) = status {
                v["status"] = json!(s);
            }
            self.line(v);
        } else {
            eprintln!("tether: error ({kind}): {message}");
        }
    }

    fn close(&self, code: u16, reason: &str) {
        if self.json {
            self.line(json!({"event": "close", "code": code, "reason": reason}));
        } else {
            eprintln!(
                "tether: closed with {code}{}{reason}",
                if reason.is_empty() { "" } else { " " }
            );
        }
    }
}

fn usage_error(message: &str) -> i32 {
    eprintln!("tether connect: {message}");
    2
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{name} must be a non-negative number of seconds"))
}

fn build_options(args: &ConnectArgs) -> Result<ConnectOptions, String> {
    if let Some(wait) = args.wait {
        seconds("wait", wait)?;
    }
    let mut options = ConnectOptions::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} must look like 'Name: value'"))?;
        options.header(name.trim(), value.trim());
    }
    for p in &args.protocols {
        options.protocol(p.clone());
    }
    if args.max_message == 0 {
        return Err("--max-message must be at least 1".into());
    }
    let off_if_zero = |d: Duration| (!d.is_zero()).then_some(d);
    options.keepalive(
        off_if_zero(seconds("ping-interval", args.ping_interval)?),
        off_if_zero(seconds("ping-timeout", args.ping_timeout)?),
    );
    options.tls(tether::TlsOptions {
        ca_files: args.ca.clone(),
        client_cert: args.cert.clone().zip(args.key.clone()),
        insecure: args.insecure,
    });
    options.proxy(match (&args.proxy, args.no_proxy) {
        (Some(url), _) => tether::ProxyMode::Url(url.clone()),
        (None, true) => tether::ProxyMode::None,
        (None, false) => tether::ProxyMode::Environment,
    });
    let policy = match args.backpressure {
        Backpressure::Wait => tether::BackpressurePolicy::Wait,
        Backpressure::Error => tether::BackpressurePolicy::Error,
        Backpressure::Close => tether::BackpressurePolicy::Close,
    };
    options.backpressure(args.max_buffered, policy);
    options
        .connect_timeout(seconds("timeout", args.timeout)?)
        .close_timeout(seconds("close-timeout", args.close_timeout)?)
        .max_message_size(args.max_message)
        .compression(!args.no_compression);
    Ok(options)
}

/// Takes one stdin line (without its line ending) out of `line` as the
/// message to send, or says why it cannot be sent.
fn take_line(line: &mut Vec<u8>, binary: bool, line_no: u64) -> Result<Message, String> {
    let mut bytes = std::mem::take(line);
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    if binary {
        return Ok(Message::Binary(bytes));
    }
    String::from_utf8(bytes)
        .map(Message::Text)
        .map_err(|_| format!("stdin line {line_no} is not UTF-8; use --binary to send bytes"))
}

/// Where stdin lines go: a plain or a reconnecting connection.
trait Outbox {
    async fn send(&self, message: Message) -> Result<(), tether::SendError>;
    fn close(&self, code: u16, reason: &str) -> Result<(), tether::SendError>;
}

impl Outbox for tether::Connection {
    async fn send(&self, message: Message) -> Result<(), tether::SendError> {
        tether::Connection::send(self, &message).await
    }
    fn close(&self, code: u16, reason: &str) -> Result<(), tether::SendError> {
        tether::Connection::close(self, code, reason)
    }
}

impl Outbox for tether::Persistent {
    async fn send(&self, message: Message) -> Result<(), tether::SendError> {
        tether::Persistent::send(self, message).await
    }
    fn close(&self, code: u16, reason: &str) -> Result<(), tether::SendError> {
        tether::Persistent::close(self, code, reason)
    }
}

/// Handles one read from stdin: sends the line (reporting a line that
/// cannot be sent or a failed send), or at the end of input (or a read
/// error, reported) closes with 1000, at once or, with `--wait`, after
/// `close_at` is reached. Returns whether input is still open.
async fn on_stdin(
    out: &Output,
    to: &impl Outbox,
    read: std::io::Result<usize>,
    line: &mut Vec<u8>,
    input: &mut Input,
) -> bool {
    match read {
        Ok(0) | Err(_) => {
            if let Err(e) = read {
                out.error("stdin", &format!("cannot read stdin: {e}"), None);
            }
            match input.wait {
                Some(wait) => input.close_at = Some(tokio::time::Instant::now() + wait),
                None => {
                    let _ = to.close(1000, "");
                }
            }
            false
        }
        Ok(_) => {
            input.line_no += 1;
            match take_line(line, input.binary, input.line_no) {
                Ok(message) => {
                    if let Err(e) = to.send(message).await {
                        out.error("send", &e.to_string(), None);
                    }
                }
                Err(e) => out.error("input", &e, None),
            }
            true
        }
    }
}

/// What the stdin side of a connection needs to know.
struct Input {
    binary: bool,
    line_no: u64,
    /// `--wait`: how long to keep reading after the end of stdin.
    wait: Option<Duration>,
    /// When to close, once stdin has ended under `--wait`.
    close_at: Option<tokio::time::Instant>,
}

impl Input {
    fn new(args: &ConnectArgs) -> Self {
        Input {
            binary: args.binary,
            line_no: 0,
            // Checked by build_options.
            wait: args.wait.and_then(|w| Duration::try_from_secs_f64(w).ok()),
            close_at: None,
        }
    }

    /// Waits until it is time to close after `--wait` (forever before that).
    async fn close_due(&self) {
        match self.close_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

pub async fn run(args: ConnectArgs) -> i32 {
    if args.reconnect {
        return run_persistent(args).await;
    }
    let out = Output { json: args.json };
    let options = match build_options(&args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    if args.insecure {
        eprintln!("tether: WARNING: --insecure: the server's certificate is not verified; anyone on the path can read and change this connection");
    }
    let (conn, mut rx) = match tether::open("cli", &args.url, &options) {
        Ok(pair) => pair,
        Err(e) => return usage_error(&e.to_string()),
    };

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut input_open = false; // becomes true once the connection is open
    let mut input = Input::new(&args);
    loop {
        tokio::select! {
            event = rx.next() => {
                match event {
                    Some(Event::Open { protocol, .. }) => {
                        out.open(protocol.as_deref());
                        input_open = true;
                    }
                    Some(Event::Message(m)) => out.message(&m),
                    Some(Event::Closed(c)) => {
                        if let Some(e) = &c.error {
                            out.error(e.kind(), &e.to_string(), e.http_status());
                        }
                        out.close(c.code, &c.reason);
                        return if c.clean && matches!(c.code, 1000 | 1001) { 0 } else { 1 };
                    }
                    Some(_) => {}
                    None => return 1,
                }
            }
            read = stdin.read_until(b'\n', &mut line), if input_open => {
                input_open = on_stdin(&out, &conn, read, &mut line, &mut input).await;
            }
            _ = input.close_due() => {
                input.close_at = None;
                let _ = conn.close(1000, "");
            }
        }
    }
}

/// `--reconnect`: the same input and output, over a persistent connection.
async fn run_persistent(args: ConnectArgs) -> i32 {
    use tether::{Persistent, PersistentEvent, PersistentOptions, ReconnectPolicy};
    let out = Output { json: args.json };
    let options = match build_options(&args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    let policy = ReconnectPolicy {
        max_delay: Duration::from_secs(30),
        max_attempts: args.max_attempts,
        ..Default::default()
    };
    let (conn, mut rx) = match Persistent::open(
        "cli",
        &args.url,
        &options,
        PersistentOptions {
            policy,
            queue_bytes: 0,
            ..Default::default()
        },
    ) {
        Ok(pair) => pair,
        Err(e) => return usage_error(&e.to_string()),
    };
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    // Input is read once the first connection is open.
    let mut input_open = false;
    let mut input = Input::new(&args);
    let mut started = false;
    let mut last_clean = false;
    loop {
        tokio::select! {
            event = rx.next() => match event {
                Some(PersistentEvent::Open { protocol }) => {
                    out.open(protocol.as_deref());
                    if !started {
                        started = true;
                        input_open = true;
                    }
                }
                Some(PersistentEvent::Message(m)) => out.message(&m),
                Some(PersistentEvent::Disconnected(c)) => {
                    if let Some(e) = &c.error {
                        out.error(e.kind(), &e.to_string(), e.http_status());
                    }
                    out.close(c.code, &c.reason);
                    last_clean = c.clean && matches!(c.code, 1000 | 1001);
                }
                Some(PersistentEvent::Reconnecting { attempt, delay }) => {
                    if out.json {
                        out.line(json!({"event": "reconnecting", "attempt": attempt, "delay_ms": delay.as_millis() as u64}));
                    } else {
                        eprintln!("tether: reconnecting in {} ms (attempt {attempt})", delay.as_millis());
                    }
                }
                Some(PersistentEvent::GaveUp { attempts }) => {
                    out.error("reconnect", &format!("gave up after {attempts} attempts"), None);
                    return 1;
                }
                Some(PersistentEvent::Closed) | None => return if last_clean { 0 } else { 1 },
                Some(_) => {}
            },
            read = stdin.read_until(b'\n', &mut line), if input_open => {
                input_open = on_stdin(&out, &conn, read, &mut line, &mut input).await;
            }
            _ = input.close_due() => {
                input.close_at = None;
                let _ = conn.close(1000, "");
            }
        }
    }
}
