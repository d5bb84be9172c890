//! A fake of DonationAlerts' OAuth server and of the two API endpoints the application
//! reads, for integration tests and `avatar-local --demo`.
//!
//! - `GET /oauth/authorize` shows a consent page for the account that "logs in"; its form
//!   posts back to `POST /oauth/authorize`, which redirects to the registered
//!   `redirect_uri` with `code` (and the `state` it was given), or with
//!   `error=access_denied`.
//! - `POST /oauth/token` exchanges a one-time code (`grant_type=authorization_code`) or a
//!   refresh token (`grant_type=refresh_token`, which must resend the granted `scope`) for
//!   a new pair. Errors are shaped like Laravel Passport's, which DonationAlerts runs on:
//!   `{"error":"invalid_grant","error_description":…,"hint":…,"message":…}`.
//! - `GET /api/v1/user/oauth` returns the token's account wrapped in `data`.
//! - `GET /api/v1/alerts/donations?page=N` lists the account's donations newest first, 30
//!   a page, with `links` (absolute URLs, `next` null on the last page) and `meta`.
//! - `POST /_control/donations` makes a donation happen: a JSON body `{username, message,
//!   amount, currency}` (optional `da_user_id`, else the demo account; optional
//!   `created_at`), answered with the donation as the API will list it. It is also pushed
//!   to the account's subscribed Centrifugo sockets, with the same id.
//! - Centrifugo at `/connection/websocket` and `POST /api/v1/centrifuge/subscribe`: see
//!   [`centrifugo`].
//!
//! Choices where DonationAlerts' documentation is silent:
//!
//! - Donation ids rise across all accounts, as a real shop's order ids do.
//! - Refreshing rotates both tokens: the old refresh and access tokens stop working at once.
//! - API errors: 401 `{"message":"Unauthenticated."}`; 429 `{"message":"Too Many
//!   Attempts."}` with `Retry-After` when configured to send one.
//!
//! Tests steer the fake through methods (accounts and tokens made directly, failures,
//! oversized answers and latency per account, paging gone wrong — endless pages, `next`
//! links to another host or to the page itself —, revocation) and read what it saw: every
//! request with its time, so a test can check that a request budget held in every window.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::request::{
    Credential, credential, field, form_fields, pairs_to_map, request_host, split_scopes,
};
use crate::{html, random};

pub mod centrifugo;

/// Donations per page of `/api/v1/alerts/donations`, as DonationAlerts sends them.
pub const PER_PAGE: usize = 30;
/// Lifetime of a new access token unless configured otherwise (DonationAlerts' are long).
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

