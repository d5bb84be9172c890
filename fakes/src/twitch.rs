//! A fake of Twitch's OAuth server (`id.twitch.tv/oauth2`) and of Helix Get Users
//! (`api.twitch.tv/helix/users`), for integration tests and `avatar-local --demo`.
//!
//! It follows the documented API, status codes and error bodies included, so the
//! application's Twitch client meets the answers it would get from Twitch:
//!
//! - `GET /oauth2/authorize` shows a consent page for the configured user (no JavaScript);
//!   its form posts back to `POST /oauth2/authorize`, which redirects to the registered
//!   `redirect_uri` with `code`, `scope` and `state`, or with `error=access_denied`. A
//!   client or redirect URI that is not registered gets a 400 page and never a redirect.
//! - `POST /oauth2/token` exchanges a one-time code or a refresh token for a new pair
//!   (access token of 30 and refresh token of 50 lowercase alphanumerics, `scope` as a
//!   JSON array). The client secret is read from the form body, as Twitch requires.
//! - `GET /oauth2/validate` (`Authorization: OAuth …` or `Bearer …`) reports the token's
//!   client, user, scopes and remaining lifetime.
//! - `POST /oauth2/revoke` kills an access token, or a refresh token (as RFC 7009 allows;
//!   Twitch documents access tokens only).
//! - `GET /helix/users` returns the token's user; `GET /avatar.svg` is that user's picture,
//!   so the dashboard shows one offline.
//!
//! Choices where Twitch's documentation is silent:
//!
//! - Refreshing rotates: the old refresh token stops working at once, the old access token
//!   keeps working until it expires or is revoked or invalidated.
//! - Revoking or invalidating an access token leaves the refresh token issued with it
//!   alive (the strictest reading: an app must revoke both); add
//!   [`FakeTwitch::invalidate_refresh_token`] to model a user who disconnected the app.
//! - A code is consumed only by a successful exchange; a rejected exchange leaves it usable.
//!   Codes do not expire.
//! - The consent page is shown on every authorize request, as if `force_verify` were
//!   always true; scopes are not checked against Twitch's list.
//!
//! State lives in memory behind one mutex that is never held across an `.await`; a
//! [`FakeTwitch`] is an `Arc`, cheap to clone into handlers and tests.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::request::{
    Credential, credential, field, form_fields, pairs_to_map, request_host, split_scopes,
};
use crate::{html, random};

/// Lifetime of a new access token unless configured otherwise: Twitch caps user access
/// tokens at about four hours.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(4 * 60 * 60);

const CODE_LEN: usize = 30;
const ACCESS_TOKEN_LEN: usize = 30;
const REFRESH_TOKEN_LEN: usize = 50;
/// `created_at` of the fake user in Helix: a fixed date, like an old account's.
const USER_CREATED_AT: &str = "2016-12-14T20:32:28Z";
/// Helix's documented budget; the fake does not count requests, it only sends the headers.
const HELIX_RATE_LIMIT: u32 = 800;

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f7f7f8;color:#18181b}\
main{max-width:28rem;margin:3rem auto;padding:1.5rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem}code{font-size:.9em}.note{color:#53535f;font-size:.9rem}\
button{font-size:1rem;padding:.5rem 1.25rem;margin:.5rem .5rem 0 0;border-radius:4px;border:1px solid #bbb;background:#fff;cursor:pointer}\
#authorize{background:#9146ff;border-color:#9146ff;color:#fff}";

/// The Twitch account that "logs in" on the fake's consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    /// Numeric user ID as a string, the stable key (`user_id` in /validate, `id` in Helix).
    pub id: String,
    /// Lowercase login name.
    pub login: String,
    /// Name as shown to people.
    pub display_name: String,
}

impl FakeUser {
    /// The demo streamer: id `141981764`, login `demo_streamer`, display name `Demo Streamer`.
    pub fn demo() -> Self {
        Self {
            id: "141981764".to_owned(),
            login: "demo_streamer".to_owned(),
            display_name: "Demo Streamer".to_owned(),
        }
    }
}

/// The one application registered with the fake, and the user who logs in to it.
#[derive(Debug, Clone)]
pub struct FakeTwitchConfig {
    /// The application's client ID (Twitch's are 30 lowercase alphanumerics).
    pub client_id: String,
    /// The application's client secret, expected in the body of `POST /oauth2/token`.
    pub client_secret: String,
    /// Registered OAuth redirect URLs; a request's `redirect_uri` must equal one exactly.
    pub redirect_uris: Vec<String>,
    /// The user who logs in on the authorize page.
    pub user: FakeUser,
    /// `expires_in` of new access tokens, after which /validate and Helix refuse them.
    /// It must fit in an [`Instant`] (any realistic duration does).
    pub access_token_ttl: Duration,
}

impl FakeTwitchConfig {
    /// The demo application: client ID `demo0client0id0000000000000000`, secret
    /// `demo-client-secret`, the given redirect URI, the [demo user](FakeUser::demo) and
    /// four-hour access tokens.
    pub fn demo(redirect_uri: &str) -> Self {
        Self {
            client_id: "demo0client0id0000000000000000".to_owned(),
            client_secret: "demo-client-secret".to_owned(),
            redirect_uris: vec![redirect_uri.to_owned()],
            user: FakeUser::demo(),
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
        }
    }
}

/// A failure injected into every `POST /oauth2/token` (both grants) until replaced; see
/// [`FakeTwitch::set_token_failure`]. A failing request is counted but not processed: a
/// code stays unused and a refresh token stays valid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenFailure {
    /// Answer normally.
    #[default]
    None,
    /// HTTP 500 with `{"status":500,"message":"Internal Server Error"}`.
    ServerError,
    /// HTTP 200 labelled `application/json` whose body is not JSON.
    MalformedJson,
    /// Wait this long, then answer normally (the request is processed after the wait).
    Slow(Duration),
}

