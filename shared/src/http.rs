//! The one route table. `avatar-local` serves it on a TCP listener; each HTTP Lambda hands
//! the same router to `lambda_http::run`, so local and deployed behaviour cannot differ.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;
use crate::health::{self, Status};

/// Every route this build serves, as (method, path): checked against template.yaml by a
/// test so the deployed API and the local server list the same paths. A capability whose
/// issue has not landed is absent here rather than stubbed.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/health")];

pub fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(health_route))
        .with_state(app)
}

/// Serves `router(app)` on an already-bound listener until `shutdown` resolves, so tests
/// can bind port 0 and share this code path with `main`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health_route(State(app): State<App>) -> Response {
    let report = health::report(&app).await;
    let status = match report.status {
        Status::Ok | Status::Degraded => StatusCode::OK,
        Status::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = (status, axum::Json(report)).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}
