//! `GET /api/cluster`: the nodes sharing this store, their heartbeats and
//! the clients each one owns.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::cluster::NodeView;

/// The cluster as one node sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ClusterView {
    /// The node answering.
    node_id: String,
    /// Every node with a row in the store, live or not.
    nodes: Vec<NodeView>,
}

#[utoipa::path(get, path = "/api/cluster", tag = "host", summary = "The nodes sharing this PostgreSQL store, their heartbeats and the clients each owns",
    responses((status = 200, description = "the cluster", body = ClusterView),
        (status = 404, description = "this host is not in a cluster (its store is SQLite)", body = super::openapi::ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = super::openapi::ErrorBody)))]
pub(super) async fn show(State(s): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    let Some(cluster) = s.host.cluster() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this host is not in a cluster: its store is SQLite; hosts sharing a postgres:// store form one",
        ));
    };
    let nodes = cluster
        .nodes()
        .await
        .map_err(crate::host::HostError::from)?;
    Ok(Json(ClusterView {
        node_id: cluster.node_id().to_string(),
        nodes,
    }))
}
