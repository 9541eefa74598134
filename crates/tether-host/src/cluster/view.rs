//! What the cluster looks like from the database: the nodes with their
//! heartbeats and leases, and who holds one client.

use sqlx::Row;

use super::{db, Cluster, LEASE};
use crate::store::StoreError;

/// Who holds a client's lease, for forwarding a send to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The node.
    pub node_id: String,
    /// Its advertised API address.
    pub addr: String,
    /// The lease's epoch.
    pub epoch: i64,
}

/// A node as `GET /api/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NodeView {
    /// Its generated id.
    pub node_id: String,
    /// Where its API listens (its advertised address).
    pub addr: String,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_secs: f64,
    /// Whether its heartbeat is recent enough to count it live.
    pub live: bool,
    /// The clients it holds leases for.
    pub clients: Vec<String>,
    /// The webhooks it delivers.
    pub webhooks: Vec<String>,
    /// This node (the one answering).
    pub this_node: bool,
}

impl Cluster {
    /// The nodes, their heartbeats and the clients each one holds.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.node_id, n.addr, EXTRACT(EPOCH FROM now() - n.heartbeat_at)::FLOAT8 AS age, \
             COALESCE(array_agg(l.key ORDER BY l.key) FILTER (WHERE l.key NOT LIKE '/%' AND l.expires_at > now()), '{}') AS clients, \
             COALESCE(array_agg(substr(l.key, 10) ORDER BY l.key) FILTER (WHERE l.key LIKE '/webhook/%' AND l.expires_at > now()), '{}') AS webhooks \
             FROM nodes n LEFT JOIN leases l ON l.node_id = n.node_id GROUP BY n.node_id, n.addr, n.heartbeat_at ORDER BY n.node_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list the cluster's nodes"))?;
        rows.iter()
            .map(|r| {
                let node_id: String = r.try_get("node_id")?;
                let age: f64 = r.try_get("age")?;
                Ok(NodeView {
                    this_node: node_id == self.node_id,
                    node_id,
                    addr: r.try_get("addr")?,
                    heartbeat_age_secs: age,
                    live: age < LEASE.as_secs_f64(),
                    clients: r.try_get("clients")?,
                    webhooks: r.try_get("webhooks")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("cannot read the cluster's nodes"))
    }

    /// The node holding `key`'s live lease, by the database.
    pub async fn owner_of(&self, key: &str) -> Result<Option<Owner>, StoreError> {
        let row = sqlx::query(
            "SELECT l.node_id, n.addr, l.epoch FROM leases l JOIN nodes n ON n.node_id = l.node_id \
             WHERE l.key = $1 AND l.expires_at > now()",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read a lease"))?;
        row.map(|r| {
            Ok(Owner {
                node_id: r.try_get("node_id")?,
                addr: r.try_get("addr")?,
                epoch: r.try_get("epoch")?,
            })
        })
        .transpose()
        .map_err(db("cannot read a lease"))
    }
}