const CODE_LEN: usize = 40;
const TOKEN_LEN: usize = 60;

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f6f9;color:#1d2330}\
main{max-width:28rem;margin:3rem auto;padding:1.5rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem}code{font-size:.9em}.note{color:#5b6270;font-size:.9rem}\
button{font-size:1rem;padding:.5rem 1.25rem;margin:.5rem .5rem 0 0;border-radius:4px;border:1px solid #bbb;background:#fff;cursor:pointer}\
#authorize{background:#f57d07;border-color:#f57d07;color:#fff}";

/// A DonationAlerts account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDaUser {
    /// The unchangeable numeric id (the key the application stores).
    pub id: i64,
    /// The unique textual code (user name).
    pub code: String,
    /// The display name.
    pub name: String,
}

impl FakeDaUser {
    /// The demo account: id `7130000`, code `demo_streamer`, name `Demo Streamer`.
    pub fn demo() -> Self {
        Self::numbered(7_130_000)
    }

    /// An account whose code and name are derived from its id (tests with many streamers).
    pub fn numbered(id: i64) -> Self {
        if id == 7_130_000 {
            return Self {
                id,
                code: "demo_streamer".to_owned(),
                name: "Demo Streamer".to_owned(),
            };
        }
        Self {
            id,
            code: format!("streamer_{id}"),
            name: format!("Streamer {id}"),
        }
    }
}

/// The one application registered with the fake, and the account that logs in to it.
#[derive(Debug, Clone)]
pub struct FakeDonationAlertsConfig {
    pub client_id: String,
    /// Expected in the body of `POST /oauth/token`.
    pub client_secret: String,
    /// A request's `redirect_uri` must equal one of these exactly.
    pub redirect_uris: Vec<String>,
    /// The account that logs in on the authorize page (and the default recipient of
    /// `/_control/donations`).
    pub user: FakeDaUser,
    /// `expires_in` of new access tokens, after which the API answers 401 for them.
    pub access_token_ttl: Duration,
}

impl FakeDonationAlertsConfig {
    /// The demo application: client id `1000`, secret `demo-da-client-secret`, the given
    /// redirect URI and the [demo account](FakeDaUser::demo).
    pub fn demo(redirect_uri: &str) -> Self {
        Self {
            client_id: "1000".to_owned(),
            client_secret: "demo-da-client-secret".to_owned(),
            redirect_uris: vec![redirect_uri.to_owned()],
            user: FakeDaUser::demo(),
            access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL,
        }
    }
}

/// How the API endpoints answer an account's requests; see [`FakeDonationAlerts::set_failure`].
/// A failing request is logged like any other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApiFailure {
    /// Answer normally.
    #[default]
    None,
    /// 429 `{"message":"Too Many Attempts."}`, with `Retry-After: N` seconds when given.
    TooManyRequests { retry_after_secs: Option<u64> },
    /// 500 `{"message":"Server Error"}`.
    ServerError,
    /// 200 labelled JSON whose body is an HTML error page.
    MalformedJson,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Answer normally, the JSON body grown by a `padding` field of this many spaces (an
    /// answer too large to be a real one, yet valid).
    Oversized { padding: usize },
}

/// How `/api/v1/alerts/donations` pages an account's list; see
/// [`FakeDonationAlerts::set_paging`]. The misbehaving kinds stand for a DonationAlerts
/// with a bug, or a hostile one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Paging {
    /// As DonationAlerts: the account's donations newest first, 30 a page, `next` null on
    /// the last page.
    #[default]
    Listed,
    /// Every page empty, yet with a `next` link to the page after it.
    EndlessEmpty,
    /// Every page full of made-up donations, newer than any real one and older page by page
    /// (the same ones each time a page is read), each with a `next` link: a list that never
    /// reaches an old donation and never ends.
    EndlessFull,
    /// The account's pages, each with this `next` link, the last page too (e.g. a link to
    /// another host).
    NextLink(String),
    /// The account's pages, each with a `next` link to the page itself.
    NextIsSelf,
}

/// The id of the first made-up donation of [`Paging::EndlessFull`] (page 1's newest); the
/// ids go down from there, far above any real one.
pub const ENDLESS_NEWEST_ID: i64 = 9_000_000_000_000;

/// What a request asked for, in the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Token,
    User,
    Donations,
    /// `POST /api/v1/centrifuge/subscribe`.
    Subscribe,
}

/// One request the fake received.
#[derive(Debug, Clone, Copy)]
pub struct LoggedRequest {
    pub at: Instant,
    pub kind: RequestKind,
    /// The account whose token was presented, when the token was known.
    pub da_user_id: Option<i64>,
}

/// A donation as the API lists it (field order as DonationAlerts sends them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeDonation {
    pub id: i64,
    pub name: String,
    pub username: Option<String>,
    pub message_type: String,
    pub message: String,
    /// A JSON number, fractional or not, kept exactly as given.
    pub amount: serde_json::Number,
    pub currency: String,
    pub is_shown: u8,
    /// `YYYY-MM-DD HH:MM:SS`, UTC without a zone, as DonationAlerts writes it.
    pub created_at: String,
    pub shown_at: Option<String>,
}

