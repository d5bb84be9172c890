//! `GET /internal/chat-token/{twitchUserId}` (chat-token): the chat bots' way to a streamer's
//! Twitch token, without the database or the encryption key. The answer is
//! `{"accessToken","expiresAt","scopes","login"}`, with a token valid for at least five more
//! minutes (refreshed first when needed), and is never cached.
//!
//! `POST /internal/chat-token/{twitchUserId}/refused` with `{"accessToken":"…"}`: a bot whose
//! token Twitch answered 401 reports it, and gets the GET's answer with a token Twitch accepts
//! now (or 409 when the connection is over); see [`tokens::chat_token_refused`].
//!
//! Who may ask is checked before this handler runs: in AWS by API Gateway's AWS_IAM
//! authorizer; on the local server by [`require_bearer`] (see [`crate::web::routes::Access`]).

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::caller::Caller;
use crate::domain::TwitchUserId;
use crate::domain::rfc3339_utc;
use crate::secret::Secret;
use crate::telemetry::error_chain;
use crate::tokens::{self, ChatToken, TokenError, TokenKeeper};

/// Longest access token a report may carry (Twitch's are 30 characters).
const MAX_REPORTED_TOKEN_LEN: usize = 512;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatTokenBody<'a> {
    access_token: &'a str,
    /// RFC 3339 UTC; `null` for a token without a lifetime.
    expires_at: Option<String>,
    scopes: &'a [String],
    login: &'a str,
}

/// `GET`: the streamer's token. Its span carries the caller (in AWS, the IAM identity that
/// signed the request), so every token handed out, and every refusal, says to whom.
#[tracing::instrument(name = "api.chat_token", skip_all, fields(caller = caller.arn()))]
pub async fn chat_token(
    State(keeper): State<TokenKeeper>,
    caller: Caller,
    Path(user): Path<String>,
) -> Response {
    let Some(user) = TwitchUserId::parse(&user) else {
        return invalid_user_id();
    };
    let answer = tokens::chat_token(&keeper, &user).await;
    respond(&user, answer)
}

/// What a bot reports: the access token Twitch refused.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefusedReport {
    access_token: String,
}

/// `POST …/refused`: a bot reports the token Twitch refused and gets one Twitch accepts.
#[tracing::instrument(name = "api.chat_token_refused", skip_all, fields(caller = caller.arn()))]
pub async fn chat_token_refused(
    State(keeper): State<TokenKeeper>,
    caller: Caller,
    Path(user): Path<String>,
    body: Bytes,
) -> Response {
    let Some(user) = TwitchUserId::parse(&user) else {
        return invalid_user_id();
    };
    let Some(refused) = reported_token(&body) else {
        tracing::info!(streamer = %user, "a refused-token report without a token in its body");
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "The body must be JSON {\"accessToken\":\"…\"} with the token Twitch refused.",
        );
    };
    let answer = tokens::chat_token_refused(&keeper, &user, &refused).await;
    respond(&user, answer)
}

/// The token of a well-formed report. serde's error is dropped unread: it may quote the body.
fn reported_token(body: &[u8]) -> Option<Secret<String>> {
    let report: RefusedReport = serde_json::from_slice(body).ok()?;
    let token = report.access_token;
    (!token.is_empty() && token.len() <= MAX_REPORTED_TOKEN_LEN).then(|| Secret::new(token))
}

fn invalid_user_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_user_id",
        "A Twitch user id is 1 to 20 digits.",
    )
}

/// Both routes' answer: the token, or why it cannot be handed out.
fn respond(user: &TwitchUserId, answer: Result<ChatToken, TokenError>) -> Response {
    match answer {
        Ok(token) => {
            tracing::info!(streamer = %user, "chat token handed out");
            let body = ChatTokenBody {
                access_token: token.access_token.expose(),
                expires_at: token.expires_at.map(rfc3339_utc),
                scopes: &token.scopes,
                login: &token.login,
            };
            no_store(StatusCode::OK, axum::Json(body))
        }
        Err(e) => refusal(user, &e),
    }
}

/// Status, code and message for each way the token cannot be handed out; logged once.
fn refusal(user: &TwitchUserId, e: &TokenError) -> Response {
    let (status, code, message) = match e {
        TokenError::UnknownUser => (
            StatusCode::NOT_FOUND,
            "unknown_user",
            "This Twitch user never logged in here.",
        ),
        TokenError::NotFound(_) | TokenError::NeedsReauth(_) => (
            StatusCode::CONFLICT,
            "need_reauth",
            "The streamer's Twitch tokens are gone; they must log in again.",
        ),
        TokenError::NotConfigured(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "Twitch is not configured on this server.",
        ),
        TokenError::RefreshBusy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "refresh_busy",
            "Another instance is refreshing this token; ask again in a moment.",
        ),
        TokenError::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The database is unavailable.",
        ),
        TokenError::Lock(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis_unavailable",
            "Redis is unavailable.",
        ),
        TokenError::Provider(p) if p.is_timeout() => (
            StatusCode::GATEWAY_TIMEOUT,
            "provider_timeout",
            "Twitch did not answer in time (checking or refreshing the token).",
        ),
        TokenError::Provider(_) => (
            StatusCode::BAD_GATEWAY,
            "provider_failed",
            "Twitch failed to check or refresh the token.",
        ),
        TokenError::Crypto(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "token_unreadable",
            "The stored token does not open with the configured keys.",
        ),
    };
    let chain = error_chain(e);
    if status.is_server_error() {
        tracing::warn!(streamer = %user, error = %chain, code, "chat token not handed out");
    } else {
        tracing::info!(streamer = %user, error = %chain, code, "chat token refused");
    }
    let mut response = error(status, code, message);
    if code == "refresh_busy" {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The local server's check in front of internal routes: `Authorization: Bearer {token}`,
/// compared in constant time. Anything else is 401.
pub async fn require_bearer(expected: Secret<String>, request: Request, next: Next) -> Response {
    if bearer(request.headers())
        .is_some_and(|given| crate::crypto::constant_time_eq(given, expected.expose()))
    {
        return next.run(request).await;
    }
    tracing::info!("internal route refused: missing or wrong bearer token");
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "This route needs Authorization: Bearer with the internal API token.",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn error(status: StatusCode, code: &'static str, message: &'static str) -> Response {
    no_store(
        status,
        axum::Json(serde_json::json!({ "error": code, "message": message })),
    )
}

/// Tokens must not be kept by any cache on the way.
fn no_store(status: StatusCode, body: impl IntoResponse) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_carries_one_non_empty_access_token_in_json() {
        let token = |body: &str| reported_token(body.as_bytes()).map(|t| t.expose().clone());
        assert_eq!(token(r#"{"accessToken":"abc"}"#), Some("abc".into()));
        assert_eq!(
            token(r#"{"accessToken":"abc","extra":1}"#),
            Some("abc".into())
        );
        for bad in [
            "",
            "abc",
            "{}",
            r#"{"accessToken":""}"#,
            r#"{"accessToken":null}"#,
        ] {
            assert_eq!(token(bad), None, "{bad:?}");
        }
        let long = format!(
            r#"{{"accessToken":"{}"}}"#,
            "a".repeat(MAX_REPORTED_TOKEN_LEN + 1)
        );
        assert_eq!(token(&long), None);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(bearer(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&with("Bearerabc")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
