//! Browser sessions: a random 256-bit id in a signed, HttpOnly cookie; the database keeps
//! only its SHA-256 and can revoke it (logout, disconnect), after which a copied cookie
//! opens nothing. POST routes also require a CSRF token derived from the session and refuse
//! requests whose Origin is another site.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::http::header;

use super::headers::is_https;
use super::{WebError, cookie, set_cookie};
use crate::app::App;
use crate::crypto::{random_token, sha256};
use crate::store::accounts::SessionUser;

/// Sessions last 30 days unless ended earlier.
pub(crate) const SESSION_DAYS: i64 = 30;
/// Set at logout so the next login asks Twitch to show its consent screen again
/// (`force_verify=true`): on a shared computer the next person must not slip in silently.
pub(crate) const LOGGED_OUT_COOKIE: &str = "avatar_logged_out";

/// Sets (after a logout) or clears (after a login) the logged-out marker. Scoped to the
/// login routes, the only ones that read it.
pub(crate) fn logged_out_marker(app: &App, logged_out: bool) -> axum::http::HeaderValue {
    if logged_out {
        set_cookie(
            app,
            LOGGED_OUT_COOKIE,
            "1",
            "/auth/twitch",
            SESSION_DAYS * 24 * 3600,
        )
    } else {
        set_cookie(app, LOGGED_OUT_COOKIE, "", "/auth/twitch", 0)
    }
}

/// `__Host-` on https (the browser then refuses it without Secure, Path=/ and no Domain).
pub(crate) fn cookie_name(app: &App) -> &'static str {
    if is_https(&app.config) {
        "__Host-avatar_session"
    } else {
        "avatar_session"
    }
}

/// A new session: its id (for the cookie) and the hash the database keeps.
pub struct NewSession {
    pub id: String,
    pub id_hash: Vec<u8>,
}

impl NewSession {
    pub fn generate() -> Self {
        let id = random_token(32);
        let id_hash = sha256(&id);
        Self { id, id_hash }
    }

    pub fn cookie(&self, app: &App) -> axum::http::HeaderValue {
        set_cookie(
            app,
            cookie_name(app),
            &app.signer.sign("session", &self.id),
            "/",
            SESSION_DAYS * 24 * 3600,
        )
    }
}

/// A session found on a request.
pub struct CurrentSession {
    pub id: String,
    pub user: SessionUser,
}

impl CurrentSession {
    /// The CSRF token of this session, for the forms of its pages.
    pub(crate) fn csrf_token(&self, app: &App) -> String {
        app.signer.tag("csrf", &self.id)
    }
}

/// The session id of this request's cookie, if the cookie is genuine (revoked or not).
fn presented_id<'a>(app: &App, headers: &'a HeaderMap) -> Option<&'a str> {
    // A forged or tampered cookie fails here, before any database work.
    app.signer
        .verify("session", cookie(headers, cookie_name(app))?)
}

/// The stored hash of the session this browser presents, so a new login can end it.
pub(crate) fn presented_id_hash(app: &App, headers: &HeaderMap) -> Option<Vec<u8>> {
    presented_id(app, headers).map(sha256)
}

/// The live session of this request, if its cookie is genuine and not revoked.
pub async fn current(app: &App, headers: &HeaderMap) -> Result<Option<CurrentSession>, WebError> {
    let Some(id) = presented_id(app, headers) else {
        return Ok(None);
    };
    let user = app.store.session_user(sha256(id)).await?;
    Ok(user.map(|user| CurrentSession {
        id: id.to_owned(),
        user,
    }))
}

/// `Set-Cookie` that deletes the session cookie.
pub(crate) fn clear_cookie(app: &App) -> axum::http::HeaderValue {
    set_cookie(app, cookie_name(app), "", "/", 0)
}

/// Why a state-changing request was taken for another site's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CrossSiteRefusal {
    #[error("the Origin is not this site")]
    ForeignOrigin,
    #[error("the browser says the request is cross-site (Sec-Fetch-Site)")]
    CrossSiteFetch,
    #[error("the CSRF token is missing or wrong")]
    BadCsrfToken,
}

impl CrossSiteRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::ForeignOrigin => "cross_site_origin",
            Self::CrossSiteFetch => "cross_site_fetch",
            Self::BadCsrfToken => "csrf_token_invalid",
        }
    }
}

/// Refuses a state-changing request from another site: an Origin (or, lacking it, a
/// `Sec-Fetch-Site`) that is not ours, or a missing or wrong CSRF token.
pub(crate) fn check_same_site(
    app: &App,
    headers: &HeaderMap,
    session: Option<&CurrentSession>,
    csrf: Option<&str>,
) -> Result<(), WebError> {
    let ours = app.config.public_base_url.origin().ascii_serialization();
    if let Some(origin) = headers.get(header::ORIGIN) {
        if origin.to_str().ok() != Some(ours.as_str()) {
            return Err(CrossSiteRefusal::ForeignOrigin.into());
        }
    } else if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site")
    {
        return Err(CrossSiteRefusal::CrossSiteFetch.into());
    }
    if let Some(session) = session {
        let valid = csrf.is_some_and(|token| app.signer.verify_tag("csrf", &session.id, token));
        if !valid {
            return Err(CrossSiteRefusal::BadCsrfToken.into());
        }
    }
    Ok(())
}

/// The `csrf` field of a urlencoded form body.
fn csrf_field(body: &Bytes) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
}

/// Session and same-site checks every POST route starts with.
pub(crate) async fn post_guard(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<CurrentSession>, WebError> {
    let current = current(app, headers).await?;
    check_same_site(app, headers, current.as_ref(), csrf_field(body).as_deref())?;
    Ok(current)
}
