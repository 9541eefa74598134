//! Connections by key: find one, list them all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use crate::error::Error;
use crate::handlers::Handlers;
use crate::options::ConnectOptions;
use crate::{open, Connection, Receiver};

/// A set of live connections, each under a unique key. A connection leaves
/// the registry by itself once it is closed.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<BTreeMap<String, Connection>>>,
}

/// The key is already taken by a live connection.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another live connection has this key.
    #[error("a connection with key {0:?} already exists; close it first or pick another key")]
    KeyInUse(String),
    /// The connection could not be started.
    #[error(transparent)]
    Open(#[from] Error),
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a connection under `key` (see [`open`](crate::open)).
    pub fn open(
        &self,
        key: &str,
        url: &str,
        options: &ConnectOptions,
    ) -> Result<(Connection, Receiver), RegistryError> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(key) {
            return Err(RegistryError::KeyInUse(key.to_string()));
        }
        let (conn, rx) = open(key, url, options)?;
        let weak: Weak<Mutex<BTreeMap<String, Connection>>> = Arc::downgrade(&self.inner);
        let key_owned = key.to_string();
        let id = conn.id();
        conn.set_on_exit(Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                let mut map = inner.lock().unwrap_or_else(|e| e.into_inner());
                // Remove only this connection, not a newer one under the same key.
                if map.get(&key_owned).is_some_and(|c| c.id() == id) {
                    map.remove(&key_owned);
                }
            }
        }));
        map.insert(key.to_string(), conn.clone());
        Ok((conn, rx))
    }

    /// Opens a connection under `key` and runs `handlers` for it.
    pub fn open_with_handlers(
        &self,
        key: &str,
        url: &str,
        options: &ConnectOptions,
        handlers: Handlers,
    ) -> Result<Connection, RegistryError> {
        let (conn, rx) = self.open(key, url, options)?;
        handlers.spawn(conn.clone(), rx);
        Ok(conn)
    }

    /// The live connection with this key.
    pub fn get(&self, key: &str) -> Option<Connection> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Every live connection, ordered by key.
    pub fn list(&self) -> Vec<Connection> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// What runs once a connection has ended: the registry forgets it.
#[derive(Default)]
pub(crate) struct ExitHook(Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl ExitHook {
    pub fn set(&self, f: Box<dyn FnOnce() + Send>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    /// Runs the hook, once.
    pub fn run(&self) {
        let hook = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = hook {
            f();
        }
    }
}
