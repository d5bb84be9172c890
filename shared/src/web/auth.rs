//! `GET /auth/twitch` (auth-start) and `GET /auth/twitch/callback` (auth-callback).
//!
//! Starting a login writes nothing: the state travels signed in a cookie (see
//! [`oauth_state`](super::oauth_state)). The callback checks that state and marks it used
//! before Twitch is asked anything, and writes nothing unless every step succeeded.

use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap};
use axum::response::Response;

use super::oauth_state::TWITCH_LOGIN;
use super::session::{self, LOGGED_OUT_COOKIE, NewSession, SESSION_DAYS, logged_out_marker};
use super::{WebError, cookie, redirect, texts};
use crate::app::App;
use crate::domain::{Provider, TwitchUserId, now_ms};
use crate::providers::ProviderError;
use crate::store::accounts::{TokenKind, TwitchLogin, seal_token};

/// Longest callback query accepted (real ones are a few hundred bytes).
const MAX_QUERY_LEN: usize = 4096;

/// `GET /auth/twitch`: 302 to Twitch's authorize page (with `force_verify=true` after a logout
/// or with `?reauth=1`).
#[tracing::instrument(name = "auth.twitch.start", skip_all)]
pub(crate) async fn start_twitch(
    State(app): State<App>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match begin_twitch_login(&app, &headers, query.as_deref()) {
        Ok(response) => response,
        Err(e) => e.into_page(&app, texts::negotiate(&headers), "/"),
    }
}

fn begin_twitch_login(
    app: &App,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response, WebError> {
    if let Some(canonical) = canonical_local_start(app, headers, query) {
        return Ok(redirect(app, StatusCode::FOUND, &canonical, []));
    }
    // `?reauth=1` (the dashboard's button when scopes are missing) shows the consent screen.
    let reauth = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "reauth" && v == "1")
    });
    let twitch = app
        .twitch
        .as_ref()
        .ok_or(WebError::NotConfigured(Provider::Twitch))?;
    let started = TWITCH_LOGIN.start(app);
    let force_verify = reauth || cookie(headers, LOGGED_OUT_COOKIE).is_some();
    let location = twitch.authorize_url(&started.state, force_verify);
    Ok(redirect(
        app,
        StatusCode::FOUND,
        location.as_str(),
        [started.cookie],
    ))
}

/// Locally, a browser on `127.0.0.1:3000` while PUBLIC_BASE_URL says `localhost:3000` would
/// get its state cookie for one host and come back from Twitch to the other, and the login
/// would fail as "started in another browser". Send it to the configured host first. Only
/// when both the request and PUBLIC_BASE_URL name loopback hosts: behind a proxy (a real
/// public host) this never redirects, so a rewritten Host cannot cause a loop. The query
/// goes along (`?reauth=1` must still show the consent screen there).
fn canonical_local_start(app: &App, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let public = &app.config.public_base_url;
    let is_loopback = |host: &str| {
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|name| host == *name || host.starts_with(&format!("{name}:")))
    };
    let public_host = match public.port() {
        Some(port) => format!("{}:{port}", public.host_str()?),
        None => public.host_str()?.to_owned(),
    };
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let query = query
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    (is_loopback(&public_host) && is_loopback(host) && !host.eq_ignore_ascii_case(&public_host))
        .then(|| {
            let base = public.as_str().trim_end_matches('/');
            format!("{base}/auth/twitch{query}")
        })
}

/// The callback's query, parsed strictly: UTF-8 only, no repeated parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl CallbackQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, WebError> {
        let mut query = Self::default();
        let Some(raw) = raw else {
            return Ok(query);
        };
        if raw.len() > MAX_QUERY_LEN {
            return Err(WebError::TooLong);
        }
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match decode(key)?.as_str() {
                "code" => &mut query.code,
                "state" => &mut query.state,
                "scope" => &mut query.scope,
                "error" => &mut query.error,
                "error_description" => &mut query.error_description,
                _ => continue,
            };
            if slot.is_some() {
                return Err(WebError::BadRequest("a parameter is repeated"));
            }
            *slot = Some(decode(value)?);
        }
        Ok(query)
    }
}

fn decode(component: &str) -> Result<String, WebError> {
    let spaced = component.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    Ok(String::from_utf8(bytes)?)
}

/// Where the time of a callback went: the bench subtracts the provider's share.
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy, Default)]
pub struct CallbackTimings {
    pub total: Duration,
    pub provider: Duration,
}

/// `GET /auth/twitch/callback`.
#[tracing::instrument(
    name = "auth.twitch.callback",
    skip_all,
    fields(twitch_user_id = tracing::field::Empty)
)]
pub(crate) async fn twitch_callback(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    finish_twitch_callback(&app, raw.as_deref(), &headers)
        .await
        .0
}

