//! The pages function: the landing page, the dashboard, `/auth/status`, logout, Twitch
//! disconnect, and the stylesheet.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::donationalerts::{ConnectionStatus, grants_realtime};
use super::session::{self, CurrentSession};
use super::{ApiError, Texts, WebError, html, redirect, texts};
use crate::app::App;
use crate::domain::Provider;
use crate::store::accounts::SessionUser;
use crate::tokens;

pub(crate) const STYLESHEET: &str = include_str!("../../static/style.css");

#[derive(Template)]
#[template(path = "landing.html")]
struct Landing<'a> {
    t: &'a Texts,
    user: Option<&'a SessionUser>,
    /// Without Twitch credentials the page says how to get going.
    twitch_configured: bool,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard<'a> {
    t: &'a Texts,
    user: &'a SessionUser,
    twitch_status: &'a str,
    donationalerts_status: &'a str,
    /// `connected`, `need_reauth` or `not_connected`: which buttons the page offers.
    donationalerts_state: &'static str,
    donations: Vec<DonationRow>,
    /// Scopes of TWITCH_SCOPES the stored token was not granted (asked for after it was
    /// issued): the page offers a login that shows Twitch's consent screen again.
    missing_scopes: Vec<&'a str>,
    /// Connected with a grant that predates `oauth-donation-subscribe` (which DA_SCOPES
    /// asks for): the page offers a reconnect so donations are pushed, not polled.
    realtime_reconnect: bool,
    csrf: String,
}

/// A donation as the dashboard lists it.
struct DonationRow {
    donor: String,
    amount: String,
    currency: String,
    message: String,
    created_at: String,
}

/// How many donations the dashboard lists.
const DASHBOARD_DONATIONS: usize = 10;

/// `GET /`.
#[tracing::instrument(name = "pages.landing", skip_all)]
pub async fn landing(State(app): State<App>, headers: HeaderMap) -> Response {
    let t = texts::negotiate(&headers);
    match session::current(&app, &headers).await {
        Ok(current) => html(
            &app,
            StatusCode::OK,
            &Landing {
                t,
                user: current.as_ref().map(|s| &s.user),
                twitch_configured: app.twitch.is_some(),
            },
        ),
        Err(e) => e.into_page(&app, t, "/"),
    }
}

/// `GET /success`: the dashboard; without a session, back to the landing page.
#[tracing::instrument(name = "pages.dashboard", skip_all)]
pub async fn dashboard(State(app): State<App>, headers: HeaderMap) -> Response {
    let t = texts::negotiate(&headers);
    let current = match session::current(&app, &headers).await {
        Ok(Some(current)) => current,
        Ok(None) => return redirect(&app, StatusCode::SEE_OTHER, "/", []),
        Err(e) => return e.into_page(&app, t, "/"),
    };
    let connection = match ConnectionStatus::of(&app, &current).await {
        Ok(connection) => connection,
        Err(e) => return e.into_page(&app, t, "/"),
    };
    let (donationalerts_status, donationalerts_state) = match connection.status {
        Some("active") => (t.donationalerts_connected, "connected"),
        Some("need_reauth") => (t.donationalerts_need_reauth, "need_reauth"),
        _ => (t.donationalerts_not_connected, "not_connected"),
    };
    let donations = match app
        .store
        .recent_donations(&current.user.twitch_user_id, DASHBOARD_DONATIONS)
        .await
    {
        Ok(donations) => donations
            .into_iter()
            .map(|d| DonationRow {
                donor: d.donor_name.unwrap_or_else(|| t.anonymous_donor.to_owned()),
                amount: d.amount,
                currency: d.currency,
                message: d.message,
                created_at: d
                    .created_at
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_owned(),
            })
            .collect(),
        Err(e) => return WebError::from(e).into_page(&app, t, "/"),
    };
    let twitch_status = match current.user.twitch_status.as_deref() {
        Some("active") => t.twitch_connected,
        _ => t.twitch_need_reauth,
    };
    html(
        &app,
        StatusCode::OK,
        &Dashboard {
            t,
            user: &current.user,
            twitch_status,
            donationalerts_status,
            donationalerts_state,
            donations,
            missing_scopes: app
                .config
                .twitch
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|wanted| !current.user.scopes.iter().any(|had| had == wanted))
                .collect(),
            realtime_reconnect: donationalerts_state == "connected"
                && !grants_realtime(&current.user.donationalerts_scopes)
                && grants_realtime(&app.config.donationalerts.scopes),
            csrf: current.csrf_token(&app),
        },
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthStatus<'a> {
    authenticated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<StatusUser<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusUser<'a> {
    twitch_user_id: &'a str,
    login: &'a str,
    display_name: &'a str,
    profile_image_url: Option<&'a str>,
    scopes: &'a [String],
    twitch_status: Option<&'a str>,
}