/// The body of `POST /_control/donations`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NewDonation {
    #[serde(default)]
    pub da_user_id: Option<i64>,
    pub username: Option<String>,
    #[serde(default)]
    pub message: String,
    pub amount: serde_json::Number,
    pub currency: String,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A token pair issued by the fake, as a test seeds it into the application's store.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub scopes: Vec<String>,
}

/// The fake DonationAlerts server. Clones share one state.
#[derive(Clone)]
pub struct FakeDonationAlerts {
    inner: Arc<Inner>,
}

struct Inner {
    config: FakeDonationAlertsConfig,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    accounts: BTreeMap<i64, FakeDaUser>,
    /// Per account, oldest first (the API reverses it).
    donations: HashMap<i64, Vec<FakeDonation>>,
    next_donation_id: i64,
    codes: HashMap<String, Grant>,
    access_tokens: HashMap<String, AccessGrant>,
    refresh_tokens: HashMap<String, Grant>,
    issued: Vec<String>,
    failures: HashMap<i64, ApiFailure>,
    failure_for_all: ApiFailure,
    paging: HashMap<i64, Paging>,
    latency: Duration,
    requests: Vec<LoggedRequest>,
    centrifugo: centrifugo::Hub,
}

#[derive(Clone)]
struct Grant {
    da_user_id: i64,
    scopes: Vec<String>,
    redirect_uri: String,
}

struct AccessGrant {
    da_user_id: i64,
    scopes: Vec<String>,
    expires_at: Instant,
}

impl FakeDonationAlerts {
    /// A fake that knows the configured account and has issued nothing.
    pub fn new(config: FakeDonationAlertsConfig) -> Self {
        let ledger = Ledger {
            accounts: BTreeMap::from([(config.user.id, config.user.clone())]),
            next_donation_id: 30_530_030,
            ..Ledger::default()
        };
        Self {
            inner: Arc::new(Inner {
                config,
                ledger: Mutex::new(ledger),
            }),
        }
    }

