//! `/health`, Prometheus `/metrics` and the alert feed (`/alerts`) of the sidecar.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Registry;
use crate::rules::AlertFeed;

#[derive(Clone)]
struct Shared {
    registry: Registry,
    feed: AlertFeed,
}

impl axum::extract::FromRef<Shared> for Registry {
    fn from_ref(shared: &Shared) -> Registry {
        shared.registry.clone()
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    registry: Registry,
    feed: AlertFeed,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/alerts", get(recent_alerts))
        .with_state(Shared { registry, feed });
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
    let mut rules = serde_json::Map::new();
    for (name, metrics) in registry.rules() {
        let state = metrics.state.lock().clone();
        let ok = state.running && state.last_error.is_none();
        healthy &= ok;
        rules.insert(
            name,
            json!({
                "status": if ok { "ok" } else if state.running { "degraded" } else { "stopped" },
                "last_error": state.last_error,
                "alerts": metrics.alerts.load(std::sync::atomic::Ordering::Relaxed),
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
        "rules": rules,
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

/// The newest alerts (newest first), as JSON; `?rule=name` keeps one rule's.
async fn recent_alerts(
    State(shared): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let rule = query.get("rule");
    let alerts: Vec<serde_json::Value> = shared
        .feed
        .recent()
        .into_iter()
        .filter(|alert| rule.is_none_or(|rule| alert["rule"].as_str() == Some(rule.as_str())))
        .map(|alert| alert.as_ref().clone())
        .collect();
    axum::Json(alerts).into_response()
}