/// The fake Twitch server. Clones share one state.
#[derive(Clone)]
pub struct FakeTwitch {
    inner: Arc<Inner>,
}

struct Inner {
    config: FakeTwitchConfig,
    ledger: Mutex<Ledger>,
}

/// Everything the fake has issued and seen.
#[derive(Default)]
struct Ledger {
    failure: TokenFailure,
    codes: HashMap<String, CodeGrant>,
    access_tokens: HashMap<String, AccessGrant>,
    /// Only live refresh tokens: rotation and invalidation remove them.
    refresh_tokens: HashMap<String, Grant>,
    issued: Vec<String>,
    revoked: Vec<String>,
    token_requests: usize,
    authorize_requests: Vec<HashMap<String, String>>,
    /// App access tokens (client credentials) and when they expire.
    app_tokens: HashMap<String, Instant>,
    /// User ids that `/helix/streams` reports live.
    live: std::collections::HashSet<String>,
    streams_requests: usize,
    validate_requests: usize,
    /// Added before every `/validate` answer, like the network and Twitch's own time.
    validate_latency: Duration,
}

/// What the user agreed to: who, for which client, with which scopes.
#[derive(Clone)]
struct Grant {
    client_id: String,
    user: FakeUser,
    scopes: Vec<String>,
}

struct CodeGrant {
    grant: Grant,
    redirect_uri: String,
    used: bool,
}

struct AccessGrant {
    grant: Grant,
    expires_at: Instant,
}

