//! The server's HTTP listener: `/health`, `/catalogs` (every catalog with its state, and what
//! the newest configuration load did) and `/queries` (running and recent statements).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fjord_engine::Engine;
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::reload::ReloadStatus;

#[derive(Clone)]
struct Shared {
    engine: Arc<Engine>,
    status: Arc<Mutex<ReloadStatus>>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    status: Arc<Mutex<ReloadStatus>>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/catalogs", get(catalogs))
        .route("/queries", get(queries))
        .with_state(Shared { engine, status });
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
        .engine
        .registry()
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

/// What `system.runtime.queries` shows: running statements, oldest first, then finished ones,
/// newest first.
async fn queries(State(shared): State<Shared>) -> Response {
    let now = SystemTime::now();
    let queries: Vec<serde_json::Value> = shared
        .engine
        .queries()
        .snapshot()
        .into_iter()
        .map(|query| {
            let elapsed = query
                .ended
                .unwrap_or(now)
                .duration_since(query.created)
                .map(|elapsed| elapsed.as_millis() as u64)
                .unwrap_or_default();
            json!({
                "query_id": query.id(),
                "state": query.state.as_str(),
                "user": query.user,
                "source": query.source,
                "backend_pid": query.backend_pid,
                "query": query.query,
                "created": timestamp(query.created),
                "end": query.ended.map(timestamp),
                "elapsed_ms": elapsed,
                "rows": query.rows,
                "catalogs": query.catalogs,
                "error": query.error,
            })
        })
        .collect();
    axum::Json(json!({ "queries": queries })).into_response()
}
