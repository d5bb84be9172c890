//! The one route table. `avatar-local` serves all of it on a TCP listener; each HTTP Lambda
//! hands its own slice of it to `lambda_http::run`, so local and deployed behaviour cannot
//! differ. A test checks [`ROUTES`] against template.yaml's HttpApi events.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::App;
use crate::health::{self, Status};
use crate::web::{auth, pages};

/// The Lambda functions that serve HTTP routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Health,
    AuthStart,
    AuthCallback,
    Pages,
}

impl Function {
    /// The function's binary (and crate) name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::AuthStart => "auth-start",
            Self::AuthCallback => "auth-callback",
            Self::Pages => "pages",
        }
    }
}

/// Every route this build serves: (method, path, function). A capability whose issue has
/// not landed is absent here rather than stubbed.
pub const ROUTES: &[(&str, &str, Function)] = &[
    ("GET", "/health", Function::Health),
    ("GET", "/auth/twitch", Function::AuthStart),
    ("GET", "/auth/twitch/callback", Function::AuthCallback),
    ("GET", "/", Function::Pages),
    ("GET", "/success", Function::Pages),
    ("GET", "/auth/status", Function::Pages),
    ("POST", "/auth/logout", Function::Pages),
    ("POST", "/auth/twitch/disconnect", Function::Pages),
    ("GET", "/static/style.css", Function::Pages),
];

/// All routes (the local server).
pub fn router(app: App) -> Router {
    routes(app, |_| true)
}

/// The routes of one Lambda function.
pub fn function_router(function: Function, app: App) -> Router {
    routes(app, |f| f == function)
}

fn routes(app: App, include: impl Fn(Function) -> bool) -> Router {
    let mut router = Router::new();
    if include(Function::Health) {
        router = router.route("/health", get(health_route));
    }
    if include(Function::AuthStart) {
        router = router.route("/auth/twitch", get(auth::start_twitch));
    }
    if include(Function::AuthCallback) {
        router = router.route("/auth/twitch/callback", get(auth::twitch_callback));
    }
    if include(Function::Pages) {
        router = router
            .route("/", get(pages::landing))
            .route("/success", get(pages::dashboard))
            .route("/auth/status", get(pages::auth_status))
            .route("/auth/logout", post(pages::logout))
            .route("/auth/twitch/disconnect", post(pages::disconnect_twitch))
            .route("/static/style.css", get(pages::stylesheet));
    }
    router.fallback(pages::not_found).with_state(app)
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
    let report = health::respond(&app).await;
    let status = match report.status {
        Status::Ok | Status::Degraded => StatusCode::OK,
        Status::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/json"),
        (axum::http::header::CACHE_CONTROL, "no-store"),
    ];
    (status, headers, report.body).into_response()
}
