//! The host's configuration file (TOML): the `[host]` section and the
//! declared client types. The structs are the documentation: every field
//! says what it does and what it defaults to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod connection;
mod error;
mod host;
mod outbox;
mod webhook;
use connection::tls_options;
pub use connection::{KeepaliveConfig, ReconnectConfig, TlsConfig};
pub use error::ConfigError;
pub use host::{HostSection, SecretsMode};
pub use outbox::{OutboxConfig, ReadyWhen};
pub use webhook::WebhookConfig;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Host-wide settings.
    #[serde(default)]
    pub host: HostSection,
    /// The client types, each a `[[client_type]]` table.
    #[serde(default, rename = "client_type")]
    pub client_types: Vec<ClientTypeConfig>,
    /// Webhook sinks for the event log, each a `[[webhook]]` table.
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
}

/// `[[client_type]]`: a kind of server the host talks to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTypeConfig {
    /// The type's name: letters, digits, `-` and `_`.
    pub name: Spanned<String>,
    /// The Lua handler module, relative to the config file. Optional: a type
    /// without one just connects and publishes its events.
    #[serde(default)]
    pub module: Option<Spanned<String>>,
    /// Exactly one instance exists, with key = the type's name, made and
    /// updated from the defaults at every start. It cannot be deleted.
    #[serde(default)]
    pub predefined: bool,
    /// Environment variables the module may read with `env(NAME)`. Nothing
    /// else is readable, and names starting with `TETHER_` are refused.
    #[serde(default)]
    pub env: Vec<Spanned<String>>,
    /// CPU time one hook call of the Lua module may take, in milliseconds.
    /// Default 1000; at most 60000.
    #[serde(default)]
    pub cpu_limit_ms: Option<Spanned<u64>>,
    /// Memory one Lua state may use, in MiB (1 to 65536; default 64). With
    /// `lua_state = "shared"` it is for all the type's instances together.
    #[serde(default)]
    pub memory_limit_mb: Option<Spanned<u64>>,
    /// Whether each instance has a Lua state of its own (`"instance"`, the
    /// default) or all share the type's (`"shared"`).
    #[serde(default)]
    pub lua_state: LuaState,
    /// The durable outbox of the type's instances.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Which events of its instances go into the durable event log
    /// (`open`, `message`, `error`, `close`, `state`, `module`,
    /// `reconnecting`). Default: all. The others reach live streams only.
    #[serde(default)]
    pub log_events: Option<Vec<String>>,
    /// Settings the module reads as the global `settings` (for the
    /// built-in broker types: `subscribe`, `qos`, `version`, `client_id`,
    /// `heartbeat_ms`, …).
    #[serde(default)]
    pub settings: Option<toml::Table>,
    /// Defaults for the type's instances.
    #[serde(default)]
    pub defaults: TypeDefaults,
}

/// Where a type's instances run their Lua module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LuaState {
    /// A state of its own per instance (about 30 KiB each): one instance's
    /// memory limit, CPU and stuck calls are its own.
    #[default]
    Instance,
    /// One state for all instances of the type (an idle instance costs a
    /// few KiB of it): their hooks run one at a time, the memory limit is
    /// the type's, and a call stuck inside a C function holds up every
    /// instance of the type. For many instances of a light module.
    Shared,
}

/// `[client_type.defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDefaults {
    /// The server URL, `ws://` or `wss://`. Required for predefined types.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// Request headers sent with the handshake.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Subprotocols to offer, in order of preference.
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Seconds for TCP, TLS and the handshake together. Default 30.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Connect at start and reconnect when the link is lost. Default false.
    #[serde(default)]
    pub auto_connect: bool,
    /// Honour `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`. Default false.
    #[serde(default)]
    pub use_env_proxy: bool,
    /// Reconnect timing.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Keepalive pings.
    #[serde(default)]
    pub keepalive: KeepaliveConfig,
    /// Offer permessage-deflate. Default true.
    #[serde(default = "yes")]
    pub compression: bool,
    /// TLS settings for `wss://` beyond the platform's roots.
    #[serde(default)]
    pub tls: TlsConfig,
}

fn yes() -> bool {
    true
}

