//! The server's HTTP listener: `/health`, and `/catalogs` (every catalog with its state, and
//! what the newest configuration load did).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fjord_catalog::CatalogRegistry;
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::reload::ReloadStatus;

#[derive(Clone)]
struct Shared {
    registry: Arc<CatalogRegistry>,
    status: Arc<Mutex<ReloadStatus>>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    registry: Arc<CatalogRegistry>,
    status: Arc<Mutex<ReloadStatus>>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/catalogs", get(catalogs))
        .with_state(Shared { registry, status });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "the HTTP listener failed");
    }
}

async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

fn timestamp(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The catalogs as they serve now (name, type, state, last error, when loaded, which file
/// defines it), and the configuration's load status: a rejected edit shows here with its file,
/// line and reason until a good edit replaces it.
async fn catalogs(State(shared): State<Shared>) -> Response {
    let status = shared.status.lock().clone();
    let catalogs: Vec<serde_json::Value> = shared
        .registry
        .describe()
        .into_iter()
        .map(|info| {
            json!({
                "name": info.name,
                "type": info.type_name,
                "state": info.state,
                "last_error": info.last_error,
                "loaded_at": timestamp(info.loaded_at),
                "file": status.catalog_sources.get(&info.name).map(|path| path.display().to_string()),
            })
        })
        .collect();
    let rejected = status
        .rejected
        .as_ref()
        .map(|(at, reason)| json!({ "at": timestamp(*at), "reason": reason }));
    axum::Json(json!({
        "config": {
            "file": status.file.as_ref().map(|path| path.display().to_string()),
            "loaded_at": timestamp(status.loaded_at),
            "rejected_edit": rejected,
            "restart_needed": status.restart_needed,
        },
        "catalogs": catalogs,
    }))
    .into_response()
}
