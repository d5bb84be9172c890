//! Connecting a streamer's DonationAlerts account: `GET /auth/donationalerts` (auth-start)
//! and its callback (auth-callback), `POST /api/donationalerts/disconnect` and `GET
//! /api/donationalerts/status` (pages).
//!
//! The flow uses the same state mechanism as the Twitch login (see
//! [`oauth_state`](super::oauth_state)) and needs a logged-in streamer at both ends: the
//! connection is stored for the streamer of the session. The callback exchanges the code,
//! reads the account (`/api/v1/user/oauth`) and the newest donation id (so that only
//! donations made from now on become events), then stores link and sealed tokens in one
//! write. Nothing is written unless every step succeeded.
//!
//! Each of those DonationAlerts requests first takes a grant of the app-wide budget
//! `ratelimit:donationalerts`, like every poll. A start needs a session, so starts are also
//! throttled per session (`ratelimit:connect:{SHA-256 of the session id}`): one session
//! cannot turn connect loops into a stream of requests that crowds out everyone's polls.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth::CallbackQuery;
use super::oauth_state::OAuthFlow;
use super::session::{self, CurrentSession};
use super::{ApiError, WebError, redirect, texts};
use crate::app::App;
use crate::config::DONATION_SUBSCRIBE_SCOPE;
use crate::coordination::{Priority, RateLimit};
use crate::crypto::sha256;
use crate::domain::{Provider, TokenStatus, now_ms};
use crate::poll::streamer::DA_RATE_LIMIT_KEY;
use crate::providers::ProviderError;
use crate::providers::donationalerts::DonationAlertsClient;
use crate::store::accounts::{TokenKind, seal_token};
use crate::store::donationalerts::{Connected, DonationAlertsConnection};

/// The DonationAlerts connect flow.
pub(crate) const DONATIONALERTS_CONNECT: OAuthFlow = OAuthFlow {
    provider: "donationalerts",
    cookie: "avatar_oauth_donationalerts",
    callback_path: "/auth/donationalerts/callback",
};

/// The longest the callback waits for a grant of the shared request budget to read the
/// newest donation; past it, the first poll takes that baseline instead.
const BASELINE_BUDGET_WAIT: Duration = Duration::from_secs(2);

/// The longest the callback waits for a grant for the code exchange, and again for the
/// account read; past it the streamer gets a 503 page and nothing is written.
const CONNECT_BUDGET_WAIT: Duration = Duration::from_secs(3);

/// What a streamer refused for want of a grant is told to wait. The budget is per minute
/// and shared with the polls, so the time to the next single grant says little about when
/// a whole connect gets through.
const BUDGET_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Connect starts one session may make in any minute: a person connecting needs one or two,
/// and each start can lead to a callback that spends three requests of the shared budget.
pub const CONNECT_STARTS_PER_MINUTE: u32 = 5;

const PROVIDER: Provider = Provider::DonationAlerts;

/// `GET /auth/donationalerts`: 302 to DonationAlerts' authorize page (a session is needed).
#[tracing::instrument(name = "auth.donationalerts.start", skip_all)]
pub async fn start(State(app): State<App>, headers: HeaderMap) -> Response {
    let t = texts::negotiate(&headers);
    let result = async {
        let current = session::current(&app, &headers)
            .await?
            .ok_or(WebError::LoginRequired)?;
        let client = client(&app)?;
        throttle_connect_start(&app, &current).await?;
        let started = DONATIONALERTS_CONNECT.start(&app);
        let location = client.authorize_url(&started.state);
        Ok::<_, WebError>(redirect(
            &app,
            StatusCode::FOUND,
            location.as_str(),
            [started.cookie],
        ))
    }
    .await;
    result.unwrap_or_else(|e| {
        let retry = if matches!(e, WebError::LoginRequired) {
            "/auth/twitch"
        } else {
            "/success"
        };
        e.into_page(&app, t, retry)
    })
}

/// `GET /auth/donationalerts/callback`.
#[tracing::instrument(
    name = "auth.donationalerts.callback",
    skip_all,
    fields(twitch_user_id = tracing::field::Empty)
)]
pub async fn callback(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let t = texts::negotiate(&headers);
    let outcome = finish(&app, raw.as_deref(), &headers).await;
    let mut response = outcome.unwrap_or_else(|e| e.into_page(&app, t, "/auth/donationalerts"));
    response.headers_mut().append(
        header::SET_COOKIE,
        DONATIONALERTS_CONNECT.clear_cookie(&app),
    );
    response
}