/// The callback, also returning its timings (the benchmark).
#[cfg(feature = "test-support")]
pub async fn complete_twitch_login(
    app: &App,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> (Response, CallbackTimings) {
    let (response, total, provider) = finish_twitch_callback(app, raw_query, headers).await;
    (response, CallbackTimings { total, provider })
}

/// The callback; also says how long it took in all and how much of that went to Twitch.
async fn finish_twitch_callback(
    app: &App,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> (Response, Duration, Duration) {
    let started = Instant::now();
    let mut provider = Duration::ZERO;
    let outcome = finish_twitch_login(app, raw_query, headers, &mut provider).await;
    // Whatever happened, this state is spent: drop the browser's binding cookie.
    let clear_binding = TWITCH_LOGIN.clear_cookie(app);
    let mut response = match outcome {
        Ok(response) => response,
        Err(e) => e.into_page(app, texts::negotiate(headers), "/auth/twitch"),
    };
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_binding);
    let total = started.elapsed();
    tracing::debug!(
        server_us = (total.saturating_sub(provider)).as_micros() as u64,
        provider_us = provider.as_micros() as u64,
        "twitch callback"
    );
    (response, total, provider)
}

/// Times one provider call into `spent`.
async fn timed<T>(spent: &mut Duration, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = call.await;
    *spent += started.elapsed();
    result
}

async fn finish_twitch_login(
    app: &App,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    provider: &mut Duration,
) -> Result<Response, WebError> {
    let query = CallbackQuery::parse(raw_query)?;
    // Before anything else, and before Twitch is asked anything: a replay ends here.
    TWITCH_LOGIN
        .redeem(app, headers, query.state.as_deref())
        .await?;
    if let Some(error) = query.error {
        return Err(WebError::provider_denied(Provider::Twitch, &error));
    }
    let code = query
        .code
        .as_deref()
        .ok_or(WebError::MissingCode(Provider::Twitch))?;
    let twitch = app
        .twitch
        .as_ref()
        .ok_or(WebError::NotConfigured(Provider::Twitch))?;

    let tokens = timed(provider, twitch.exchange_code(code))
        .await
        .map_err(|e| match e {
            ProviderError::Rejected { .. } => WebError::CodeRejected {
                provider: Provider::Twitch,
                source: e,
            },
            source => WebError::Provider {
                provider: Provider::Twitch,
                step: "the code exchange",
                source,
            },
        })?;
    let access = tokens.access_token.expose().as_str();
    let validation = timed(provider, twitch.validate(access))
        .await
        .map_err(|source| WebError::Provider {
            provider: Provider::Twitch,
            step: "/validate",
            source,
        })?;
    if validation.client_id != twitch.client_id() {
        return Err(WebError::ProviderInconsistent {
            provider: Provider::Twitch,
            what: "the token belongs to another application",
        });
    }
    let user_id = validation
        .user_id
        .clone()
        .ok_or(WebError::ProviderInconsistent {
            provider: Provider::Twitch,
            what: "the token has no user",
        })?;
    let twitch_user_id = TwitchUserId::parse(&user_id).ok_or(WebError::ProviderInconsistent {
        provider: Provider::Twitch,
        what: "the token's user id is no Twitch user id",
    })?;
    let user = timed(provider, twitch.user(access))
        .await
        .map_err(|source| WebError::Provider {
            provider: Provider::Twitch,
            step: "Helix /users",
            source,
        })?;
    if user.id != user_id {
        return Err(WebError::ProviderInconsistent {
            provider: Provider::Twitch,
            what: "Helix and /validate name different users",
        });
    }

    let session = NewSession::generate();
    let now = now_ms();
    let expires_in = if validation.expires_in > 0 {
        Some(validation.expires_in)
    } else {
        tokens.expires_in.map(|d| d.as_secs())
    };
    let seal = |kind, token: &str| seal_token(&app.cipher, &twitch_user_id, "twitch", kind, token);
    let login = TwitchLogin {
        access_token_sealed: seal(TokenKind::Access, access),
        refresh_token_sealed: tokens
            .refresh_token
            .as_ref()
            .map(|r| seal(TokenKind::Refresh, r.expose())),
        // /validate is authoritative for what the token may do.
        scopes: if validation.scopes.is_empty() {
            tokens.scopes.clone()
        } else {
            validation.scopes.clone()
        },
        expires_at: expires_in.map(|s| now + s as i64 * 1000),
        twitch_user_id,
        login: user.login,
        display_name: user.display_name,
        profile_image_url: user.profile_image_url.filter(|u| is_image_url(u)),
        session_id_hash: session.id_hash.clone(),
        session_expires_at: now + SESSION_DAYS * 24 * 3600 * 1000,
        // A new login from this browser ends the session it held.
        replaced_session_id_hash: session::presented_id_hash(app, headers),
    };
    let twitch_user_id = login.twitch_user_id.clone();
    tracing::Span::current().record("twitch_user_id", twitch_user_id.as_str());
    app.store.record_twitch_login(login).await?;
    tracing::info!(twitch_user_id = %twitch_user_id, "twitch login completed");

    let cookies = [session.cookie(app), logged_out_marker(app, false)];
    Ok(redirect(app, StatusCode::FOUND, "/success", cookies))
}

/// Only http(s) image URLs reach a page's `<img src>`.
fn is_image_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_query_is_parsed_strictly() {
        let q =
            CallbackQuery::parse(Some("code=abc&scope=chat%3Aread+chat%3Aedit&state=xyz")).unwrap();
        assert_eq!(q.code.as_deref(), Some("abc"));
        assert_eq!(q.scope.as_deref(), Some("chat:read chat:edit"));
        assert_eq!(q.state.as_deref(), Some("xyz"));
        assert!(matches!(
            CallbackQuery::parse(Some("state=a&state=b")),
            Err(WebError::BadRequest(_))
        ));
        assert!(matches!(
            CallbackQuery::parse(Some("state=%FF%FE")),
            Err(WebError::QueryNotUtf8(_))
        ));
        assert!(matches!(
            CallbackQuery::parse(Some(&"a".repeat(5000))),
            Err(WebError::TooLong)
        ));
        assert_eq!(
            CallbackQuery::parse(Some("unknown=1&&=&x")).unwrap(),
            CallbackQuery::default()
        );
        let denied = CallbackQuery::parse(Some(
            "error=access_denied&error_description=The+user+denied",
        ))
        .unwrap();
        assert_eq!(denied.error.as_deref(), Some("access_denied"));
    }
}