/// A client type, checked and ready to use.
#[derive(Debug, Clone)]
pub struct ClientType {
    /// The name.
    pub name: String,
    /// The module's path, resolved against the config file.
    pub module: Option<PathBuf>,
    /// The module's source, read at load time.
    pub module_source: Option<String>,
    /// Environment variables the module may read.
    pub env: Vec<String>,
    /// CPU time per hook call.
    pub cpu_limit: Duration,
    /// Memory one Lua state may use.
    pub memory_limit: usize,
    /// Where the instances run their Lua module.
    pub lua_state: LuaState,
    /// The durable outbox.
    pub outbox: OutboxConfig,
    /// `[client_type.settings]` as JSON (an object).
    pub settings: serde_json::Value,
    /// How API sends become frames (the built-in broker types).
    pub framing: Option<crate::brokers::framing::Framing>,
    /// The events logged (`None`: all).
    pub log_events: Option<Vec<String>>,
    /// Whether exactly one instance exists with key = name.
    pub predefined: bool,
    /// Default URL.
    pub url: Option<String>,
    /// Default headers.
    pub headers: BTreeMap<String, String>,
    /// Subprotocols.
    pub protocols: Vec<String>,
    /// Default connect timeout in seconds.
    pub timeout: u64,
    /// Default auto-connect flag.
    pub auto_connect: bool,
    /// Default env-proxy flag.
    pub use_env_proxy: bool,
    /// Reconnect timing.
    pub reconnect: ReconnectConfig,
    /// Keepalive.
    pub keepalive: KeepaliveConfig,
    /// Offer compression.
    pub compression: bool,
    /// TLS options (paths resolved against the config file).
    pub tls: tether::TlsOptions,
}

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where the management API listens.
    pub listen: SocketAddr,
    /// The store URL, with a relative SQLite path resolved.
    pub store: String,
    /// The admin token from the file, if any.
    pub admin_token: Option<String>,
    /// Serve `/metrics` without the token (loopback only).
    pub metrics_public: bool,
    /// How long a shutdown may take.
    pub shutdown_grace: Duration,
    /// How long an event stream may be quiet before a keep-alive comment.
    pub sse_keep_alive: Duration,
    /// How secrets are stored.
    pub secrets: SecretsMode,
    /// The key file, resolved against the config file.
    pub secret_key_file: Option<PathBuf>,
    /// The demo echo endpoint's address, if on.
    pub demo_echo: Option<SocketAddr>,
    /// The URL other cluster nodes reach this node's API at.
    pub advertise: Option<String>,
    /// How long the event log keeps events.
    pub event_retention: crate::events::Retention,
    /// What events may hold in memory.
    pub event_memory: crate::events::EventMemory,
    /// How long delivered outbox messages are kept.
    pub outbox_keep_done: Duration,
    /// The client types, by name.
    pub types: BTreeMap<String, ClientType>,
    /// Webhook sinks.
    pub webhooks: Vec<WebhookConfig>,
}

impl Loaded {
    /// The defaults with no file: no types, loopback API, `tether.db` in the
    /// working directory.
    pub fn defaults() -> Self {
        Self::from_config(HostConfig::default(), "<defaults>", Path::new("."), "")
            .expect("defaults are valid")
    }

