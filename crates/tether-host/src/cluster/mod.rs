//! Several hosts sharing their clients on PostgreSQL: each auto-connect
//! client is connected on exactly one live node, and moves when that node
//! dies, pauses, or leaves.
//!
//! Ownership is a lease per client in the `leases` table, with an epoch
//! that grows each time the lease changes hands. Every time is PostgreSQL's
//! `now()`, never a node's clock:
//! - every [`RENEW`] a node renews all its leases in one statement, for
//!   [`LEASE`], and beats its heart in `nodes`;
//! - a node claims a lease only once it has expired
//!   (`INSERT … ON CONFLICT … WHERE expires_at < now()`), bumping the epoch;
//! - which node should own a client is rendezvous hashing with bounded
//!   loads over the live nodes ([`assign`]), computed alike on every node;
//! - a node that could not renew for [`FENCE_AFTER`] (by its own monotonic
//!   clock, which keeps counting through a pause) stops those clients and
//!   refuses their sends: a node that wakes from a pause sends nothing;
//! - on shutdown a node closes its clients, deletes its leases and says so
//!   (`NOTIFY`), and the others claim them at once.

pub mod assign;
mod view;

pub use view::{NodeView, Owner};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};
use tokio::sync::Notify;

use crate::store::StoreError;

/// How often a node renews its leases and beats its heart.
pub const RENEW: Duration = Duration::from_secs(1);
/// How long a lease lasts after a renewal (and a heartbeat counts).
pub const LEASE: Duration = Duration::from_secs(5);
/// A node that could not renew for this long stops its clients.
pub const FENCE_AFTER: Duration = Duration::from_secs(4);
/// A node's round with the database gives up after this long.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// A node joins the assignment only this long after it started, and keys
/// move to it only then: nodes started together do not trade clients.
const SETTLE: Duration = Duration::from_secs(2);
/// A client nobody holds is claimed by any node after this long.
const ORPHAN_AFTER: Duration = Duration::from_secs(3);
/// The channel nodes notify each other on.
pub const CHANNEL: &str = "tether_cluster";

/// What the cluster asks of the host it runs in.
#[async_trait::async_trait]
pub trait Members: Send + Sync {
    /// The clients this node would run: its auto-connect instances.
    fn wanted(&self) -> Vec<String>;
    /// This node now owns `key` (at `epoch`): connect it.
    fn acquired(&self, key: &str, epoch: i64);
    /// This node no longer owns `key`: stop it now.
    fn lost(&self, key: &str);
    /// Stops `key` and returns once its connection is closed (a handover).
    async fn stop(&self, key: &str);
}

/// One node of a cluster: its id, its leases, and whether it may send.
pub struct Cluster {
    pool: PgPool,
    node_id: String,
    addr: String,
    started: Instant,
    /// Keys held, with their epochs.
    held: Mutex<HashMap<String, i64>>,
    /// When the last renewal that succeeded was sent.
    renewed: Mutex<Option<Instant>>,
    /// When each wanted key was first seen with no live lease.
    orphans: Mutex<HashMap<String, Instant>>,
    /// Keys being handed over (not claimed back meanwhile).
    leaving: Mutex<HashSet<String>>,
    wake: Notify,
    stopping: tokio_util::sync::CancellationToken,
    /// `TETHER_CLUSTER_SECRET`: what nodes show each other when they
    /// forward a send.
    secret: Option<String>,
}

fn db(context: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |source| StoreError::Database {
        context: context.to_string(),
        source,
    }
}

