//! The one route table. `avatar-local` serves all of it on a TCP listener (see
//! [`crate::web::edge`]); each HTTP Lambda hands its own part of it to `lambda_http::run`, so
//! local and deployed behaviour cannot differ. [`ROUTE_TABLES`] (one table per function) is
//! the only list of deployed routes: the routers are built from it, and a test checks it
//! against template.yaml's HTTP API routes. [`LOCAL_ONLY_ROUTES`] adds what only
//! `avatar-local` serves (`/metrics`).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

use super::headers::SecurityHeaders;
use crate::app::App;
use crate::bundle::Function;
use crate::metrics::Metrics;
use crate::tokens::TokenKeeper;
use crate::web::health::{HealthProbes, HealthSources, Status};
use crate::web::{auth, chat_token, donationalerts, pages};

impl Function {
    /// The routes this function serves (none for a scheduled function).
    pub fn routes(self) -> impl Iterator<Item = &'static Route> {
        all_routes().filter(move |route| route.function == self)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (browsers, monitoring).
    Public,
    /// Other services only (the chat bots). In AWS, API Gateway's AWS_IAM authorizer checks
    /// the caller before the function runs; the local server requires `Authorization: Bearer
    /// {INTERNAL_API_TOKEN}` and serves no such route when that variable is unset.
    Internal,
}

/// One route: who serves it and with which handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub function: Function,
    pub access: Access,
    /// The handler, registered for the given method.
    handler: fn(MethodFilter) -> MethodRouter<WebState>,
}

impl Route {
    const fn new(
        method: Method,
        path: &'static str,
        function: Function,
        handler: fn(MethodFilter) -> MethodRouter<WebState>,
    ) -> Self {
        Self {
            method,
            path,
            function,
            access: Access::Public,
            handler,
        }
    }

    const fn internal(mut self) -> Self {
        self.access = Access::Internal;
        self
    }

    fn method_router(&self) -> MethodRouter<WebState> {
        method_router(&self.method, self.path, self.handler)
    }
}

/// `handler` registered for `method` (a static table's entry: a bad one fails every test).
fn method_router(
    method: &Method,
    path: &str,
    handler: fn(MethodFilter) -> MethodRouter<WebState>,
) -> MethodRouter<WebState> {
    let filter = MethodFilter::try_from(method.clone())
        .unwrap_or_else(|_| panic!("{method} {path}: no method filter"));
    handler(filter)
}

/// The route table: every route this build serves, one table per HTTP function. A function's
/// binary names only its own table ([`crate::lambda::run_http_function`]), so the linker
/// leaves every other function's handlers, pages and provider flows out of it; the local
/// server, the route tests and the template test read them all ([`all_routes`]). A
/// capability whose issue has not landed is absent here rather than stubbed.
pub static ROUTE_TABLES: &[&[Route]] = &[
    HEALTH_ROUTES,
    AUTH_START_ROUTES,
    AUTH_CALLBACK_ROUTES,
    PAGES_ROUTES,
    CHAT_TOKEN_ROUTES,
];

/// Every route of every function, in table order.
pub fn all_routes() -> impl Iterator<Item = &'static Route> {
    ROUTE_TABLES.iter().flat_map(|table| table.iter())
}

pub static HEALTH_ROUTES: &[Route] = &[Route::new(Method::GET, "/health", Function::Health, |m| {
    on(m, health_route)
})];

pub static AUTH_START_ROUTES: &[Route] = &[
    Route::new(Method::GET, "/auth/twitch", Function::AuthStart, |m| {
        on(m, auth::start_twitch)
    }),
    Route::new(
        Method::GET,
        "/auth/donationalerts",
        Function::AuthStart,
        |m| on(m, donationalerts::start),
    ),
];

pub static AUTH_CALLBACK_ROUTES: &[Route] = &[
    Route::new(
        Method::GET,
        "/auth/twitch/callback",
        Function::AuthCallback,
        |m| on(m, auth::twitch_callback),
    ),
    Route::new(
        Method::GET,
        "/auth/donationalerts/callback",
        Function::AuthCallback,
        |m| on(m, donationalerts::callback),
    ),
];

pub static PAGES_ROUTES: &[Route] = &[
    Route::new(Method::GET, "/", Function::Pages, |m| on(m, pages::landing)),
    Route::new(Method::GET, "/success", Function::Pages, |m| {
        on(m, pages::dashboard)
    }),
    Route::new(Method::GET, "/auth/status", Function::Pages, |m| {
        on(m, pages::auth_status)
    }),
    Route::new(Method::POST, "/auth/logout", Function::Pages, |m| {
        on(m, pages::logout)
    }),
    Route::new(
        Method::POST,
        "/auth/twitch/disconnect",
        Function::Pages,
        |m| on(m, pages::disconnect_twitch),
    ),
    Route::new(
        Method::POST,
        "/api/donationalerts/disconnect",
        Function::Pages,
        |m| on(m, donationalerts::disconnect),
    ),
    Route::new(
        Method::GET,
        "/api/donationalerts/status",
        Function::Pages,
        |m| on(m, donationalerts::status),
    ),
    Route::new(Method::GET, "/static/style.css", Function::Pages, |m| {
        on(m, pages::stylesheet)
    }),
];