    /// Every route of the fake, rooted at `/`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/oauth/authorize",
                get(authorize_page).post(authorize_decision),
            )
            .route("/oauth/token", post(token))
            .route("/api/v1/user/oauth", get(user_oauth))
            .route("/api/v1/alerts/donations", get(donations))
            .route(
                "/api/v1/centrifuge/subscribe",
                post(centrifugo::subscribe_channels),
            )
            .route("/connection/websocket", get(centrifugo::websocket))
            .route("/_control/donations", post(control_donation))
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

    /// Binds `127.0.0.1:port` (0 picks a free port) and serves in a spawned task.
    ///
    /// # Errors
    ///
    /// The bind error, e.g. when the port is taken.
    pub async fn spawn(&self, port: u16) -> io::Result<(SocketAddr, JoinHandle<()>)> {
        let loopback = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        crate::spawn_router(self.router(), loopback, "DonationAlerts").await
    }

    /// `DA_BASE_URL` for this fake served on `addr`.
    pub fn base_url(addr: SocketAddr) -> String {
        format!("http://{addr}")
    }

    /// `DA_CENTRIFUGO_URL` for this fake served on `addr`.
    pub fn centrifugo_url(addr: SocketAddr) -> String {
        format!("ws://{addr}/connection/websocket")
    }

    /// The configuration variables that point the app at this fake served on `addr`.
    pub fn app_variables(&self, addr: SocketAddr) -> Vec<(String, String)> {
        let config = &self.inner.config;
        [
            ("DA_CLIENT_ID", config.client_id.clone()),
            ("DA_CLIENT_SECRET", config.client_secret.clone()),
            ("DA_BASE_URL", Self::base_url(addr)),
            ("DA_CENTRIFUGO_URL", Self::centrifugo_url(addr)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Adds an account (or replaces the one with its id).
    pub fn add_account(&self, user: FakeDaUser) {
        self.ledger().accounts.insert(user.id, user);
    }

    /// Issues a token pair for an account directly, as if its owner had connected, so a
    /// test can seed many streamers without clicking through OAuth.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails.
    pub fn issue_tokens(&self, da_user_id: i64, scopes: &[&str]) -> IssuedTokens {
        let pair = TokenPair::generate().expect("OS random source");
        let grant = Grant {
            da_user_id,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            redirect_uri: String::new(),
        };
        let ttl = self.config().access_token_ttl;
        let response = self.ledger().issue(grant, ttl, pair);
        IssuedTokens {
            access_token: response.access_token,
            refresh_token: response.refresh_token,
            expires_in: response.expires_in,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Creates a donation for `da_user_id` (the configured account when `None`), as a
    /// viewer paying would: lists it for polling and pushes it to the account's subscribed
    /// sockets; returns it as the API will list it.
    pub fn donate(&self, donation: NewDonation) -> FakeDonation {
        let recipient = donation.da_user_id.unwrap_or(self.config().user.id);
        let mut ledger = self.ledger();
        let created = ledger.record_donation(recipient, donation);
        ledger.centrifugo.publish(recipient, &created);
        created
    }

    /// Every donation of an account, newest first.
    pub fn donations_of(&self, da_user_id: i64) -> Vec<FakeDonation> {
        let ledger = self.ledger();
        let mut list = ledger
            .donations
            .get(&da_user_id)
            .cloned()
            .unwrap_or_default();
        list.reverse();
        list
    }

    /// Makes the API answer `da_user_id`'s requests (every account's when `None`) this
    /// way until set again; a per-account failure wins over the one for all.
    pub fn set_failure(&self, da_user_id: Option<i64>, failure: ApiFailure) {
        let mut ledger = self.ledger();
        match da_user_id {
            Some(id) => {
                ledger.failures.insert(id, failure);
            }
            None => ledger.failure_for_all = failure,
        }
    }

    /// Makes `/api/v1/alerts/donations` page `da_user_id`'s list this way until set again.
    pub fn set_paging(&self, da_user_id: i64, paging: Paging) {
        self.ledger().paging.insert(da_user_id, paging);
    }

    /// Adds this much latency to every request (token requests included).
    pub fn set_latency(&self, latency: Duration) {
        self.ledger().latency = latency;
    }

    /// Revokes every token of an account, as when its owner removes the application:
    /// the API answers 401 and refreshing answers `invalid_grant`.
    pub fn revoke_tokens_of(&self, da_user_id: i64) {
        let mut ledger = self.ledger();
        ledger
            .access_tokens
            .retain(|_, g| g.da_user_id != da_user_id);
        ledger
            .refresh_tokens
            .retain(|_, g| g.da_user_id != da_user_id);
    }

    /// Expires the access tokens of an account now (their refresh tokens keep working).
    pub fn expire_access_tokens_of(&self, da_user_id: i64) {
        let now = Instant::now();
        for grant in self.ledger().access_tokens.values_mut() {
            if grant.da_user_id == da_user_id {
                grant.expires_at = now;
            }
        }
    }

    /// Every access and refresh token ever issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.ledger().issued.clone()
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.ledger().requests.clone()
    }

    /// How many requests of this kind arrived.
    pub fn request_count(&self, kind: RequestKind) -> usize {
        self.ledger()
            .requests
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    }

    /// The most requests of any kind seen within any `window` (a sliding window over the
    /// request log): what a budget test compares with the budget.
    pub fn max_requests_in_window(&self, window: Duration) -> usize {
        let times: Vec<Instant> = self.ledger().requests.iter().map(|r| r.at).collect();
        let mut most = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    }

    fn config(&self) -> &FakeDonationAlertsConfig {
        &self.inner.config
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A panicking test must not take the fake down with it for the other tests.
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs the request and applies the configured latency; returns the failure to answer
    /// with, if any, for this token's account.
    async fn admit(&self, kind: RequestKind, token: Option<&str>) -> ApiFailure {
        let (latency, failure) = {
            let mut ledger = self.ledger();
            let da_user_id = token
                .and_then(|t| ledger.access_tokens.get(t))
                .map(|g| g.da_user_id);
            ledger.requests.push(LoggedRequest {
                at: Instant::now(),
                kind,
                da_user_id,
            });
            let failure = da_user_id
                .and_then(|id| ledger.failures.get(&id).copied())
                .filter(|f| *f != ApiFailure::None)
                .unwrap_or(ledger.failure_for_all);
            (ledger.latency, failure)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let ApiFailure::Slow(delay) = failure {
            tokio::time::sleep(delay).await;
        }
        failure
    }
}

impl Ledger {
    fn issue(&mut self, grant: Grant, ttl: Duration, pair: TokenPair) -> TokenResponse {
        let TokenPair { access, refresh } = pair;
        self.issued.push(access.clone());
        self.issued.push(refresh.clone());
        self.access_tokens.insert(
            access.clone(),
            AccessGrant {
                da_user_id: grant.da_user_id,
                scopes: grant.scopes.clone(),
                expires_at: Instant::now() + ttl,
            },
        );
        self.refresh_tokens.insert(refresh.clone(), grant);
        TokenResponse {
            token_type: "Bearer",
            expires_in: ttl.as_secs(),
            access_token: access,
            refresh_token: refresh,
        }
    }

    /// The account behind a live access token.
    fn live_account(&self, token: &str) -> Option<i64> {
        let grant = self.access_tokens.get(token)?;
        (grant.expires_at > Instant::now()).then_some(grant.da_user_id)
    }

    fn record_donation(&mut self, recipient: i64, donation: NewDonation) -> FakeDonation {
        self.next_donation_id += 1;
        let created = FakeDonation {
            id: self.next_donation_id,
            name: "donation".to_owned(),
            username: donation.username,
            message_type: "text".to_owned(),
            message: donation.message,
            amount: donation.amount,
            currency: donation.currency,
            is_shown: 0,
            created_at: donation.created_at.unwrap_or_else(now_without_zone),
            shown_at: None,
        };
        self.donations
            .entry(recipient)
            .or_default()
            .push(created.clone());
        created
    }
}

/// Now in UTC as DonationAlerts writes times: `YYYY-MM-DD HH:MM:SS`, no zone.
fn now_without_zone() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

struct TokenPair {
    access: String,
    refresh: String,
}

impl TokenPair {
    fn generate() -> Result<Self, getrandom::Error> {
        Ok(Self {
            access: random::lowercase_alphanumeric(TOKEN_LEN)?,
            refresh: format!("def50200{}", random::lowercase_alphanumeric(TOKEN_LEN)?),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Response bodies.

#[derive(Serialize)]
struct TokenResponse {
    token_type: &'static str,
    expires_in: u64,
    access_token: String,
    refresh_token: String,
}

/// Laravel Passport's OAuth error body.
fn oauth_error(status: StatusCode, error: &str, description: &str, hint: &str) -> Response {
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "hint": hint,
        "message": description,
    });
    (status, Json(body)).into_response()
}

fn api_message(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "message": message }))).into_response()
}

fn unauthenticated() -> Response {
    api_message(StatusCode::UNAUTHORIZED, "Unauthenticated.")
}

/// The answer to a request that was told to fail, or `None` to answer normally.
fn injected(failure: ApiFailure) -> Option<Response> {
    match failure {
        ApiFailure::None | ApiFailure::Slow(_) | ApiFailure::Oversized { .. } => None,
        ApiFailure::TooManyRequests { retry_after_secs } => {
            let mut response = api_message(StatusCode::TOO_MANY_REQUESTS, "Too Many Attempts.");
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Some(response)
        }
        ApiFailure::ServerError => Some(api_message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server Error",
        )),
        ApiFailure::MalformedJson => Some(
            (
                [(header::CONTENT_TYPE, "application/json")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
        ),
    }
}

/// `response` as it is, or with [`ApiFailure::Oversized`] its JSON object grown by a
/// `padding` field.
async fn oversized(response: Response, failure: ApiFailure) -> Response {
    let ApiFailure::Oversized { padding } = failure else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    object.insert("padding".to_owned(), Value::String(" ".repeat(padding)));
    parts.headers.remove(header::CONTENT_LENGTH);
    let grown = serde_json::to_vec(&object).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(grown))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    match credential(headers, &["Bearer"]) {
        Credential::Token(token) => Some(token),
        Credential::Missing | Credential::Malformed => None,
    }
}

// ---------------------------------------------------------------------------------------
// Handlers.

/// The checks both authorize routes make before anything is sent to `redirect_uri`.
fn registered_redirect(
    fake: &FakeDonationAlerts,
    params: &HashMap<String, String>,
) -> Result<url::Url, &'static str> {
    let config = fake.config();
    if field(params, "client_id") != Some(config.client_id.as_str()) {
        return Err("Client authentication failed: unknown client_id.");
    }
    let redirect_uri = field(params, "redirect_uri").ok_or("The request has no redirect_uri.")?;
    if !config.redirect_uris.iter().any(|uri| uri == redirect_uri) {
        return Err("The redirect_uri does not match the application's registered one.");
    }
    url::Url::parse(redirect_uri).map_err(|_| "The registered redirect_uri is not a valid URL.")
}

async fn authorize_page(
    State(fake): State<FakeDonationAlerts>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = pairs_to_map(query.unwrap_or_default().as_bytes());
    if let Err(problem) = registered_redirect(&fake, &params) {
        return error_page(problem);
    }
    if field(&params, "response_type") != Some("code") {
        return error_page("The response_type must be code.");
    }
    let user = &fake.config().user;
    let scopes = split_scopes(field(&params, "scope"));
    let hidden = |name: &str| {
        field(&params, name).map_or(String::new(), |value| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                html::escape(value)
            )
        })
    };
    let fields: String = ["client_id", "redirect_uri", "scope", "state"]
        .into_iter()
        .map(hidden)
        .collect();
    let scope_items: String = scopes
        .iter()
        .map(|s| format!("<li><code>{}</code></li>\n", html::escape(s)))
        .collect();
    let body = format!(
        "<h1>Authorize application</h1>\n\
         <p>Logged in to DonationAlerts as <strong>{name}</strong> ({code}).</p>\n\
         <p>The application asks for:</p>\n<ul>\n{scope_items}</ul>\n\
         <form method=\"post\" action=\"/oauth/authorize\">\n{fields}\
         <button type=\"submit\" name=\"decision\" value=\"authorize\" id=\"authorize\">Authorize</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"cancel\">Cancel</button>\n\
         </form>\n\
         <p class=\"note\">A local stand-in for DonationAlerts: no real account or network is involved.</p>",
        name = html::escape(&user.name),
        code = html::escape(&user.code),
    );
    html::page(PAGE_STYLE, StatusCode::OK, "Authorize application", &body)
}

