//! The host as a cluster member: it connects a client while this node
//! holds its lease, stops it when the lease goes, and learns of instances
//! other nodes created, changed or deleted.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Host, HostError};
use crate::client::ClientState;
use crate::cluster::{Cluster, Members};
use crate::config::Loaded;
use crate::modules::SendGate;
use crate::store::postgres::{EVENTS_CHANNEL, INSTANCES_CHANNEL, OUTBOX_CHANNEL};
use crate::store::PgStore;

impl Host {
    /// Starts a host that shares its clients with the other hosts on the
    /// same PostgreSQL store: no client connects until this node holds its
    /// lease. `addr` is where this node's API is reachable.
    pub async fn start_in_cluster(
        config: &Loaded,
        store: Arc<PgStore>,
        addr: String,
    ) -> Result<Arc<Host>, HostError> {
        let pool = store.pool().clone();
        let host = Self::start_inner(config, store.clone(), Default::default(), true).await?;
        let members: Arc<dyn Members> = host.clone();
        let weak: Weak<dyn Members> = Arc::downgrade(&members);
        let cluster = Cluster::join(pool.clone(), addr, weak).await?;
        store.fence_with(cluster.node_id());
        // One node delivers each webhook: the one holding its lease.
        for w in host.webhooks() {
            let (c, key) = (Arc::downgrade(&cluster), webhook_key(w.name()));
            w.set_gate(Arc::new(move || {
                c.upgrade().is_some_and(|c| c.may_send(&key))
            }));
        }
        let _ = host.cluster.set(cluster);
        tokio::spawn(follow_instances(Arc::downgrade(&host), pool));
        Ok(host)
    }

    /// The cluster this host is a node of.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// What a stored instance's sends ask first, in a cluster.
    pub(super) fn send_gate(self: &Arc<Self>) -> Option<SendGate> {
        if !self.clustered {
            return None;
        }
        let host = Arc::downgrade(self);
        Some(Arc::new(move |key: &str| {
            host.upgrade()
                .and_then(|h| h.cluster.get().map(|c| c.may_send(key)))
                .unwrap_or(false)
        }))
    }

    /// In a cluster, before an operator's connect: fine when this node
    /// holds the client's lease or wins it now; NotOwner (naming the owner)
    /// when another node holds it.
    pub(super) async fn own_for_connect(&self, key: &str) -> Result<(), HostError> {
        if !self.clustered {
            return Ok(());
        }
        let Some(c) = self.cluster.get() else {
            return Err(HostError::NotOwner {
                key: key.to_string(),
                owner: None,
            });
        };
        if c.epoch(key).is_some() || c.claim_one(key).await?.is_some() {
            return Ok(());
        }
        Err(HostError::NotOwner {
            key: key.to_string(),
            owner: c.owner_of(key).await?,
        })
    }

    /// In a cluster, before an operator's disconnect: NotOwner when another
    /// node holds the lease; a client that does not connect by itself gives
    /// its lease up.
    pub(super) async fn own_for_disconnect(&self, key: &str) -> Result<(), HostError> {
        let Some(c) = self.cluster.get().filter(|_| self.clustered) else {
            return Ok(());
        };
        if c.epoch(key).is_none() {
            return match c.owner_of(key).await? {
                Some(owner) => Err(HostError::NotOwner {
                    key: key.to_string(),
                    owner: Some(owner),
                }),
                None => Ok(()),
            };
        }
        let auto = self.runtime(key).is_ok_and(|rt| rt.spec().reconnect);
        if !auto {
            self.runtime(key)?.disconnect();
            c.release_one(key).await?;
        }
        Ok(())
    }

    /// Leaves the cluster after closing this node's clients.
    pub async fn leave_cluster(&self) {
        if let Some(c) = self.cluster.get() {
            c.leave().await;
        }
    }