impl FakeTwitch {
    /// A fake with no tokens issued and no failure injected.
    pub fn new(config: FakeTwitchConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                ledger: Mutex::new(Ledger::default()),
            }),
        }
    }

    /// Every route of the fake, rooted at `/` (`/oauth2/…`, `/helix/users`, `/avatar.svg`).
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/oauth2/authorize",
                get(authorize_page).post(authorize_decision),
            )
            .route("/oauth2/token", post(token))
            .route("/oauth2/validate", get(validate))
            .route("/oauth2/revoke", post(revoke))
            .route("/helix/users", get(helix_users))
            .route("/helix/streams", get(helix_streams))
            .route("/avatar.svg", get(avatar))
            .fallback(not_found)
            .with_state(self.clone())
    }

    /// Serves the fake on `listener` until `shutdown` resolves.
    ///
    /// # Errors
    ///
    /// The listener's I/O error, if serving fails.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `127.0.0.1:port` (0 picks a free port) and serves in a spawned task; returns
    /// the bound address and the task. The server runs until the task is aborted or its
    /// runtime shuts down; dropping the handle detaches it without stopping it (use
    /// [`serve`](Self::serve) to stop on a shutdown future).
    ///
    /// # Errors
    ///
    /// The bind error, e.g. when the port is taken.
    pub async fn spawn(&self, port: u16) -> io::Result<(SocketAddr, JoinHandle<()>)> {
        self.spawn_on(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)))
            .await
    }

    /// Like [`spawn`](Self::spawn) on another local address, e.g. the Docker bridge's
    /// gateway, where functions running in containers (`sam local`) reach the host.
    ///
    /// # Errors
    ///
    /// The bind error, e.g. when the address is not one of this machine's.
    pub async fn spawn_on(&self, address: SocketAddr) -> io::Result<(SocketAddr, JoinHandle<()>)> {
        crate::spawn_router(self.router(), address, "Twitch").await
    }

    /// The base URL of the OAuth endpoints, for `TWITCH_AUTH_BASE_URL`:
    /// `http://127.0.0.1:PORT/oauth2`.
    pub fn auth_base_url(addr: SocketAddr) -> String {
        format!("http://{addr}/oauth2")
    }

    /// The base URL of Helix, for `TWITCH_API_BASE_URL`: `http://127.0.0.1:PORT/helix`.
    pub fn api_base_url(addr: SocketAddr) -> String {
        format!("http://{addr}/helix")
    }

    /// The configuration variables that point the app at this fake served on `addr`:
    /// its client id and secret and both base URLs.
    pub fn app_variables(&self, addr: SocketAddr) -> Vec<(String, String)> {
        let config = &self.inner.config;
        [
            ("TWITCH_CLIENT_ID", config.client_id.clone()),
            ("TWITCH_CLIENT_SECRET", config.client_secret.clone()),
            ("TWITCH_AUTH_BASE_URL", Self::auth_base_url(addr)),
            ("TWITCH_API_BASE_URL", Self::api_base_url(addr)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Makes every following `POST /oauth2/token` fail this way, until called again with
    /// [`TokenFailure::None`].
    pub fn set_token_failure(&self, failure: TokenFailure) {
        self.ledger().failure = failure;
    }

    /// Every access and refresh token ever issued, oldest first (access before refresh
    /// within a pair).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.ledger().issued.clone()
    }

    /// Tokens (access or refresh) revoked through `POST /oauth2/revoke`, oldest first.
    pub fn revoked_tokens(&self) -> Vec<String> {
        self.ledger().revoked.clone()
    }

    /// Kills an access token as when the user disconnects the app: /validate and Helix
    /// answer 401 for it from now on. Its refresh token is left alone.
    pub fn invalidate_access_token(&self, token: &str) {
        self.ledger().access_tokens.remove(token);
    }

    /// Kills a refresh token: refreshing with it answers `Invalid refresh token`. With
    /// [`invalidate_access_token`](Self::invalidate_access_token) this is a full
    /// disconnection, after which only a new login helps.
    pub fn invalidate_refresh_token(&self, token: &str) {
        self.ledger().refresh_tokens.remove(token);
    }

    /// Issues a token pair for `user` with `scopes` as if they had logged in to the app (for
    /// tests that need many streamers' tokens without clicking through the consent page).
    /// `ttl` is the access token's lifetime.
    pub fn issue_tokens(&self, user: FakeUser, scopes: &[&str], ttl: Duration) -> IssuedTokens {
        let pair = TokenPair::generate().expect("the system's random source works");
        let grant = Grant {
            client_id: self.config().client_id.clone(),
            user,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        let issued = self.ledger().issue(grant, ttl, pair);
        IssuedTokens {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
        }
    }

    /// Makes an access token expire now: /validate and Helix answer 401 for it; its refresh
    /// token still works.
    pub fn expire_access_token(&self, token: &str) {
        if let Some(entry) = self.ledger().access_tokens.get_mut(token) {
            entry.expires_at = Instant::now();
        }
    }

    /// Whether `/validate` would accept this access token now.
    pub fn access_token_is_live(&self, token: &str) -> bool {
        self.ledger().live_access_token(token).is_some()
    }

    /// Whether this refresh token would be redeemed now.
    pub fn refresh_token_is_live(&self, token: &str) -> bool {
        self.ledger().refresh_tokens.contains_key(token)
    }

    /// Delays every `/validate` answer by `latency`.
    pub fn set_validate_latency(&self, latency: Duration) {
        self.ledger().validate_latency = latency;
    }

    /// How many `GET /oauth2/validate` requests arrived.
    pub fn validate_requests(&self) -> usize {
        self.ledger().validate_requests
    }

    /// Makes `/helix/streams` report exactly these user ids live.
    pub fn set_live(&self, user_ids: &[&str]) {
        self.ledger().live = user_ids.iter().map(|id| (*id).to_owned()).collect();
    }

    /// How many `GET /helix/streams` requests arrived.
    pub fn streams_requests(&self) -> usize {
        self.ledger().streams_requests
    }

    /// How many `POST /oauth2/token` requests arrived, failed ones included.
    pub fn token_requests(&self) -> usize {
        self.ledger().token_requests
    }

    /// The query parameters of every `GET /oauth2/authorize`, oldest first, valid or not.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.ledger().authorize_requests.clone()
    }

    fn config(&self) -> &FakeTwitchConfig {
        &self.inner.config
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panicking test must not take the fake down with it for the other tests.
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The checks both authorize routes make before anything can be sent to
    /// `redirect_uri`; the error is a sentence for the 400 page.
    fn registered_redirect(
        &self,
        client_id: Option<&str>,
        redirect_uri: Option<&str>,
    ) -> Result<url::Url, &'static str> {
        let config = self.config();
        match client_id {
            None => return Err("The request has no client_id."),
            Some(id) if id != config.client_id => {
                return Err("The client_id does not belong to a registered application.");
            }
            Some(_) => {}
        }
        let Some(redirect_uri) = redirect_uri else {
            return Err("The request has no redirect_uri.");
        };
        if !config.redirect_uris.iter().any(|uri| uri == redirect_uri) {
            return Err(
                "The redirect_uri does not match any redirect URL registered for this application.",
            );
        }
        url::Url::parse(redirect_uri)
            .map_err(|_| "The registered redirect URL is not a valid absolute URL.")
    }
}

/// Why a grant cannot be redeemed at `POST /oauth2/token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedeemError {
    InvalidCode,
    RedirectMismatch,
    InvalidRefreshToken,
}