async fn authorize_decision(
    State(fake): State<FakeDonationAlerts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form_fields(&headers, &body);
    let mut target = match registered_redirect(&fake, &form) {
        Ok(target) => target,
        Err(problem) => return error_page(problem),
    };
    let state = field(&form, "state");
    match field(&form, "decision") {
        Some("authorize") => {
            let Ok(code) = random::lowercase_alphanumeric(CODE_LEN) else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            let grant = Grant {
                da_user_id: fake.config().user.id,
                scopes: split_scopes(field(&form, "scope")),
                redirect_uri: field(&form, "redirect_uri").unwrap_or_default().to_owned(),
            };
            let code = format!("def50200{code}");
            fake.ledger().codes.insert(code.clone(), grant);
            target.query_pairs_mut().append_pair("code", &code);
        }
        Some("cancel") => {
            target
                .query_pairs_mut()
                .append_pair("error", "access_denied")
                .append_pair(
                    "error_description",
                    "The resource owner or authorization server denied the request.",
                );
        }
        _ => return error_page("The decision must be authorize or cancel."),
    }
    if let Some(state) = state {
        target.query_pairs_mut().append_pair("state", state);
    }
    html::redirect_found(&target)
}

async fn token(
    State(fake): State<FakeDonationAlerts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let failure = fake.admit(RequestKind::Token, None).await;
    let response = injected(failure).unwrap_or_else(|| token_response(&fake, &headers, &body));
    let mut response = oversized(response, failure).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn token_response(fake: &FakeDonationAlerts, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = form_fields(headers, body);
    let config = fake.config();
    if field(&form, "client_id") != Some(config.client_id.as_str())
        || field(&form, "client_secret") != Some(config.client_secret.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
            "",
        );
    }
    let Ok(pair) = TokenPair::generate() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut ledger = fake.ledger();
    let grant = match field(&form, "grant_type") {
        Some("authorization_code") => {
            let Some(code) = field(&form, "code") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The request is missing a required parameter.",
                    "Check the `code` parameter",
                );
            };
            match ledger.codes.get(code) {
                Some(grant)
                    if field(&form, "redirect_uri") == Some(grant.redirect_uri.as_str()) => {}
                _ => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "The provided authorization grant is invalid, expired, revoked, or does not match the redirection URI.",
                        "Authorization code has been revoked",
                    );
                }
            }
            // Removed under the same lock that found it: two racing exchanges cannot both win.
            ledger.codes.remove(code)
        }
        Some("refresh_token") => {
            let token = field(&form, "refresh_token").unwrap_or_default();
            let scopes = split_scopes(field(&form, "scope"));
            match ledger.refresh_tokens.get(token) {
                None => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "The refresh token is invalid.",
                        "Token has been revoked",
                    );
                }
                Some(grant) if grant.scopes != scopes => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "The requested scope is invalid, unknown, or malformed",
                        "The scopes must be the ones granted",
                    );
                }
                Some(_) => {}
            }
            let grant = ledger.refresh_tokens.remove(token);
            // Rotation: the access tokens of the old pair die with it.
            if let Some(grant) = &grant {
                let id = grant.da_user_id;
                ledger.access_tokens.retain(|_, g| g.da_user_id != id);
            }
            grant
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
                "Check that all required parameters have been provided",
            );
        }
    };
    match grant {
        Some(grant) => Json(ledger.issue(grant, config.access_token_ttl, pair)).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn user_oauth(State(fake): State<FakeDonationAlerts>, headers: HeaderMap) -> Response {
    let token = bearer(&headers);
    let failure = fake.admit(RequestKind::User, token).await;
    if let Some(response) = injected(failure) {
        return response;
    }
    let response = user_oauth_response(&fake, &headers, token);
    oversized(response, failure).await
}

fn user_oauth_response(
    fake: &FakeDonationAlerts,
    headers: &HeaderMap,
    token: Option<&str>,
) -> Response {
    let mut ledger = fake.ledger();
    let Some(user) = token
        .and_then(|t| ledger.live_account(t))
        .and_then(|id| ledger.accounts.get(&id))
        .cloned()
    else {
        return unauthenticated();
    };
    let socket_token = ledger.centrifugo.issue_socket_token(user.id);
    Json(serde_json::json!({
        "data": {
            "id": user.id,
            "code": user.code,
            "name": user.name,
            "avatar": format!("http://{}/avatar/{}.png", request_host(headers), user.id),
            "email": format!("{}@example.invalid", user.code),
            "socket_connection_token": socket_token,
        }
    }))
    .into_response()
}

async fn donations(
    State(fake): State<FakeDonationAlerts>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let token = bearer(&headers);
    let failure = fake.admit(RequestKind::Donations, token).await;
    if let Some(response) = injected(failure) {
        return response;
    }
    let params = pairs_to_map(query.unwrap_or_default().as_bytes());
    let page: usize = field(&params, "page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let response = donation_page(&fake, &headers, token, page);
    oversized(response, failure).await
}

/// Page `page` of the list of the account behind `token`, paged as configured.
fn donation_page(
    fake: &FakeDonationAlerts,
    headers: &HeaderMap,
    token: Option<&str>,
    page: usize,
) -> Response {
    let ledger = fake.ledger();
    let Some(da_user_id) = token.and_then(|t| ledger.live_account(t)) else {
        return unauthenticated();
    };
    let all = ledger
        .donations
        .get(&da_user_id)
        .map_or(&[][..], Vec::as_slice);
    let paging = ledger.paging.get(&da_user_id).cloned().unwrap_or_default();
    let path = format!("http://{}/api/v1/alerts/donations", request_host(headers));
    let link = |n: usize| Value::String(format!("{path}?page={n}"));
    let (data, total, last_page, next): (Vec<FakeDonation>, usize, usize, Value) = match paging {
        Paging::EndlessEmpty => (Vec::new(), 0, page + 1, link(page + 1)),
        Paging::EndlessFull => (made_up_page(page), usize::MAX, page + 1, link(page + 1)),
        Paging::Listed | Paging::NextLink(_) | Paging::NextIsSelf => {
            let total = all.len();
            let last_page = total.div_ceil(PER_PAGE).max(1);
            let data = all
                .iter()
                .rev()
                .skip((page - 1) * PER_PAGE)
                .take(PER_PAGE)
                .cloned()
                .collect();
            let next = match paging {
                Paging::NextLink(url) => Value::String(url),
                Paging::NextIsSelf => link(page),
                _ if page < last_page => link(page + 1),
                _ => Value::Null,
            };
            (data, total, last_page, next)
        }
    };
    let from = (!data.is_empty()).then(|| (page - 1) * PER_PAGE + 1);
    let to = from.map(|f| f + data.len() - 1);
    Json(serde_json::json!({
        "data": data,
        "links": {
            "first": link(1),
            "last": link(last_page),
            "prev": if page > 1 { link(page - 1) } else { Value::Null },
            "next": next,
        },
        "meta": {
            "current_page": page,
            "from": from,
            "last_page": last_page,
            "path": path,
            "per_page": PER_PAGE,
            "to": to,
            "total": total,
        }
    }))
    .into_response()
}

/// Page `page` of [`Paging::EndlessFull`]: 30 made-up donations, the same each time.
fn made_up_page(page: usize) -> Vec<FakeDonation> {
    let first = (page - 1).saturating_mul(PER_PAGE);
    (0..PER_PAGE)
        .map(|k| {
            let id = ENDLESS_NEWEST_ID - i64::try_from(first + k).unwrap_or(i64::MAX / 2);
            FakeDonation {
                id,
                name: "donation".to_owned(),
                username: Some(format!("endless {id}")),
                message_type: "text".to_owned(),
                message: format!("made-up donation {id}"),
                amount: serde_json::Number::from(1),
                currency: "RUB".to_owned(),
                is_shown: 0,
                created_at: now_without_zone(),
                shown_at: None,
            }
        })
        .collect()
}

async fn control_donation(State(fake): State<FakeDonationAlerts>, body: Bytes) -> Response {
    match serde_json::from_slice::<NewDonation>(&body) {
        Ok(donation) => {
            let recipient = donation.da_user_id.unwrap_or(fake.config().user.id);
            if !fake.ledger().accounts.contains_key(&recipient) {
                return api_message(StatusCode::NOT_FOUND, "No such DonationAlerts account.");
            }
            (StatusCode::CREATED, Json(fake.donate(donation))).into_response()
        }
        Err(e) => api_message(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "Expected {{username, message, amount, currency}} (optional da_user_id, \
                 created_at): {e}"
            ),
        ),
    }
}

async fn not_found() -> Response {
    api_message(StatusCode::NOT_FOUND, "Not Found")
}

fn error_page(problem: &str) -> Response {
    let body = format!(
        "<h1>Authorization error</h1>\n<p>{}</p>",
        html::escape(problem)
    );
    html::page(
        PAGE_STYLE,
        StatusCode::BAD_REQUEST,
        "Authorization error",
        &body,
    )
}