    /// Reads and checks a config file. Errors name the file and line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            source: e,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Self::parse(&text, &file, &base)
    }

    /// Parses config text; `file` is for messages, `base` resolves paths.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Self, ConfigError> {
        let config: HostConfig =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(file, text, e))?;
        Self::from_config(config, file, base, text)
    }

    fn from_config(
        config: HostConfig,
        file: &str,
        base: &Path,
        text: &str,
    ) -> Result<Self, ConfigError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            ConfigError::at(file, text, span, message)
        };
        let store = resolve_store(&config.host.store, base).map_err(|m| ConfigError::Invalid {
            file: file.to_string(),
            line: error::line_of(text, "store"),
            message: m,
        })?;
        let mut types = BTreeMap::new();
        for t in config.client_types {
            let name = t.name.get_ref().clone();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(at(
                    t.name.span(),
                    format!("client type name {name:?} must be letters, digits, '-' or '_'"),
                ));
            }
            if types.contains_key(&name) {
                return Err(at(
                    t.name.span(),
                    format!("client type {name:?} is declared twice"),
                ));
            }
            if let Some(url) = &t.defaults.url {
                check_url(url.get_ref()).map_err(|m| at(url.span(), m))?;
            }
            if t.predefined && t.defaults.url.is_none() {
                return Err(at(
                    t.name.span(),
                    format!("predefined client type {name:?} needs defaults.url: its instance connects to it"),
                ));
            }
            let settings =
                serde_json::to_value(t.settings.clone().unwrap_or_default()).unwrap_or_default();
            let builtin = match &t.module {
                Some(m) if m.get_ref().starts_with(crate::brokers::builtin::PREFIX) => Some(
                    crate::brokers::builtin::Builtin::load(m.get_ref(), &settings)
                        .map_err(|e| at(m.span(), e))?,
                ),
                _ => None,
            };
            let (module, module_source) = match &t.module {
                None => (None, None),
                Some(_) if builtin.is_some() => {
                    let b = builtin.as_ref().map(|b| (b.path(), b.source.to_string()));
                    (b.as_ref().map(|b| b.0.clone()), b.map(|b| b.1))
                }
                Some(m) => {
                    let path = base.join(m.get_ref());
                    let source = std::fs::read_to_string(&path).map_err(|e| {
                        at(m.span(), format!("cannot read module {}: {e}; the path is relative to the config file", path.display()))
                    })?;
                    crate::modules::lua::check_syntax(&source, &path)
                        .map_err(|e| at(m.span(), e))?;
                    (Some(path), Some(source))
                }
            };
            let mut env = Vec::new();
            for name in &t.env {
                let n = name.get_ref();
                if n.starts_with(crate::modules::lua::RESERVED_ENV_PREFIX) {
                    return Err(at(
                        name.span(),
                        format!("env {n:?}: variables named TETHER_* belong to the host and cannot be given to modules"),
                    ));
                }
                if n.is_empty() || n.contains('=') {
                    return Err(at(name.span(), format!("env {n:?} is not a variable name")));
                }
                env.push(n.clone());
            }
            if let Some(names) = &t.log_events {
                const EVENTS: [&str; 7] = [
                    "open",
                    "message",
                    "error",
                    "close",
                    "state",
                    "module",
                    "reconnecting",
                ];
                if let Some(bad) = names.iter().find(|n| !EVENTS.contains(&n.as_str())) {
                    return Err(at(
                        t.name.span(),
                        format!(
                            "log_events: {bad:?} is not an event; use {}",
                            EVENTS.join(", ")
                        ),
                    ));
                }
            }
            let cpu_limit = match &t.cpu_limit_ms {
                None => crate::modules::lua::DEFAULT_CPU_LIMIT,
                Some(ms) if (1..=60_000).contains(ms.get_ref()) => {
                    Duration::from_millis(*ms.get_ref())
                }
                Some(ms) => {
                    return Err(at(
                        ms.span(),
                        format!(
                            "cpu_limit_ms = {} is out of range: use 1 to 60000",
                            ms.get_ref()
                        ),
                    ))
                }
            };
            let memory_limit = match &t.memory_limit_mb {
                None => crate::modules::lua::MEMORY_LIMIT,
                Some(mb) if (1..=65_536).contains(mb.get_ref()) => (*mb.get_ref() as usize) << 20,
                Some(mb) => {
                    return Err(at(
                        mb.span(),
                        format!(
                            "memory_limit_mb = {} is out of range: use 1 to 65536",
                            mb.get_ref()
                        ),
                    ))
                }
            };
            let d = t.defaults;
            d.reconnect
                .check()
                .and_then(|()| d.keepalive.check())
                .map_err(|(key, m)| (key, format!("client_type {name:?}: {m}")))
                .map_err(|e| ConfigError::out_of_range(file, text, e))?;
            types.insert(
                name.clone(),
                ClientType {
                    name,
                    module,
                    module_source,
                    env,
                    cpu_limit,
                    memory_limit,
                    lua_state: t.lua_state,
                    outbox: match &builtin {
                        // The built-in types are ready once subscribed.
                        Some(_) => OutboxConfig {
                            ready: ReadyWhen::Module,
                            ..t.outbox.clone()
                        },
                        None => t.outbox.clone(),
                    },
                    settings,
                    framing: builtin.as_ref().map(|b| b.framing),
                    log_events: t.log_events.clone(),
                    predefined: t.predefined,
                    url: d.url.map(Spanned::into_inner),
                    headers: d.headers,
                    protocols: match (&builtin, d.protocols.is_empty()) {
                        (Some(b), true) => vec![b.protocol.to_string()],
                        _ => d.protocols,
                    },
                    timeout: d.timeout.unwrap_or(30),
                    auto_connect: d.auto_connect,
                    use_env_proxy: d.use_env_proxy,
                    reconnect: d.reconnect,
                    keepalive: d.keepalive,
                    compression: d.compression,
                    tls: tls_options(&d.tls, base).map_err(|m| at(t.name.span(), m))?,
                },
            );
        }
        if let Some(addr) = &config.host.demo_echo {
            if !addr.get_ref().ip().is_loopback() {
                return Err(at(
                    addr.span(),
                    format!("demo_echo {} must be a loopback address", addr.get_ref()),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for w in &config.webhooks {
            let quoted = format!("\"{}\"", w.name);
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("name") && l.contains(&quoted))
                .map_or(0, |i| i + 1);
            let invalid = |message| ConfigError::Invalid {
                file: file.to_string(),
                line,
                message,
            };
            w.check().map_err(invalid)?;
            if !names.insert(w.name.clone()) {
                return Err(invalid(format!("webhook {:?} is declared twice", w.name)));
            }
        }
        config
            .host
            .check()
            .map_err(|e| ConfigError::out_of_range(file, text, e))?;
        if config.host.metrics_public && !config.host.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                line: error::line_of(text, "metrics_public"),
                message: "metrics_public needs a loopback listen address; elsewhere /metrics always needs the token"
                    .into(),
            });
        }
        Ok(Loaded {
            listen: config.host.listen,
            store,
            admin_token: config.host.admin_token,
            metrics_public: config.host.metrics_public,
            shutdown_grace: Duration::from_secs(config.host.shutdown_grace_secs),
            sse_keep_alive: Duration::from_secs(config.host.sse_keep_alive_secs),
            secrets: config.host.secrets,
            secret_key_file: config.host.secret_key_file.map(|p| base.join(p)),
            demo_echo: config.host.demo_echo.map(Spanned::into_inner),
            advertise: config.host.advertise.clone(),
            outbox_keep_done: Duration::from_secs(config.host.outbox_keep_done_secs),
            event_retention: crate::events::Retention {
                max_events: config.host.event_log_max_events,
                max_age: Duration::from_secs(config.host.event_log_max_age_secs),
            },
            event_memory: crate::events::EventMemory {
                data_limit: config.host.event_data_limit_bytes,
                history_per_client: config.host.history_bytes_per_client,
                total: config.host.event_memory_bytes,
            },
            types,
            webhooks: config.webhooks,
        })
    }
}

