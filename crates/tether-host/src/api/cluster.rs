//! `GET /api/cluster`: the nodes sharing this store, their heartbeats and
//! the clients each one owns.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::cluster::NodeView;

/// The cluster as one node sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ClusterView {
    /// Whether this host is in a cluster (its store is PostgreSQL).
    clustered: bool,
    /// The node answering (none outside a cluster).
    node_id: Option<String>,
    /// Every node with a row in the store, live or not.
    nodes: Vec<NodeView>,
}

#[utoipa::path(get, path = "/api/cluster", tag = "host", summary = "The nodes sharing this PostgreSQL store, their heartbeats and the clients each owns",
    responses((status = 200, description = "the cluster; `clustered: false` and no nodes on a SQLite host", body = ClusterView),
        (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn show(State(s): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    let Some(cluster) = s.host.cluster() else {
        return Ok(Json(ClusterView {
            clustered: false,
            node_id: None,
            nodes: Vec::new(),
        }));
    };
    let nodes = cluster
        .nodes()
        .await
        .map_err(crate::host::HostError::from)?;
    Ok(Json(ClusterView {
        clustered: true,
        node_id: Some(cluster.node_id().to_string()),
        nodes,
    }))
}