/// `GET /auth/status`: `{"authenticated":bool,"user":{…}?}`.
#[tracing::instrument(name = "pages.auth_status", skip_all)]
pub(crate) async fn auth_status(State(app): State<App>, headers: HeaderMap) -> Response {
    match session::current(&app, &headers).await {
        Ok(current) => status_body(current.as_ref()),
        Err(e) => ApiError(e).into_response(),
    }
}

fn status_body(current: Option<&CurrentSession>) -> Response {
    let body = AuthStatus {
        authenticated: current.is_some(),
        user: current.map(|s| StatusUser {
            twitch_user_id: s.user.twitch_user_id.as_str(),
            login: &s.user.login,
            display_name: &s.user.display_name,
            profile_image_url: s.user.profile_image_url.as_deref(),
            scopes: &s.user.scopes,
            twitch_status: s.user.twitch_status.as_deref(),
        }),
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// `POST /auth/logout`: ends this session server-side.
#[tracing::instrument(name = "pages.logout", skip_all)]
pub async fn logout(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let t = texts::negotiate(&headers);
    let result = async {
        if let Some(current) = session::post_guard(&app, &headers, &body).await? {
            app.store
                .revoke_session(crate::crypto::sha256(&current.id))
                .await?;
            tracing::info!(twitch_user_id = %current.user.twitch_user_id, "logged out");
        }
        Ok::<_, WebError>(())
    }
    .await;
    match result {
        Ok(()) => signed_out(&app),
        Err(e) => e.into_page(&app, t, "/"),
    }
}

/// `POST /auth/twitch/disconnect` ("forget my accounts"): revokes both tokens at Twitch,
/// then in one write deletes them, ends the DonationAlerts connection (link and tokens, so
/// polling stops: the streamer could not see or stop it without logging in again) and ends
/// every session of the user.
#[tracing::instrument(name = "pages.disconnect_twitch", skip_all)]
pub(crate) async fn disconnect_twitch(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let t = texts::negotiate(&headers);
    let result = async {
        let Some(current) = session::post_guard(&app, &headers, &body).await? else {
            return Ok(());
        };
        let user_id = current.user.twitch_user_id.clone();
        tokens::revoke_at_provider(&app.tokens, &user_id, Provider::Twitch).await;
        app.store.forget_twitch_connection(&user_id).await?;
        tracing::info!(
            twitch_user_id = %user_id,
            "twitch disconnected, DonationAlerts with it"
        );
        Ok::<_, WebError>(())
    }
    .await;
    match result {
        Ok(()) => signed_out(&app),
        Err(e) => e.into_page(&app, t, "/"),
    }
}

/// 303 to the landing page with the session cookie removed and the next login forced
/// through Twitch's consent screen.
fn signed_out(app: &App) -> Response {
    let cookies = [
        session::clear_cookie(app),
        session::logged_out_marker(app, true),
    ];
    redirect(app, StatusCode::SEE_OTHER, "/", cookies)
}

/// `GET /static/style.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// Any path this server does not know: a page, not an empty body.
#[tracing::instrument(name = "pages.not_found", skip_all)]
pub async fn not_found(State(app): State<App>, headers: HeaderMap) -> Response {
    WebError::NotFound.into_page(&app, texts::negotiate(&headers), "/")
}