pub static CHAT_TOKEN_ROUTES: &[Route] = &[
    Route::new(
        Method::GET,
        "/internal/chat-token/{twitchUserId}",
        Function::ChatToken,
        |m| on(m, chat_token::chat_token),
    )
    .internal(),
    Route::new(
        Method::POST,
        "/internal/chat-token/{twitchUserId}/refused",
        Function::ChatToken,
        |m| on(m, chat_token::chat_token_refused),
    )
    .internal(),
];

/// A route only `avatar-local` serves: no function and no API Gateway route exist for it.
pub struct LocalRoute {
    pub method: Method,
    pub path: &'static str,
    handler: fn(MethodFilter) -> MethodRouter<WebState>,
}

/// The local server's own routes (SPEC §5). `/metrics` is Prometheus' scrape target; a
/// function's figures leave it as EMF lines instead (a scrape through API Gateway would
/// reach one arbitrary instance of one function). Public, like `/health`, whose kind of
/// figures it carries (counts, no streamer, no token): requiring INTERNAL_API_TOKEN would
/// put the credential that hands out streamers' chat tokens into every scraper's settings.
pub static LOCAL_ONLY_ROUTES: &[LocalRoute] = &[LocalRoute {
    method: Method::GET,
    path: "/metrics",
    handler: |m| on(m, metrics_route),
}];

/// What a router's requests share: the app, and the `/health` probe they reuse (one per
/// router, so one per process). A handler asks for the part it uses (`State<App>`); a clone
/// is one reference count.
#[derive(Clone)]
pub(crate) struct WebState(Arc<WebParts>);

struct WebParts {
    app: App,
    health: HealthProbes,
    health_sources: HealthSources,
}

impl WebState {
    fn new(app: App) -> Self {
        let health = HealthProbes::new(app.config.health_max_age);
        let health_sources = HealthSources::of(&app);
        Self(Arc::new(WebParts {
            app,
            health,
            health_sources,
        }))
    }
}

impl FromRef<WebState> for App {
    fn from_ref(web: &WebState) -> App {
        web.0.app.clone()
    }
}

/// The chat-token routes use the stored tokens only.
impl FromRef<WebState> for TokenKeeper {
    fn from_ref(web: &WebState) -> TokenKeeper {
        web.0.app.tokens.clone()
    }
}

/// `/metrics` reads the figures only.
impl FromRef<WebState> for Arc<Metrics> {
    fn from_ref(web: &WebState) -> Arc<Metrics> {
        web.0.app.metrics.clone()
    }
}

/// Where a router runs: it decides who checks the callers of internal routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// `avatar-local`: internal routes need the bearer token, and exist only with one.
    LocalServer,
    /// A Lambda behind API Gateway, whose authorizer has checked the caller already.
    ApiGateway,
}

/// All routes and the local-only ones (the local server).
pub fn router(app: App) -> Router {
    build(all_routes(), LOCAL_ONLY_ROUTES, app, Edge::LocalServer)
}

/// The routes of one Lambda function (tests; a function's binary uses [`table_router`]).
#[cfg(feature = "test-support")]
pub fn function_router(function: Function, app: App) -> Router {
    build(function.routes(), &[], app, Edge::ApiGateway)
}

/// A Lambda function's router from its own table (one of [`ROUTE_TABLES`]), which is all its
/// binary links; the same router as `function_router` (feature `test-support`) gives for that function.
pub fn table_router(table: &'static [Route], app: App) -> Router {
    build(table.iter(), &[], app, Edge::ApiGateway)
}

fn build<'a>(
    routes: impl Iterator<Item = &'a Route>,
    local_only: &[LocalRoute],
    app: App,
    edge: Edge,
) -> Router {
    let headers = SecurityHeaders::for_config(&app.config);
    let mut router = Router::new();
    for route in local_only {
        router = router.route(
            route.path,
            method_router(&route.method, route.path, route.handler),
        );
    }
    for route in routes {
        let method_router = match (route.access, edge) {
            (Access::Public, _) | (Access::Internal, Edge::ApiGateway) => route.method_router(),
            (Access::Internal, Edge::LocalServer) => {
                let Some(token) = app.config.internal_api_token.clone() else {
                    continue;
                };
                route
                    .method_router()
                    .layer(axum::middleware::from_fn(move |request, next| {
                        chat_token::require_bearer(token.clone(), request, next)
                    }))
            }
        };
        router = router.route(route.path, method_router);
    }
    // Layered last, so the fallback and the 405s of the method routers get the headers too.
    router
        .fallback(pages::not_found)
        .with_state(WebState::new(app))
        .layer(tower::util::MapResponseLayer::new(
            move |mut response: Response| {
                headers.apply(response.headers_mut());
                response
            },
        ))
}

/// Serves `router(app)` on an already-bound listener until `shutdown` resolves, with the
/// timeouts and the connection cap of `app.config.http` (see [`crate::web::edge`]). Tests bind
/// port 0 and share this code path with `main`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = app.config.http;
    let headers = SecurityHeaders::for_config(&app.config);
    super::edge::serve(listener, router(app), limits, headers, shutdown).await
}

async fn metrics_route(State(metrics): State<Arc<Metrics>>) -> Response {
    let headers = [
        (
            axum::http::header::CONTENT_TYPE,
            crate::metrics::PROMETHEUS_CONTENT_TYPE,
        ),
        (axum::http::header::CACHE_CONTROL, "no-store"),
    ];
    (StatusCode::OK, headers, metrics.prometheus_text()).into_response()
}

async fn health_route(State(web): State<WebState>) -> Response {
    let report = web.0.health.respond(&web.0.health_sources).await;
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
