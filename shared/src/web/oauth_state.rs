//! The OAuth `state` of a login or connect flow, for any provider.
//!
//! Starting a flow writes nothing anywhere: a 256-bit random state and its expiry travel in
//! a signed, HttpOnly cookie scoped to the provider's callback path, which binds the state
//! to the browser that started the flow. The callback checks, in order: the query names a
//! state, the browser holds a genuine cookie, the cookie names this very state, the state
//! has not expired; then it marks the state used with `SET oauth:state:{state} 1 NX PX
//! {remaining ms}`, so a second use finds the key and is refused. Only a callback carrying
//! a state this server signed less than the TTL ago can write a key, and the key lives no
//! longer than the state would have.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use super::{WebError, cookie, set_cookie};
use crate::app::App;
use crate::crypto::random_token;
use crate::domain::now_ms;

/// The state cookie outlives the state itself, so a browser returning late is told that
/// its login expired rather than that it was started elsewhere.
const COOKIE_GRACE: Duration = Duration::from_secs(600);
/// Longest state accepted from a query (ours are 43 characters).
const MAX_STATE_LEN: usize = 128;

/// One OAuth flow: the provider it talks to and where the provider sends the browser back.
#[derive(Debug, Clone, Copy)]
pub struct OAuthFlow {
    /// Names the flow in the cookie's signature, so one provider's state never passes for
    /// another's.
    pub provider: &'static str,
    /// The cookie carrying the signed state.
    pub cookie: &'static str,
    /// The callback path (the cookie is sent there only).
    pub callback_path: &'static str,
}

/// The Twitch login.
pub const TWITCH_LOGIN: OAuthFlow = OAuthFlow {
    provider: "twitch",
    cookie: "avatar_oauth_twitch",
    callback_path: "/auth/twitch/callback",
};

/// Why a callback's state was refused. Each has a stable code shown on the error page, so a
/// streamer reporting a problem can say which check refused them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateRefusal {
    #[error("the callback has no state")]
    Missing,
    #[error("the browser has no state cookie (the flow was started in another browser)")]
    CookieMissing,
    #[error("the state cookie is not genuine (tampered or signed with another secret)")]
    CookieInvalid,
    #[error("the state is not the one this browser started")]
    Mismatch,
    #[error("the state has expired")]
    Expired,
    #[error("the state was already used")]
    Replayed,
}

impl StateRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "state_missing",
            Self::CookieMissing => "state_cookie_missing",
            Self::CookieInvalid => "state_cookie_invalid",
            Self::Mismatch => "state_mismatch",
            Self::Expired => "state_expired",
            Self::Replayed => "state_replayed",
        }
    }
}

/// A freshly started flow: the state for the authorize URL and the cookie binding it.
pub struct StartedFlow {
    pub state: String,
    pub cookie: HeaderValue,
}

/// The Redis key that marks a state as used (`oauth:state:{state}`, kept until the state
/// would have expired): a second callback with the same state is refused.
pub(crate) fn used_state_key(state: &str) -> String {
    format!("oauth:state:{state}")
}

impl OAuthFlow {
    fn purpose(&self) -> String {
        format!("oauth-state:{}", self.provider)
    }

    /// The signed cookie value naming `state`, valid until `expires_at_ms` (Unix ms).
    pub fn cookie_value(&self, app: &App, state: &str, expires_at_ms: i64) -> String {
        app.signer
            .sign(&self.purpose(), &format!("{state}.{expires_at_ms}"))
    }

    /// Draws a state and signs it into a cookie. Touches no storage.
    pub fn start(&self, app: &App) -> StartedFlow {
        let ttl = app.config.oauth_state_ttl;
        let state = random_token(32);
        let expires_at = now_ms() + ttl.as_millis() as i64;
        let cookie = set_cookie(
            app,
            self.cookie,
            &self.cookie_value(app, &state, expires_at),
            self.callback_path,
            (ttl + COOKIE_GRACE).as_secs() as i64,
        );
        StartedFlow { state, cookie }
    }

    /// `Set-Cookie` removing the binding (every callback ends the flow, whatever its outcome).
    pub(crate) fn clear_cookie(&self, app: &App) -> HeaderValue {
        set_cookie(app, self.cookie, "", self.callback_path, 0)
    }

    /// Checks the callback's `state` against this browser's cookie and marks it used.
    /// Succeeds once per state; every refusal names its reason.
    pub(crate) async fn redeem(
        &self,
        app: &App,
        headers: &HeaderMap,
        state: Option<&str>,
    ) -> Result<(), WebError> {
        let state = state.ok_or(StateRefusal::Missing)?;
        let signed = cookie(headers, self.cookie).ok_or(StateRefusal::CookieMissing)?;
        let bound = app
            .signer
            .verify(&self.purpose(), signed)
            .ok_or(StateRefusal::CookieInvalid)?;
        let (bound_state, expires_at) = bound
            .rsplit_once('.')
            .and_then(|(s, at)| Some((s, at.parse::<i64>().ok()?)))
            .ok_or(StateRefusal::CookieInvalid)?;
        if state.len() > MAX_STATE_LEN
            || !constant_time_eq(bound_state.as_bytes(), state.as_bytes())
        {
            return Err(StateRefusal::Mismatch.into());
        }
        let remaining = expires_at - now_ms();
        if remaining <= 0 {
            return Err(StateRefusal::Expired.into());
        }
        let first_use = app
            .coordinator
            .one_time_states()
            .put_once(
                &used_state_key(state),
                "1",
                Duration::from_millis(remaining as u64),
            )
            .await?;
        if first_use {
            Ok(())
        } else {
            Err(StateRefusal::Replayed.into())
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
