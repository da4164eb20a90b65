//! `/health` and Prometheus `/metrics` of the sidecar.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Registry;

pub(crate) async fn serve(listener: TcpListener, registry: Registry, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(registry);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "the HTTP listener failed");
    }
}

/// 200 when every pipeline runs, its last commit succeeded and it holds its place in its
/// consumer group; 503 otherwise. The body says which pipeline is unwell and why.
async fn health(State(registry): State<Registry>) -> Response {
    let mut healthy = true;
    let mut pipelines = serde_json::Map::new();
    for (name, metrics) in registry.snapshot() {
        let state = metrics.state.lock().clone();
        let ok = state.healthy();
        healthy &= ok;
        pipelines.insert(
            name,
            json!({
                "status": if ok { "ok" } else if state.running { "degraded" } else { "stopped" },
                "last_commit_at": state.last_commit_at,
                "last_error": state.problem(),
                "records_per_second": state.records_per_second,
            }),
        );
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "pipelines": pipelines,
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(registry): State<Registry>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        registry.render(),
    )
        .into_response()
}