impl IntoResponse for RedeemError {
    fn into_response(self) -> Response {
        match self {
            Self::InvalidCode => {
                status_error(StatusCode::BAD_REQUEST, "Invalid authorization code")
            }
            Self::RedirectMismatch => status_error(
                StatusCode::BAD_REQUEST,
                "Parameter redirect_uri does not match registered URI",
            ),
            Self::InvalidRefreshToken => {
                titled_error(StatusCode::BAD_REQUEST, "Invalid refresh token")
            }
        }
    }
}

impl Ledger {
    /// Consumes a code for `client_id`, or says why it cannot be.
    fn redeem_code(
        &mut self,
        client_id: &str,
        code: Option<&str>,
        redirect_uri: Option<&str>,
    ) -> Result<Grant, RedeemError> {
        let entry = code
            .and_then(|code| self.codes.get_mut(code))
            .filter(|entry| !entry.used && entry.grant.client_id == client_id)
            .ok_or(RedeemError::InvalidCode)?;
        if redirect_uri != Some(entry.redirect_uri.as_str()) {
            return Err(RedeemError::RedirectMismatch);
        }
        // Marked under the same lock that found it unused: two racing exchanges cannot
        // both succeed.
        entry.used = true;
        Ok(entry.grant.clone())
    }

    /// Takes a live refresh token of `client_id` out of circulation (rotation).
    fn redeem_refresh_token(
        &mut self,
        client_id: &str,
        token: Option<&str>,
    ) -> Result<Grant, RedeemError> {
        let token = token.ok_or(RedeemError::InvalidRefreshToken)?;
        match self.refresh_tokens.get(token) {
            Some(grant) if grant.client_id == client_id => {}
            _ => return Err(RedeemError::InvalidRefreshToken),
        }
        self.refresh_tokens
            .remove(token)
            .ok_or(RedeemError::InvalidRefreshToken)
    }

    fn issue(&mut self, grant: Grant, ttl: Duration, pair: TokenPair) -> TokenResponse {
        let TokenPair { access, refresh } = pair;
        self.issued.push(access.clone());
        self.issued.push(refresh.clone());
        self.access_tokens.insert(
            access.clone(),
            AccessGrant {
                grant: grant.clone(),
                expires_at: Instant::now() + ttl,
            },
        );
        let scope = grant.scopes.clone();
        self.refresh_tokens.insert(refresh.clone(), grant);
        TokenResponse {
            access_token: access,
            expires_in: ttl.as_secs(),
            refresh_token: refresh,
            scope,
            token_type: "bearer",
        }
    }

    /// The grant behind a live access token and its remaining lifetime in whole seconds,
    /// rounded up so that a live token never reports 0 (which means "never expires").
    fn live_access_token(&self, token: &str) -> Option<(&Grant, u64)> {
        let entry = self.access_tokens.get(token)?;
        let remaining = entry.expires_at.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return None;
        }
        let seconds = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        Some((&entry.grant, seconds))
    }
}

struct TokenPair {
    access: String,
    refresh: String,
}

/// A token pair made by [`FakeTwitch::issue_tokens`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
}