impl Cluster {
    /// Joins the cluster on `pool` as a new node reachable at `addr`, and
    /// starts renewing and watching.
    pub async fn join(
        pool: PgPool,
        addr: String,
        members: Weak<dyn Members>,
    ) -> Result<Arc<Cluster>, StoreError> {
        let node_id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO nodes (node_id, addr) VALUES ($1, $2)")
            .bind(&node_id)
            .bind(&addr)
            .execute(&pool)
            .await
            .map_err(db("cannot join the cluster"))?;
        let cluster = Arc::new(Cluster {
            pool,
            node_id,
            addr,
            started: Instant::now(),
            held: Mutex::default(),
            renewed: Mutex::new(Some(Instant::now())),
            orphans: Mutex::default(),
            leaving: Mutex::default(),
            wake: Notify::new(),
            stopping: tokio_util::sync::CancellationToken::new(),
            secret: std::env::var("TETHER_CLUSTER_SECRET")
                .ok()
                .filter(|s| !s.is_empty()),
        });
        tracing::info!(node = %cluster.node_id, addr = %cluster.addr, "joined the cluster");
        tokio::spawn(cluster.clone().renew_loop(members.clone()));
        tokio::spawn(cluster.clone().fence_loop(members));
        tokio::spawn(cluster.clone().listen_loop());
        Ok(cluster)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether this node holds `key`'s lease and renewed it recently
    /// enough to act on it: every send checks this.
    pub fn may_send(&self, key: &str) -> bool {
        self.fresh()
            && self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(key)
    }

    /// The epoch of `key`'s lease, if this node holds it.
    pub fn epoch(&self, key: &str) -> Option<i64> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    fn fresh(&self) -> bool {
        self.renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < FENCE_AFTER)
    }