/// The limiter key of a session's connect starts. It names the session by the SHA-256 of
/// its id (what the database keeps too), never by the id that opens it.
fn connect_throttle_key(current: &CurrentSession) -> String {
    format!("ratelimit:connect:{}", hex::encode(sha256(&current.id)))
}

/// Refuses (429) a start beyond [`CONNECT_STARTS_PER_MINUTE`] for this session.
async fn throttle_connect_start(app: &App, current: &CurrentSession) -> Result<(), WebError> {
    let limit = RateLimit {
        limit: CONNECT_STARTS_PER_MINUTE,
        period: Duration::from_secs(60),
        burst: CONNECT_STARTS_PER_MINUTE,
    };
    let decision = app
        .coordinator
        .budget()
        .rate_limit(&connect_throttle_key(current), &limit)
        .await?;
    if decision.allowed {
        Ok(())
    } else {
        Err(WebError::TooManyAttempts {
            retry_after: decision.retry_after,
        })
    }
}

/// Whether a grant of the app-wide DonationAlerts budget came within `wait`.
async fn budget_granted(app: &App, wait: Duration) -> Result<bool, WebError> {
    let limit = RateLimit::per_minute(app.config.polling.rate_limit_per_minute);
    let decision = app
        .coordinator
        .budget()
        .rate_limit_within(DA_RATE_LIMIT_KEY, &limit, Priority::Interactive, wait)
        .await?;
    Ok(decision.allowed)
}

/// A grant for a request the connection cannot do without: none in time is a 503.
async fn take_grant(app: &App) -> Result<(), WebError> {
    if budget_granted(app, CONNECT_BUDGET_WAIT).await? {
        Ok(())
    } else {
        Err(WebError::BudgetExhausted {
            provider: PROVIDER,
            retry_after: BUDGET_RETRY_AFTER,
        })
    }
}

fn client(app: &App) -> Result<&DonationAlertsClient, WebError> {
    app.donationalerts
        .as_deref()
        .ok_or(WebError::NotConfigured(PROVIDER))
}

fn provider_failed(step: &'static str) -> impl FnOnce(ProviderError) -> WebError {
    move |source| WebError::Provider {
        provider: PROVIDER,
        step,
        source,
    }
}

async fn finish(
    app: &App,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, WebError> {
    let query = CallbackQuery::parse(raw_query)?;
    DONATIONALERTS_CONNECT
        .redeem(app, headers, query.state.as_deref())
        .await?;
    let current = session::current(app, headers)
        .await?
        .ok_or(WebError::LoginRequired)?;
    let streamer = current.user.twitch_user_id.clone();
    tracing::Span::current().record("twitch_user_id", streamer.as_str());
    if let Some(error) = query.error {
        return Err(WebError::provider_denied(PROVIDER, &error));
    }
    let code = query
        .code
        .as_deref()
        .ok_or(WebError::MissingCode(PROVIDER))?;
    let client = client(app)?;
    take_grant(app).await?;
    let tokens = client.exchange_code(code).await.map_err(|e| match e {
        ProviderError::Rejected { .. } => WebError::CodeRejected {
            provider: PROVIDER,
            source: e,
        },
        other => provider_failed("the code exchange")(other),
    })?;
    let access = tokens.access_token.expose();
    take_grant(app).await?;
    let account = client
        .user(access)
        .await
        .map_err(provider_failed("/api/v1/user/oauth"))?;
    let initial_cursor = newest_donation_id(app, client, access).await?;
    let seal =
        |kind, token: &str| seal_token(&app.cipher, &streamer, PROVIDER.as_str(), kind, token);
    let connection = DonationAlertsConnection {
        streamer_twitch_id: streamer.clone(),
        da_user_id: account.id,
        da_name: account.name.or(account.code),
        access_token_sealed: seal(TokenKind::Access, access),
        refresh_token_sealed: tokens
            .refresh_token
            .as_ref()
            .map(|r| seal(TokenKind::Refresh, r.expose())),
        scopes: tokens.scopes.clone(),
        expires_at: tokens.expires_in.map(|d| now_ms() + d.as_millis() as i64),
        initial_cursor,
    };
    match app.store.connect_donationalerts(connection).await? {
        Connected::Linked => {
            tracing::info!(da_user_id = %account.id, "DonationAlerts connected");
            Ok(redirect(app, StatusCode::FOUND, "/success", []))
        }
        Connected::LinkedToAnotherStreamer => Err(WebError::AccountLinkedElsewhere),
    }
}

/// The newest donation id now (0 with none), read under the shared budget; `None` when no
/// grant came in time (the first poll then takes the baseline).
async fn newest_donation_id(
    app: &App,
    client: &DonationAlertsClient,
    access: &str,
) -> Result<Option<i64>, WebError> {
    if !budget_granted(app, BASELINE_BUDGET_WAIT).await? {
        return Ok(None);
    }
    let page = client
        .donations(access)
        .await
        .map_err(provider_failed("/api/v1/alerts/donations"))?;
    Ok(Some(page.data.iter().map(|d| d.id).max().unwrap_or(0)))
}

/// `GET /api/donationalerts/status`: whether the session's streamer has DonationAlerts
/// connected, and as whom.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectionStatus {
    pub connected: bool,
    /// `active`, `need_reauth`, or `null` when not connected.
    pub status: Option<&'static str>,
    pub da_user_id: Option<i64>,
    pub needs_reauth: bool,
    /// Connected with a grant that holds `oauth-donation-subscribe`: donations can be
    /// pushed in real time (without it, the streamer stays on polling).
    pub realtime: bool,
}