    /// Makes this node's copy of an instance match the store (another
    /// node created, changed or deleted it).
    pub(super) async fn reload_instance(self: &Arc<Self>, key: &str) -> Result<(), HostError> {
        let stored = self.store.get(key).await?;
        let local = self.runtime(key).ok();
        match (stored, local) {
            (Some(record), None) => {
                self.start_instance(&record);
                if let Some(c) = self.cluster.get() {
                    c.poke();
                }
            }
            (Some(record), Some(rt)) => rt.set_spec(self.spec_for(&record)),
            (None, Some(rt)) => {
                self.clients
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(key);
                rt.shutdown();
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// The lease key of a webhook's delivery ('/' is never in a client's key).
fn webhook_key(name: &str) -> String {
    format!("/webhook/{name}")
}

/// Follows `NOTIFY tether_instances` (and re-reads everything now and
/// then, and after a lost connection, in case a notification was missed).
async fn follow_instances(host: Weak<Host>, pool: sqlx::PgPool) {
    loop {
        let Ok(mut listener) = sqlx::postgres::PgListener::connect_with(&pool).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if listener
            .listen_all([INSTANCES_CHANNEL, OUTBOX_CHANNEL, EVENTS_CHANNEL])
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut resync = tokio::time::interval(Duration::from_secs(10));
        loop {
            let Some(h) = host.upgrade() else { return };
            drop(h);
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(n)) if n.channel() == EVENTS_CHANNEL => {
                        let Some(h) = host.upgrade() else { return };
                        if let Some(shared) = &h.shared_log {
                            shared.appended.notify_one();
                        }
                    }
                    Ok(Some(n)) if n.channel() == OUTBOX_CHANNEL => {
                        let Some(h) = host.upgrade() else { return };
                        h.wake_outbox(n.payload());
                    }
                    Ok(Some(n)) => {
                        let Some(h) = host.upgrade() else { return };
                        if let Err(e) = h.reload_instance(n.payload()).await {
                            tracing::warn!(client = %n.payload(), error = %e, "cannot reload an instance another node changed");
                        }
                    }
                    // Reconnected: a notification may have been missed.
                    Ok(None) => resync.reset_immediately(),
                    Err(_) => break,
                },
                _ = resync.tick() => {
                    let Some(h) = host.upgrade() else { return };
                    if let Err(e) = h.resync().await {
                        tracing::warn!(error = %e, "cannot re-read the instances");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Host {
    /// Reloads every instance whose stored version differs from this node's.
    async fn resync(self: &Arc<Self>) -> Result<(), HostError> {
        let stored = self.store.list().await?;
        let mut seen = std::collections::HashSet::new();
        for record in &stored {
            seen.insert(record.key.clone());
            if self.runtime(&record.key).is_err() {
                self.reload_instance(&record.key).await?;
            }
        }
        let gone: Vec<String> = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.reload_instance(&key).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Members for Host {
    fn wanted(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, rt)| rt.spec().reconnect && rt.status().state != ClientState::Disabled)
            .map(|(k, _)| k.clone())
            .collect();
        keys.extend(self.webhooks().iter().map(|w| webhook_key(w.name())));
        keys
    }

    fn acquired(&self, key: &str, _epoch: i64) {
        if let Some(w) = self
            .webhooks()
            .iter()
            .find(|w| webhook_key(w.name()) == key)
        {
            w.poke();
            return;
        }
        if let Ok(rt) = self.runtime(key) {
            rt.connect();
        }
    }

    fn lost(&self, key: &str) {
        if let Ok(rt) = self.runtime(key) {
            rt.disconnect();
            // Directly too: the worker may be busy in a hook.
            if let Some(conn) = rt.handle().connection() {
                let _ = conn.close(1001, "this node no longer owns the client");
            }
        }
    }

    async fn stop(&self, key: &str) {
        let Ok(rt) = self.runtime(key) else { return };
        rt.disconnect();
        if let Some(conn) = rt.handle().connection() {
            let _ = conn.close(1001, "handed over to another node");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while matches!(
            rt.status().state,
            ClientState::Open | ClientState::Closing | ClientState::Connecting
        ) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