impl TokenPair {
    fn generate() -> Result<Self, getrandom::Error> {
        Ok(Self {
            access: random::lowercase_alphanumeric(ACCESS_TOKEN_LEN)?,
            refresh: random::lowercase_alphanumeric(REFRESH_TOKEN_LEN)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Response bodies, field order as Twitch sends them.

/// Twitch's error shape: `{"status":400,"message":"…"}`, some with `"error"` first.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    status: u16,
    message: &'a str,
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
    refresh_token: String,
    scope: Vec<String>,
    token_type: &'static str,
}

#[derive(Serialize)]
struct AppTokenResponse {
    access_token: String,
    expires_in: u64,
    token_type: &'static str,
}

#[derive(Serialize)]
struct ValidateResponse<'a> {
    client_id: &'a str,
    login: &'a str,
    scopes: &'a [String],
    user_id: &'a str,
    expires_in: u64,
}

#[derive(Serialize)]
struct HelixUsers<'a> {
    data: Vec<HelixUser<'a>>,
}

#[derive(Serialize)]
struct HelixUser<'a> {
    id: &'a str,
    login: &'a str,
    display_name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    broadcaster_type: &'static str,
    description: &'static str,
    profile_image_url: String,
    offline_image_url: &'static str,
    view_count: u64,
    created_at: &'static str,
}

/// `{"status":N,"message":"…"}`, the shape of the OAuth endpoints' errors.
fn status_error(status: StatusCode, message: &str) -> Response {
    error_response(status, None, message)
}

/// `{"error":"<reason phrase>","status":N,"message":"…"}`, the shape of Helix's errors and
/// of the documented refresh failure.
fn titled_error(status: StatusCode, message: &str) -> Response {
    error_response(status, status.canonical_reason(), message)
}