impl ConnectionStatus {
    /// The status of the session's streamer.
    pub async fn of(app: &App, current: &CurrentSession) -> Result<Self, WebError> {
        let status = current
            .user
            .donationalerts_status
            .as_deref()
            .and_then(TokenStatus::parse);
        let link = app.store.poll_state(&current.user.twitch_user_id).await?;
        let status = match (status, &link) {
            (Some(TokenStatus::Active), Some(_)) => Some(TokenStatus::Active),
            (Some(TokenStatus::NeedReauth), _) => Some(TokenStatus::NeedReauth),
            _ => None,
        };
        let connected = status == Some(TokenStatus::Active);
        Ok(Self {
            connected,
            status: status.map(TokenStatus::as_str),
            da_user_id: link.filter(|_| status.is_some()).map(|l| l.da_user_id.0),
            needs_reauth: status == Some(TokenStatus::NeedReauth),
            realtime: connected && grants_realtime(&current.user.donationalerts_scopes),
        })
    }
}

/// Whether a DonationAlerts grant of `scopes` lets the bridge subscribe to its donations.
pub(crate) fn grants_realtime(scopes: &[String]) -> bool {
    scopes.iter().any(|s| s == DONATION_SUBSCRIBE_SCOPE)
}

#[tracing::instrument(name = "api.donationalerts.status", skip_all)]
pub async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    let result = async {
        let current = session::current(&app, &headers)
            .await?
            .ok_or(WebError::LoginRequired)?;
        ConnectionStatus::of(&app, &current).await
    }
    .await;
    match result {
        Ok(status) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(status)).into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

/// `POST /api/donationalerts/disconnect`: forgets the tokens and the link; polling of the
/// streamer stops. DonationAlerts has no revocation endpoint, so the grant itself stays
/// listed in the streamer's DonationAlerts settings until they remove it there. A form
/// post from the dashboard is sent back to it; other clients get the new status as JSON.
#[tracing::instrument(name = "api.donationalerts.disconnect", skip_all)]
pub async fn disconnect(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let current = super::session::post_guard(&app, &headers, &body)
            .await?
            .ok_or(WebError::LoginRequired)?;
        let streamer = current.user.twitch_user_id.clone();
        app.store.disconnect_donationalerts(&streamer).await?;
        tracing::info!(twitch_user_id = %streamer, "DonationAlerts disconnected");
        Ok::<_, WebError>(())
    }
    .await;
    let from_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    match result {
        Ok(()) if from_form => redirect(&app, StatusCode::SEE_OTHER, "/success", []),
        Ok(()) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(ConnectionStatus {
                connected: false,
                status: None,
                da_user_id: None,
                needs_reauth: false,
                realtime: false,
            }),
        )
            .into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}