    async fn renew_loop(self: Arc<Self>, members: Weak<dyn Members>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RENEW) => {}
                _ = self.wake.notified() => {}
                _ = self.stopping.cancelled() => return,
            }
            let Some(m) = members.upgrade() else { return };
            let sent = Instant::now();
            // Renewing comes first and alone decides freshness; claiming and
            // handing over follow, and never delay a renewal.
            match tokio::time::timeout(ROUND_TIMEOUT, self.renew(m.as_ref())).await {
                Ok(Ok(())) => {
                    *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cluster: cannot renew leases");
                    continue;
                }
                Err(_) => {
                    tracing::warn!("cluster: renewing leases took over {ROUND_TIMEOUT:?}");
                    continue;
                }
            }
            match tokio::time::timeout(ROUND_TIMEOUT, self.rebalance(&m)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cluster: cannot claim leases"),
                Err(_) => tracing::warn!("cluster: claiming leases took over {ROUND_TIMEOUT:?}"),
            }
        }
    }

    /// Stops every held client once renewals have failed for too long.
    async fn fence_loop(self: Arc<Self>, members: Weak<dyn Members>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.stopping.cancelled() => return,
            }
            if self.fresh() {
                continue;
            }
            let dropped: Vec<String> = self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .map(|(k, _)| k)
                .collect();
            if dropped.is_empty() {
                continue;
            }
            tracing::warn!(
                clients = dropped.len(),
                "cluster: leases not renewed for {FENCE_AFTER:?}: stopping this node's clients"
            );
            let Some(m) = members.upgrade() else { return };
            for key in &dropped {
                m.lost(key);
            }
        }
    }

    /// Wakes the renewal round when another node says something changed.
    async fn listen_loop(self: Arc<Self>) {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(RENEW).await;
                    continue;
                }
            };
            if listener.listen(CHANNEL).await.is_err() {
                tokio::time::sleep(RENEW).await;
                continue;
            }
            loop {
                tokio::select! {
                    n = listener.try_recv() => match n {
                        Ok(Some(_)) => self.wake.notify_one(),
                        // Lost the connection: it reconnects on the next call.
                        Ok(None) => {}
                        Err(_) => break,
                    },
                    _ = self.stopping.cancelled() => return,
                }
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    /// Heartbeat and renew; notices leases lost meanwhile.
    async fn renew(&self, m: &dyn Members) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("cannot renew leases"))?;
        sqlx::query("UPDATE nodes SET heartbeat_at = now(), addr = $2 WHERE node_id = $1")
            .bind(&self.node_id)
            .bind(&self.addr)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot beat the heart"))?;
        let renewed: HashMap<String, i64> = sqlx::query(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $2) \
             WHERE node_id = $1 AND expires_at > now() RETURNING key, epoch",
        )
        .bind(&self.node_id)
        .bind(LEASE.as_secs_f64())
        .fetch_all(&mut *tx)
        .await
        .map_err(db("cannot renew leases"))?
        .iter()
        .map(|r| Ok((r.try_get("key")?, r.try_get("epoch")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db("cannot read leases"))?;
        tx.commit().await.map_err(db("cannot renew leases"))?;
        // Held here, yet not renewed: the lease expired and may be another's.
        let lost: Vec<String> = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let lost = held
                .keys()
                .filter(|k| !renewed.contains_key(*k))
                .cloned()
                .collect::<Vec<_>>();
            for k in &lost {
                held.remove(k);
            }
            lost
        };
        for k in &lost {
            tracing::warn!(client = %k, "cluster: lease lost");
            m.lost(k);
        }
        Ok(())
    }

    /// Claims what this node should own and nobody holds; hands over, in
    /// the background, what another node should own.
    async fn rebalance(self: &Arc<Self>, m: &Arc<dyn Members>) -> Result<(), StoreError> {
        let live = self.live_nodes().await?;
        let wanted = m.wanted();
        let owners = assign::assign(&wanted, &live);
        let leases = self.lease_states(&wanted).await?;
        let now = Instant::now();
        let mut claim = Vec::new();
        let mut hand_over = Vec::new();
        {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let leaving = self.leaving.lock().unwrap_or_else(|e| e.into_inner());
            let mut orphans = self.orphans.lock().unwrap_or_else(|e| e.into_inner());
            orphans.retain(|k, _| wanted.contains(k));
            for key in &wanted {
                let mine = owners.get(key.as_str()).is_some_and(|n| *n == self.node_id);
                if held.contains_key(key) {
                    if !mine && !owners.is_empty() && !leaving.contains(key) {
                        hand_over.push(key.clone());
                    }
                    continue;
                }
                let live_lease = leases.get(key).copied().unwrap_or(false);
                if live_lease {
                    orphans.remove(key);
                    continue;
                }
                let since = *orphans.entry(key.clone()).or_insert(now);
                let settled = self.started.elapsed() >= SETTLE;
                if (mine && settled) || now.duration_since(since) >= ORPHAN_AFTER {
                    claim.push(key.clone());
                }
            }
        }
        if !claim.is_empty() {
            for (key, epoch) in self.claim(&claim).await? {
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), epoch);
                self.orphans
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                tracing::info!(client = %key, epoch, "cluster: lease acquired");
                m.acquired(&key, epoch);
            }
        }
        // Hand over only to settled nodes, a few at a time.
        if !hand_over.is_empty() && self.settled_peers(&owners, &hand_over).await? {
            hand_over.truncate(hand_over.len().div_ceil(2).max(16));
            self.leaving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(hand_over.iter().cloned());
            let (cluster, m) = (self.clone(), m.clone());
            tokio::spawn(async move {
                futures_util::future::join_all(
                    hand_over
                        .iter()
                        .map(|key| cluster.hand_over(m.as_ref(), key)),
                )
                .await;
            });
        }
        Ok(())
    }

    /// Ids of the nodes whose heartbeat is recent, this one included.
    async fn live_nodes(&self) -> Result<Vec<String>, StoreError> {
        let mut nodes: Vec<String> = sqlx::query_scalar(
            "SELECT node_id FROM nodes WHERE heartbeat_at > now() - make_interval(secs => $1) OR node_id = $2",
        )
        .bind(LEASE.as_secs_f64())
        .bind(&self.node_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list the cluster's nodes"))?;
        nodes.sort();
        Ok(nodes)
    }

    /// For each key with a lease row: whether the lease is live.
    async fn lease_states(&self, keys: &[String]) -> Result<HashMap<String, bool>, StoreError> {
        let rows =
            sqlx::query("SELECT key, expires_at > now() AS live FROM leases WHERE key = ANY($1)")
                .bind(keys)
                .fetch_all(&self.pool)
                .await
                .map_err(db("cannot read leases"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("live")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("cannot read leases"))
    }

    /// Claims the leases of `keys` that are free or expired; returns those
    /// won, with their new epochs.
    async fn claim(&self, keys: &[String]) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "INSERT INTO leases (key, node_id, epoch, expires_at) \
             SELECT k, $2, 1, now() + make_interval(secs => $3) FROM unnest($1::TEXT[]) AS k \
             ON CONFLICT (key) DO UPDATE SET node_id = excluded.node_id, epoch = leases.epoch + 1, \
             expires_at = excluded.expires_at WHERE leases.expires_at < now() \
             RETURNING key, epoch",
        )
        .bind(keys)
        .bind(&self.node_id)
        .bind(LEASE.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot claim leases"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("epoch")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("cannot read claimed leases"))
    }

    /// Whether the nodes `keys` would move to have been up long enough.
    async fn settled_peers(
        &self,
        owners: &HashMap<&str, String>,
        keys: &[String],
    ) -> Result<bool, StoreError> {
        let targets: HashSet<&str> = keys
            .iter()
            .filter_map(|k| owners.get(k.as_str()).map(String::as_str))
            .collect();
        let targets: Vec<&str> = targets.into_iter().collect();
        let unsettled: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM nodes WHERE node_id = ANY($1) AND started_at > now() - make_interval(secs => $2)",
        )
        .bind(&targets)
        .bind((SETTLE + RENEW * 3).as_secs_f64())
        .fetch_one(&self.pool)
        .await
        .map_err(db("cannot list the cluster's nodes"))?;
        Ok(unsettled == 0)
    }

    /// Closes `key` here, then gives its lease up and tells the others.
    async fn hand_over(&self, m: &dyn Members, key: &str) {
        m.stop(key).await;
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        let released = sqlx::query("DELETE FROM leases WHERE key = $1 AND node_id = $2")
            .bind(key)
            .bind(&self.node_id)
            .execute(&self.pool)
            .await;
        self.leaving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Err(e) = released {
            tracing::warn!(client = %key, error = %e, "cluster: cannot release a lease (it expires by itself)");
            return;
        }
        tracing::info!(client = %key, "cluster: handed over");
        let _ = sqlx::query("SELECT pg_notify($1, 'handover')")
            .bind(CHANNEL)
            .execute(&self.pool)
            .await;
    }

    /// Leaves the cluster: the caller has closed this node's clients; the
    /// leases go, and the others are told to claim them at once.
    pub async fn leave(&self) {
        self.stopping.cancel();
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let left = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM leases WHERE node_id = $1")
                .bind(&self.node_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM nodes WHERE node_id = $1")
                .bind(&self.node_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_notify($1, 'left')")
                .bind(CHANNEL)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        match tokio::time::timeout(ROUND_TIMEOUT, left).await {
            Ok(Ok(())) => tracing::info!(node = %self.node_id, "left the cluster"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster: cannot release leases (they expire by themselves)")
            }
            Err(_) => {
                tracing::warn!("cluster: releasing leases timed out (they expire by themselves)")
            }
        }
    }

    /// Claims `key`'s lease for this node when no node holds it (an
    /// operator's connect); returns the epoch, or None when another holds it.
    pub async fn claim_one(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let won = self.claim(&[key.to_string()]).await?;
        let epoch = won.into_iter().next().map(|(_, e)| e);
        if let Some(e) = epoch {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.to_string(), e);
        }
        Ok(epoch)
    }

    /// Gives `key`'s lease up (an operator's disconnect of a client that
    /// does not connect by itself).
    pub async fn release_one(&self, key: &str) -> Result<(), StoreError> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        sqlx::query("DELETE FROM leases WHERE key = $1 AND node_id = $2")
            .bind(key)
            .bind(&self.node_id)
            .execute(&self.pool)
            .await
            .map_err(db("cannot release a lease"))?;
        Ok(())
    }

    /// The cluster secret, when set.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// Renews now instead of at the next tick (an instance appeared).
    pub fn poke(&self) {
        self.wake.notify_one();
    }
}
