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
    shutdown: CancellationToken,
}

/// The live alert page: one self-contained file, no assets from elsewhere.
const ALERT_PAGE: &str = include_str!("rules/page.html");

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
        .route("/", get(alert_page))
        .route("/alerts", get(recent_alerts))
        .route("/alerts/stream", get(alert_stream))
        .with_state(Shared {
            registry,
            feed,
            shutdown: shutdown.clone(),
        });
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

/// The newest alerts (newest first), as a JSON array; `?rule=name` keeps one rule's.
async fn recent_alerts(
    State(shared): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let rule = query.get("rule");
    let alerts: Vec<String> = shared
        .feed
        .recent()
        .into_iter()
        .filter(|alert| rule.is_none_or(|rule| *alert.rule == **rule))
        .map(|alert| alert.json.clone())
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("[{}]", alerts.join(",")),
    )
        .into_response()
}

async fn alert_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        ALERT_PAGE,
    )
        .into_response()
}

/// Server-sent events: an `alert` event (the alert as JSON) for each alert fired from now on;
/// a `lagged` event (how many were skipped) when this client fell too far behind.
async fn alert_stream(State(shared): State<Shared>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    use tokio::sync::broadcast::error::RecvError;

    let receiver = shared.feed.subscribe();
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(alert) => Event::default().event("alert").data(&alert.json),
            Err(RecvError::Lagged(skipped)) => {
                Event::default().event("lagged").data(skipped.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), receiver))
    })
    .take_until(shared.shutdown.cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