/// A URL instances may use: `ws://` or `wss://` with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "ws" | "wss") {
        return Err(format!("URL {url:?} must start with ws:// or wss://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL {url:?} has no host"));
    }
    Ok(())
}

fn resolve_store(store: &str, base: &Path) -> Result<String, String> {
    if store == "sqlite::memory:" {
        return Ok(store.to_string());
    }
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        // Shown redacted: the URL may carry the database password.
        let shown = tether::redact(store);
        let url = url::Url::parse(store)
            .map_err(|e| format!("store {shown:?} is not a valid PostgreSQL URL: {e}"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("store {shown:?} names no database server"));
        }
        return Ok(store.to_string());
    }
    let Some(path) = store.strip_prefix("sqlite://") else {
        return Err(format!(
            "store {:?} is not supported: use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB",
            tether::redact(store)
        ));
    };
    if path.is_empty() {
        return Err("store needs a path after sqlite://".into());
    }
    let p = Path::new(path);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    Ok(format!("sqlite://{}", full.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Loaded::parse(text, "t.toml", Path::new("."))
    }

    #[test]
    fn defaults_without_types() {
        let l = parse("").unwrap();
        assert_eq!(l.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(l.store, "sqlite://./tether.db");
        assert!(l.types.is_empty());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("[host]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:3"), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e =
            parse("[[client_type]]\nname = \"a\"\n[client_type.defaults]\nurl = \"http://x/\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("t.toml:4") && e.contains("ws://"), "{e}");
        let e = parse("[[client_type]]\nname = \"a\"\nmodule = \"missing.lua\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:3") && e.contains("missing.lua"), "{e}");
        let e = parse("[[client_type]]\nname = \"a\"\npredefined = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:2") && e.contains("defaults.url"), "{e}");
        let e = parse("[[client_type]]\nname = \"a\"\n[[client_type]]\nname = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:4") && e.contains("twice"), "{e}");
        let e = parse("[host]\nstore = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:2") && e.contains("sqlite://"), "{e}");
        // A PostgreSQL URL's password is never repeated in an error.
        let e = parse("[host]\nstore = \"postgres://u:pw-secret@/db\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:2") && e.contains("not a valid PostgreSQL URL"),
            "{e}"
        );
        assert!(!e.contains("pw-secret"), "{e}");
    }
}