fn error_response(status: StatusCode, error: Option<&str>, message: &str) -> Response {
    let body = ErrorBody {
        error,
        status: status.as_u16(),
        message,
    };
    (status, Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------
// Handlers.

async fn authorize_page(State(fake): State<FakeTwitch>, RawQuery(query): RawQuery) -> Response {
    let params = pairs_to_map(query.unwrap_or_default().as_bytes());
    fake.ledger().authorize_requests.push(params.clone());

    let client_id = field(&params, "client_id");
    let redirect_uri = field(&params, "redirect_uri");
    if let Err(problem) = fake.registered_redirect(client_id, redirect_uri) {
        return error_page(problem);
    }
    if field(&params, "response_type") != Some("code") {
        return error_page("The response_type must be code.");
    }
    consent_page(
        &fake.config().user,
        client_id.unwrap_or_default(),
        redirect_uri.unwrap_or_default(),
        &split_scopes(field(&params, "scope")),
        field(&params, "state"),
    )
}

async fn authorize_decision(
    State(fake): State<FakeTwitch>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form_fields(&headers, &body);
    let client_id = field(&form, "client_id");
    let redirect_uri = field(&form, "redirect_uri");
    let mut target = match fake.registered_redirect(client_id, redirect_uri) {
        Ok(target) => target,
        Err(problem) => return error_page(problem),
    };
    let scopes = split_scopes(field(&form, "scope"));
    let state = field(&form, "state");

    match field(&form, "decision") {
        Some("authorize") => {
            let Ok(code) = random::lowercase_alphanumeric(CODE_LEN) else {
                return server_error_page();
            };
            let grant = Grant {
                client_id: client_id.unwrap_or_default().to_owned(),
                user: fake.config().user.clone(),
                scopes: scopes.clone(),
            };
            fake.ledger().codes.insert(
                code.clone(),
                CodeGrant {
                    grant,
                    redirect_uri: redirect_uri.unwrap_or_default().to_owned(),
                    used: false,
                },
            );
            {
                let mut query = target.query_pairs_mut();
                query
                    .append_pair("code", &code)
                    .append_pair("scope", &scopes.join(" "));
                if let Some(state) = state {
                    query.append_pair("state", state);
                }
            }
            html::redirect_found(&target)
        }
        Some("cancel") => {
            {
                let mut query = target.query_pairs_mut();
                query
                    .append_pair("error", "access_denied")
                    .append_pair("error_description", "The user denied you access");
                if let Some(state) = state {
                    query.append_pair("state", state);
                }
            }
            html::redirect_found(&target)
        }
        _ => error_page("The decision must be authorize or cancel."),
    }
}

async fn token(State(fake): State<FakeTwitch>, headers: HeaderMap, body: Bytes) -> Response {
    let mut response = token_response(&fake, &headers, &body).await;
    // Token responses must not be cached (RFC 6749 §5.1).
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn token_response(fake: &FakeTwitch, headers: &HeaderMap, body: &[u8]) -> Response {
    let failure = {
        let mut ledger = fake.ledger();
        ledger.token_requests += 1;
        ledger.failure
    };
    match failure {
        TokenFailure::None => {}
        TokenFailure::ServerError => {
            return status_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
        TokenFailure::MalformedJson => {
            // What a proxy in front of the API sends when it fails: HTML, labelled as JSON
            // so that only parsing the body reveals it.
            return (
                [(header::CONTENT_TYPE, "application/json")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response();
        }
        TokenFailure::Slow(delay) => tokio::time::sleep(delay).await,
    }

    let form = form_fields(headers, body);
    let config = fake.config();
    let Some(client_id) = field(&form, "client_id") else {
        return status_error(StatusCode::BAD_REQUEST, "missing client id");
    };
    if client_id != config.client_id {
        return status_error(StatusCode::BAD_REQUEST, "invalid client");
    }
    if field(&form, "client_secret") != Some(config.client_secret.as_str()) {
        return status_error(StatusCode::FORBIDDEN, "invalid client secret");
    }
    let grant_type = field(&form, "grant_type");
    if grant_type == Some("client_credentials") {
        let Ok(token) = random::lowercase_alphanumeric(ACCESS_TOKEN_LEN) else {
            return status_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        };
        let ttl = config.access_token_ttl;
        fake.ledger()
            .app_tokens
            .insert(token.clone(), Instant::now() + ttl);
        return Json(AppTokenResponse {
            access_token: token,
            expires_in: ttl.as_secs(),
            token_type: "bearer",
        })
        .into_response();
    }
    if !matches!(grant_type, Some("authorization_code" | "refresh_token")) {
        return status_error(StatusCode::BAD_REQUEST, "unsupported grant type");
    }
    // Generated before taking the lock, which is then held from check to issue.
    let Ok(pair) = TokenPair::generate() else {
        return status_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };

    let mut ledger = fake.ledger();
    let grant = if grant_type == Some("authorization_code") {
        ledger.redeem_code(
            client_id,
            field(&form, "code"),
            field(&form, "redirect_uri"),
        )
    } else {
        ledger.redeem_refresh_token(client_id, field(&form, "refresh_token"))
    };
    match grant {
        Ok(grant) => {
            tracing::debug!(login = %grant.user.login, "the fake Twitch issued a token pair");
            Json(ledger.issue(grant, config.access_token_ttl, pair)).into_response()
        }
        Err(error) => error.into_response(),
    }
}

async fn validate(State(fake): State<FakeTwitch>, headers: HeaderMap) -> Response {
    let latency = {
        let mut ledger = fake.ledger();
        ledger.validate_requests += 1;
        ledger.validate_latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let token = match credential(&headers, &["OAuth", "Bearer"]) {
        Credential::Missing => {
            return status_error(StatusCode::UNAUTHORIZED, "missing authorization token");
        }
        Credential::Malformed => {
            return status_error(StatusCode::UNAUTHORIZED, "invalid access token");
        }
        Credential::Token(token) => token,
    };
    let ledger = fake.ledger();
    let Some((grant, expires_in)) = ledger.live_access_token(token) else {
        return status_error(StatusCode::UNAUTHORIZED, "invalid access token");
    };
    Json(ValidateResponse {
        client_id: &grant.client_id,
        login: &grant.user.login,
        scopes: &grant.scopes,
        user_id: &grant.user.id,
        expires_in,
    })
    .into_response()
}

async fn revoke(State(fake): State<FakeTwitch>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_fields(&headers, &body);
    let Some(client_id) = field(&form, "client_id") else {
        return status_error(StatusCode::BAD_REQUEST, "missing client id");
    };
    if client_id != fake.config().client_id {
        return status_error(StatusCode::NOT_FOUND, "client does not exist");
    }
    let invalid = || status_error(StatusCode::BAD_REQUEST, "Invalid token");
    let Some(token) = field(&form, "token") else {
        return invalid();
    };
    let mut ledger = fake.ledger();
    // A live access token or a live refresh token of this client; 400 for anything else, an
    // already dead token included.
    let access =
        matches!(ledger.live_access_token(token), Some((grant, _)) if grant.client_id == client_id);
    let refresh =
        matches!(ledger.refresh_tokens.get(token), Some(grant) if grant.client_id == client_id);
    if access {
        ledger.access_tokens.remove(token);
    } else if refresh {
        ledger.refresh_tokens.remove(token);
    } else {
        return invalid();
    }
    ledger.revoked.push(token.to_owned());
    // Twitch's documented answer: 200 with no body.
    StatusCode::OK.into_response()
}

async fn helix_users(
    State(fake): State<FakeTwitch>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut response = helix_users_response(&fake, &headers, query.as_deref());
    add_rate_limit_headers(response.headers_mut());
    response
}

fn helix_users_response(fake: &FakeTwitch, headers: &HeaderMap, query: Option<&str>) -> Response {
    let token = match credential(headers, &["Bearer"]) {
        Credential::Missing => {
            return titled_error(StatusCode::UNAUTHORIZED, "OAuth token is missing");
        }
        Credential::Malformed => {
            return titled_error(StatusCode::UNAUTHORIZED, "Invalid OAuth token");
        }
        Credential::Token(token) => token,
    };
    let ledger = fake.ledger();
    let Some((grant, _)) = ledger.live_access_token(token) else {
        return titled_error(StatusCode::UNAUTHORIZED, "Invalid OAuth token");
    };
    let client_id = headers
        .get("client-id")
        .and_then(|value| value.to_str().ok());
    if client_id != Some(grant.client_id.as_str()) {
        return titled_error(
            StatusCode::UNAUTHORIZED,
            "Client ID and OAuth token do not match",
        );
    }

    // `id` and `login` may repeat. With neither, a user token gets its own user; otherwise
    // only the users named are returned, and the fake knows no one but its user.
    let user = &grant.user;
    let mut named_any = false;
    let mut named_user = false;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "id" => {
                named_any = true;
                named_user |= value == user.id.as_str();
            }
            "login" => {
                named_any = true;
                named_user |= value.eq_ignore_ascii_case(&user.login);
            }
            _ => {}
        }
    }
    let mut data = Vec::new();
    if !named_any || named_user {
        data.push(HelixUser {
            id: &user.id,
            login: &user.login,
            display_name: &user.display_name,
            kind: "",
            broadcaster_type: "",
            description: "",
            profile_image_url: format!("http://{}/avatar.svg", request_host(headers)),
            offline_image_url: "",
            view_count: 0,
            created_at: USER_CREATED_AT,
        });
    }
    Json(HelixUsers { data }).into_response()
}

/// `GET /helix/streams?user_id=…` (up to 100): the live streams among those users, with an
/// app access token (client credentials) or a user token of this client.
async fn helix_streams(
    State(fake): State<FakeTwitch>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut response = helix_streams_response(&fake, &headers, query.as_deref());
    add_rate_limit_headers(response.headers_mut());
    response
}

fn helix_streams_response(fake: &FakeTwitch, headers: &HeaderMap, query: Option<&str>) -> Response {
    let Credential::Token(token) = credential(headers, &["Bearer"]) else {
        return titled_error(StatusCode::UNAUTHORIZED, "OAuth token is missing");
    };
    let mut ledger = fake.ledger();
    ledger.streams_requests += 1;
    let app_token = ledger
        .app_tokens
        .get(token)
        .is_some_and(|expires| *expires > Instant::now());
    if !app_token && ledger.live_access_token(token).is_none() {
        return titled_error(StatusCode::UNAUTHORIZED, "Invalid OAuth token");
    }
    let client_id = headers.get("client-id").and_then(|v| v.to_str().ok());
    if client_id != Some(fake.config().client_id.as_str()) {
        return titled_error(
            StatusCode::UNAUTHORIZED,
            "Client ID and OAuth token do not match",
        );
    }
    let ids: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "user_id")
        .map(|(_, v)| v.into_owned())
        .collect();
    if ids.len() > 100 {
        return titled_error(
            StatusCode::BAD_REQUEST,
            "The number of user_id query parameters exceeds the maximum of 100",
        );
    }
    let data: Vec<serde_json::Value> = ids
        .iter()
        .filter(|id| ledger.live.contains(*id))
        .map(|id| {
            serde_json::json!({
                "id": format!("4{id}"), "user_id": id, "user_login": format!("user{id}"),
                "user_name": format!("User {id}"), "game_id": "509658", "game_name": "Just Chatting",
                "type": "live", "title": "Live on the fake Twitch", "viewer_count": 42,
                "started_at": USER_CREATED_AT, "language": "ru", "tags": [], "is_mature": false
            })
        })
        .collect();
    Json(serde_json::json!({ "data": data, "pagination": {} })).into_response()
}

/// Helix's rate-limit headers with a full bucket; the fake never answers 429.
fn add_rate_limit_headers(headers: &mut HeaderMap) {
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_secs() + 60);
    headers.insert("ratelimit-limit", HeaderValue::from(HELIX_RATE_LIMIT));
    headers.insert(
        "ratelimit-remaining",
        HeaderValue::from(HELIX_RATE_LIMIT - 1),
    );
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
}

async fn avatar(State(fake): State<FakeTwitch>) -> Response {
    let user = &fake.config().user;
    let initials: String = user
        .display_name
        .split_whitespace()
        .filter_map(|word| word.chars().next())
        .flat_map(char::to_uppercase)
        .take(2)
        .collect();
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128" role="img" aria-label="{name}">
<circle cx="64" cy="64" r="64" fill="#9146ff"/>
<text x="64" y="64" dy=".35em" text-anchor="middle" font-family="sans-serif" font-size="48" font-weight="bold" fill="#fff">{initials}</text>
</svg>
"##,
        name = html::escape(&user.display_name),
        initials = html::escape(&initials),
    );
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        svg,
    )
        .into_response()
}

async fn not_found() -> Response {
    titled_error(StatusCode::NOT_FOUND, "Not Found")
}

// ---------------------------------------------------------------------------------------
// Pages.

fn error_page(problem: &str) -> Response {
    let body = format!(
        "<h1>Authorization error</h1>\n<p>{}</p>\n\
         <p class=\"note\">Nothing was sent to the application. Check its client ID and \
         redirect URL.</p>",
        html::escape(problem)
    );
    html::page(
        PAGE_STYLE,
        StatusCode::BAD_REQUEST,
        "Authorization error",
        &body,
    )
}

fn server_error_page() -> Response {
    html::page(
        PAGE_STYLE,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Server error",
        "<h1>Server error</h1>\n<p>The fake could not create a code. Try again.</p>",
    )
}

fn consent_page(
    user: &FakeUser,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    state: Option<&str>,
) -> Response {
    let scope_list = if scopes.is_empty() {
        "<p>No permissions are requested: the application sees only your public profile.</p>"
            .to_owned()
    } else {
        let items: String = scopes
            .iter()
            .map(|scope| match scope_description(scope) {
                Some(what) => format!(
                    "<li><code>{}</code>: {}</li>\n",
                    html::escape(scope),
                    html::escape(what)
                ),
                None => format!("<li><code>{}</code></li>\n", html::escape(scope)),
            })
            .collect();
        format!("<p>It asks to:</p>\n<ul>\n{items}</ul>")
    };
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            html::escape(value)
        )
    };
    let mut fields = hidden("client_id", client_id);
    fields.push_str(&hidden("redirect_uri", redirect_uri));
    fields.push_str(&hidden("scope", &scopes.join(" ")));
    if let Some(state) = state {
        fields.push_str(&hidden("state", state));
    }
    let body = format!(
        "<h1>Authorize application</h1>\n\
         <p>Logged in as <strong>{display_name}</strong> ({login}).</p>\n\
         <p>The application <code>{client_id}</code> wants to connect to your account.</p>\n\
         {scope_list}\n\
         <p class=\"note\">Either way you return to <code>{redirect_uri}</code>.</p>\n\
         <form method=\"post\" action=\"/oauth2/authorize\">\n\
         {fields}\
         <button type=\"submit\" name=\"decision\" value=\"authorize\" id=\"authorize\">Authorize</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"cancel\">Cancel</button>\n\
         </form>\n\
         <p class=\"note\">A local stand-in for Twitch: no real account or network is involved.</p>",
        display_name = html::escape(&user.display_name),
        login = html::escape(&user.login),
        client_id = html::escape(client_id),
        redirect_uri = html::escape(redirect_uri),
    );
    html::page(PAGE_STYLE, StatusCode::OK, "Authorize application", &body)
}

/// Twitch's wording for the scopes the application is likely to ask for.
fn scope_description(scope: &str) -> Option<&'static str> {
    Some(match scope {
        "chat:read" => "View live stream chat messages",
        "chat:edit" => "Send live stream chat messages",
        "user:read:chat" => "Receive chat messages and notifications in a channel's chat room",
        "user:write:chat" => "Send chat messages to a chat room",
        "user:bot" => "Appear as a bot in chat rooms",
        "channel:bot" => "Let a bot join your channel's chat room",
        "user:read:email" => "View your email address",
        _ => return None,
    })
}
