//! `tether serve`: load the config, open the store, settle the admin token,
//! start the host, serve the API until Ctrl-C or SIGTERM.
//!
//! On the first signal the host stops accepting requests, ends the live
//! event streams, closes every client with 1001, and closes the store,
//! all within the grace period (`[host] shutdown_grace_secs`, default 10);
//! then `run` returns. A second signal exits the process at once.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::api::{router, AppState, TokenCheck};
use crate::config::{ConfigError, Loaded, SecretsMode};
use crate::host::{Host, HostError};
use crate::store::{SecretKey, Secrets, SqliteStore, Store, StoreError};

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host could not start.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Binding beyond loopback without an explicit token.
    #[error("refusing to listen on {0}, which is not loopback, without an admin token: set admin_token in [host] or TETHER_ADMIN_TOKEN")]
    UnsafeBind(SocketAddr),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The secret key is unusable.
    #[error("secret key: {0}")]
    SecretKey(String),
    /// The server failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// How the store treats secrets, from `TETHER_SECRET_KEY`, the key file
/// and `[host] secrets`.
pub fn secrets(config: &Loaded) -> Result<Secrets, ServeError> {
    let text = match std::env::var("TETHER_SECRET_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
    {
        Some(k) => Some(k),
        None => match &config.secret_key_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ServeError::SecretKey(format!(
                    "cannot read secret_key_file {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        },
    };
    match text {
        Some(t) => SecretKey::from_base64(&t)
            .map(Secrets::Sealed)
            .map_err(|e| ServeError::SecretKey(e.to_string())),
        None if config.secrets == SecretsMode::Plaintext => {
            tracing::warn!("secrets = \"plaintext\": passwords and secret headers are stored unencrypted; set TETHER_SECRET_KEY to encrypt them");
            Ok(Secrets::Plaintext)
        }
        None => Ok(Secrets::Refused),
    }
}

/// `tether secrets rotate`: re-seals every secret of the config's store
/// under `new_key`. Run it while the host is stopped, then start the host
/// with the new key.
pub async fn rotate(config_path: &Path, new_key: &str) -> Result<usize, ServeError> {
    let config = Loaded::load(config_path)?;
    let new_key =
        SecretKey::from_base64(new_key).map_err(|e| ServeError::SecretKey(e.to_string()))?;
    let Secrets::Sealed(current) = secrets(&config)? else {
        return Err(ServeError::SecretKey(
            "rotating needs the current key in TETHER_SECRET_KEY (or secret_key_file)".into(),
        ));
    };
    if crate::store::is_postgres(&config.store) {
        return Err(ServeError::SecretKey(
            "rotating the key of a PostgreSQL store is not supported yet: rotate on a SQLite store"
                .into(),
        ));
    }
    let store = SqliteStore::open_with(&config.store, Secrets::Sealed(current)).await?;
    let n = store.rotate(&new_key).await?;
    store.close().await;
    Ok(n)
}

/// Where the admin token came from.
pub enum TokenSource {
    /// `TETHER_ADMIN_TOKEN` or the config: set by a person on purpose.
    Explicit(TokenCheck),
    /// Generated earlier and kept (hashed) in the store.
    Stored(TokenCheck),
    /// Generated now; shown once.
    Generated(TokenCheck, String),
}

const TOKEN_SETTING: &str = "admin_token_sha256";

/// Settles the admin token: environment, then config, then the store, then
/// a fresh one.
pub async fn admin_token(config: &Loaded, store: &dyn Store) -> Result<TokenSource, StoreError> {
    if let Some(t) = std::env::var("TETHER_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(TokenSource::Explicit(TokenCheck::new(&t)));
    }
    if let Some(t) = config.admin_token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(TokenSource::Explicit(TokenCheck::new(t)));
    }
    if let Some(check) = store
        .setting(TOKEN_SETTING)
        .await?
        .as_deref()
        .and_then(TokenCheck::from_hex)
    {
        return Ok(TokenSource::Stored(check));
    }
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let check = TokenCheck::new(&token);
    store.set_setting(TOKEN_SETTING, &check.hex()).await?;
    Ok(TokenSource::Generated(check, token))
}

/// Runs the host until a shutdown signal. `on_ready` gets the bound address.
pub async fn run(
    config_path: Option<&Path>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let config = match config_path {
        Some(p) => Loaded::load(p)?,
        None => Loaded::defaults(),
    };
    let explicit = std::env::var("TETHER_ADMIN_TOKEN").is_ok_and(|t| !t.is_empty())
        || config.admin_token.as_ref().is_some_and(|t| !t.is_empty());
    if !explicit && !config.listen.ip().is_loopback() {
        // Checked before a token is generated: one nobody saw would lock people out.
        return Err(ServeError::UnsafeBind(config.listen));
    }
    let secrets = secrets(&config)?;
    // A PostgreSQL store is shared: this host is then one node of a cluster.
    let pg = if crate::store::is_postgres(&config.store) {
        Some(Arc::new(
            crate::store::PgStore::open_with(&config.store, secrets.clone()).await?,
        ))
    } else {
        None
    };
    let store: Arc<dyn Store> = match &pg {
        Some(pg) => pg.clone(),
        None => crate::store::open(&config.store, secrets.clone()).await?,
    };
    let token = match admin_token(&config, store.as_ref()).await? {
        TokenSource::Explicit(c) | TokenSource::Stored(c) => c,
        TokenSource::Generated(c, token) => {
            eprintln!("tether: generated an admin token (shown only this once; it is stored hashed):\n\n    {token}\n\nUse it as TETHER_ADMIN_TOKEN for `tether clients` and the API. Lost it? Set TETHER_ADMIN_TOKEN (or admin_token in [host]) to a token of your choice.");
            c
        }
    };
    if let Some(addr) = config.demo_echo {
        // Before the host starts, so the example's client finds it at once.
        let bound = crate::demo_echo::serve(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        tracing::info!(addr = %bound, "demo echo endpoint listening (ws://{bound}/)");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let host = match pg {
        Some(pg) => {
            let advertised = config
                .advertise
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            Host::start_in_cluster(&config, pg, advertised).await?
        }
        None => Host::start(&config, store).await?,
    };
    tracing::info!(%addr, types = config.types.len(), "management API listening");
    on_ready(addr);
    let mut state = AppState::new(host.clone(), token);
    state.metrics_public = config.metrics_public;
    state.sse_keep_alive = config.sse_keep_alive;
    if let Secrets::Sealed(key) = &secrets {
        // Web UI sessions then survive a restart.
        state.sessions = crate::api::session::Sessions::with_key(key.derive("web-ui-sessions"));
    }
    let stopping = state.stopping.clone();
    let app = router(state);
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stopping.clone().cancelled_owned())
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        _ = shutdown_signal() => {}
        result = &mut server => {
            // The server ended by itself: an accept error.
            host.shutdown().await;
            return match result {
                Ok(r) => r.map_err(ServeError::from),
                Err(e) => Err(ServeError::Io(std::io::Error::other(e))),
            };
        }
    }
    tracing::info!(
        grace_secs = config.shutdown_grace.as_secs(),
        "shutting down: closing clients (a second signal exits at once)"
    );
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("tether: second signal: exiting now");
        std::process::exit(1);
    });
    stopping.cancel();
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    let closing = tokio::spawn({
        let host = host.clone();
        // A cluster node gives its leases up once its clients are closed,
        // so the others take them over at once.
        async move {
            host.shutdown().await;
            host.leave_cluster().await;
        }
    });
    let mut closing = closing;
    // Leaving the cluster needs the store: in a cluster it closes after.
    let mut closed = false;
    if host.cluster().is_some() {
        match tokio::time::timeout_at(deadline, &mut closing).await {
            Ok(_) => closed = true,
            Err(_) => {
                tracing::warn!("shutdown grace period passed while leaving the cluster")
            }
        }
    }
    // Requests in flight finish (event streams end at once); then the store
    // is flushed, before waiting for slow clients, so that a client stuck
    // past the grace period cannot keep the store from being closed.
    let half = tokio::time::Instant::now() + config.shutdown_grace / 2;
    if tokio::time::timeout_at(half, server).await.is_err() {
        tracing::warn!("requests still running at shutdown were cut off");
    }
    if tokio::time::timeout(Duration::from_secs(2), host.store().close())
        .await
        .is_err()
    {
        tracing::warn!("the store did not close in time");
    }
    if !closed && tokio::time::timeout_at(deadline, closing).await.is_err() {
        tracing::warn!(
            grace_secs = config.shutdown_grace.as_secs(),
            "shutdown grace period passed: exiting with clients still closing"
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
