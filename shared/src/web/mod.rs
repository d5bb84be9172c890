//! The HTTP wing, the top floor: everything that speaks HTTP.
//!
//! - [`routes`]: the one route table, and the routers built from it (`avatar-local`'s and
//!   each function's); [`edge`]: `avatar-local`'s HTTP edge (timeouts, connection caps);
//!   [`headers`]: what every response and every page carries; [`health`]: `/health`.
//! - The browser-facing part: [`pages`], the Twitch login ([`auth`]) and DonationAlerts
//!   connect ([`donationalerts`]) routes, [`session`]s and cookies, the OAuth state
//!   ([`oauth_state`]), the texts in two languages ([`texts`]), and the one place where
//!   errors become pages with a status ([`WebError`]).
//! - The chat bots' routes ([`chat_token`]), and who called them ([`caller`]).
//!
//! Every HTML response carries a strict Content-Security-Policy (no scripts at all, styles
//! from our one stylesheet, forms only to ourselves), and every value in a page goes through
//! the template engine's HTML escaping.

pub mod auth;
pub mod caller;
pub mod chat_token;
pub mod donationalerts;
pub mod edge;
pub mod headers;
pub mod health;
pub mod oauth_state;
pub mod pages;
pub mod routes;
pub mod session;
pub mod texts;

use std::time::Duration;

use askama::Template;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::coordination::CoordinationError;
use crate::domain::Provider;
use crate::providers::ProviderError;
use crate::store::StoreError;
use crate::telemetry::error_chain;
use headers::{is_https, page_headers};
use oauth_state::StateRefusal;
use session::CrossSiteRefusal;
pub use texts::Texts;

/// A redirect (302 or 303) with the security headers, setting `cookies`.
pub fn redirect(
    app: &App,
    status: StatusCode,
    location: &str,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    let mut response = (status, page_headers(&app.config)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/")),
    );
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// Renders a template as an HTML response with the security headers.
pub fn html(app: &App, status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            page_headers(&app.config),
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// The title and explanation of an error, in the page's language.
struct Words {
    title: String,
    message: String,
}

impl From<(&'static str, &'static str)> for Words {
    fn from((title, message): (&'static str, &'static str)) -> Self {
        Self {
            title: title.to_owned(),
            message: message.to_owned(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    t: &'a Texts,
    status: u16,
    code: &'a str,
    title: &'a str,
    message: &'a str,
    retry_href: &'a str,
    retry_label: &'a str,
}

/// Everything that can go wrong in a browser flow or an API call. Causes are kept; the
/// status, the stable error code and the words shown are decided here and nowhere else,
/// and the cause chain is logged once, when the error becomes a response.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("the OAuth state was refused")]
    State(#[from] StateRefusal),
    #[error("{provider} reported {error}")]
    ProviderDenied { provider: Provider, error: String },
    #[error("the callback from {0} has no code")]
    MissingCode(Provider),
    #[error("{provider} refused the code")]
    CodeRejected {
        provider: Provider,
        #[source]
        source: ProviderError,
    },
    #[error("{provider} failed at {step}")]
    Provider {
        provider: Provider,
        step: &'static str,
        #[source]
        source: ProviderError,
    },
    #[error("{provider}'s answers do not agree: {what}")]
    ProviderInconsistent {
        provider: Provider,
        what: &'static str,
    },
    #[error("the request is malformed: {0}")]
    BadRequest(&'static str),
    #[error("the query is not UTF-8")]
    QueryNotUtf8(#[from] std::string::FromUtf8Error),
    #[error("the address is too long")]
    TooLong,
    #[error("the request did not come from this site")]
    CrossSite(#[from] CrossSiteRefusal),
    #[error("{0} is not configured ({vars})", vars = .0.credential_variables())]
    NotConfigured(Provider),
    #[error("this needs a logged-in streamer")]
    LoginRequired,
    #[error("the DonationAlerts account is connected to another streamer")]
    AccountLinkedElsewhere,
    /// The app-wide request budget of the provider gave no grant within the wait.
    #[error("{provider}'s request budget gave no grant in time")]
    BudgetExhausted {
        provider: Provider,
        retry_after: Duration,
    },
    /// This session started the flow too often; the next start is allowed after `retry_after`.
    #[error("too many attempts from this session")]
    TooManyAttempts { retry_after: Duration },
    #[error("the database is unavailable")]
    Store(#[from] StoreError),
    #[error("Redis is unavailable")]
    Coordination(#[from] CoordinationError),
    #[error("no such page")]
    NotFound,
}

impl WebError {
    /// The provider sent the browser back with `error`: kept for the log with only the
    /// characters an OAuth error code can contain.
    pub fn provider_denied(provider: Provider, error: &str) -> Self {
        Self::ProviderDenied {
            provider,
            error: error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::State(_)
            | Self::MissingCode(_)
            | Self::CodeRejected { .. }
            | Self::BadRequest(_)
            | Self::QueryNotUtf8(_) => StatusCode::BAD_REQUEST,
            Self::ProviderDenied { .. } | Self::CrossSite(_) => StatusCode::FORBIDDEN,
            Self::TooLong => StatusCode::URI_TOO_LONG,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Provider { source, .. } if source.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            Self::Provider { .. } | Self::ProviderInconsistent { .. } => StatusCode::BAD_GATEWAY,
            Self::LoginRequired => StatusCode::UNAUTHORIZED,
            Self::AccountLinkedElsewhere => StatusCode::CONFLICT,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotConfigured(_)
            | Self::Store(_)
            | Self::Coordination(_)
            | Self::BudgetExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable, user-visible code naming what refused the request (for support requests
    /// and for tests that must tell one refusal from another).
    pub fn code(&self) -> &'static str {
        match self {
            Self::State(refusal) => refusal.code(),
            Self::ProviderDenied { .. } => "provider_denied",
            Self::MissingCode(_) => "code_missing",
            Self::CodeRejected { .. } => "code_rejected",
            Self::Provider { source, .. } if source.is_timeout() => "provider_timeout",
            Self::Provider { .. } => "provider_failed",
            Self::ProviderInconsistent { .. } => "provider_inconsistent",
            Self::BadRequest(_) | Self::QueryNotUtf8(_) => "bad_request",
            Self::TooLong => "uri_too_long",
            Self::CrossSite(refusal) => refusal.code(),
            Self::NotConfigured(_) => "not_configured",
            Self::LoginRequired => "login_required",
            Self::AccountLinkedElsewhere => "account_linked_elsewhere",
            Self::BudgetExhausted { .. } => "provider_budget_exhausted",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::Store(_) => "store_unavailable",
            Self::Coordination(_) => "redis_unavailable",
            Self::NotFound => "not_found",
        }
    }

    /// How long the client should wait before trying again (`Retry-After`), when it is
    /// known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::BudgetExhausted { retry_after, .. } | Self::TooManyAttempts { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// Adds `Retry-After` (whole seconds, rounded up, at least 1) when it is known.
    fn add_retry_after(&self, response: &mut Response) {
        if let Some(wait) = self.retry_after() {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
    }

    /// The one log line of a failed request, with the whole cause chain.
    fn log(&self, status: StatusCode) {
        let chain = error_chain(self);
        if status.is_server_error() {
            tracing::warn!(error = %chain, code = self.code(), status = status.as_u16(), "request failed");
        } else {
            tracing::info!(error = %chain, code = self.code(), status = status.as_u16(), "request refused");
        }
    }

    /// Title and explanation in the page's language.
    fn words(&self, t: &Texts) -> Words {
        let ru = t.lang == "ru";
        fn choose<T>(ru: bool, ru_words: T, en_words: T) -> T {
            if ru { ru_words } else { en_words }
        }
        let pick =
            |ru_words: (&'static str, &'static str), en_words| choose(ru, ru_words, en_words);
        let own = |(title, message): (&str, &str)| Words {
            title: title.to_owned(),
            message: message.to_owned(),
        };
        match self {
            Self::State(StateRefusal::Expired) => pick(
                (
                    "Ссылка для входа устарела",
                    "На вход даётся 5 минут, и это время истекло. Начните вход заново.",
                ),
                (
                    "This login link has expired",
                    "A login has to be completed within 5 minutes. Please start again.",
                ),
            ).into(),
            Self::State(StateRefusal::Replayed) => pick(
                (
                    "Ссылка для входа уже использована",
                    "Эта попытка входа уже завершена. Начните вход заново.",
                ),
                (
                    "This login link was already used",
                    "This login attempt has already been completed. Please start again.",
                ),
            ).into(),
            Self::State(StateRefusal::Missing)
            | Self::BadRequest(_)
            | Self::QueryNotUtf8(_)
            | Self::TooLong => pick(
                ("Неверный запрос", "Адрес повреждён. Начните вход заново."),
                ("Bad request", "The address is damaged. Please start again."),
            ).into(),
            Self::State(
                StateRefusal::CookieMissing | StateRefusal::CookieInvalid | StateRefusal::Mismatch,
            ) => pick(
                (
                    "Вход начат в другом браузере",
                    "Завершить вход можно только в том браузере, где он был начат. Начните вход заново здесь.",
                ),
                (
                    "Login started in another browser",
                    "A login can only be completed in the browser that started it. Please start again here.",
                ),
            ).into(),
            Self::ProviderDenied { .. } => pick(
                (
                    "Вход отменён",
                    "Доступ не был предоставлен. Ничего не сохранено; можно попробовать ещё раз.",
                ),
                (
                    "Login cancelled",
                    "Access was not granted. Nothing was saved; you can try again.",
                ),
            ).into(),
            Self::MissingCode(provider) | Self::CodeRejected { provider, .. } => {
                let p = provider.name();
                own(choose(
                    ru,
                    (
                        &format!("{p} не подтвердил вход"),
                        "Код авторизации недействителен. Начните заново.",
                    ),
                    (
                        &format!("{p} did not confirm"),
                        "The authorization code is not valid. Please start again.",
                    ),
                ))
            }
            Self::Provider {
                provider, source, ..
            } if source.is_timeout() => {
                let p = provider.name();
                own(choose(
                    ru,
                    (
                        &format!("{p} не ответил"),
                        &format!("{p} не ответил вовремя. Попробуйте ещё раз через минуту."),
                    ),
                    (
                        &format!("{p} did not answer"),
                        &format!("{p} did not answer in time. Please try again in a minute."),
                    ),
                ))
            }
            Self::Provider { provider, .. } | Self::ProviderInconsistent { provider, .. } => {
                let p = provider.name();
                own(choose(
                    ru,
                    (
                        &format!("Ошибка на стороне {p}"),
                        &format!("{p} ответил с ошибкой. Попробуйте ещё раз через минуту."),
                    ),
                    (
                        &format!("{p} failed"),
                        &format!("{p} answered with an error. Please try again in a minute."),
                    ),
                ))
            }
            Self::CrossSite(_) => pick(
                (
                    "Запрос отклонён",
                    "Это действие можно выполнить только со страниц этого сайта.",
                ),
                (
                    "Request refused",
                    "This action can only be taken from this site's own pages.",
                ),
            ).into(),
            Self::NotConfigured(provider) => {
                let (p, vars, console) = (
                    provider.name(),
                    provider.credential_variables(),
                    provider.developer_console(),
                );
                own(choose(
                    ru,
                    (
                        &format!("{p} не настроен"),
                        &format!(
                            "Два пути: зарегистрируйте приложение на {console} и задайте {vars} \
                             (в .env или в окружении), или запустите cargo run -p avatar-local \
                             -- --demo, чтобы увидеть всё в работе без учётных данных и сети."
                        ),
                    ),
                    (
                        &format!("{p} is not configured"),
                        &format!(
                            "Two ways forward: register an application at {console} and set \
                             {vars} (in .env or the environment), or run cargo run -p \
                             avatar-local -- --demo to see everything work with no credentials \
                             and no network."
                        ),
                    ),
                ))
            }
            Self::LoginRequired => pick(
                (
                    "Сначала войдите через Twitch",
                    "Подключить DonationAlerts можно после входа через Twitch.",
                ),
                (
                    "Log in with Twitch first",
                    "DonationAlerts can be connected once you are logged in with Twitch.",
                ),
            )
            .into(),
            Self::AccountLinkedElsewhere => pick(
                (
                    "Этот аккаунт DonationAlerts уже подключён",
                    "Он подключён к другому аккаунту Twitch. Отключите его там и попробуйте снова.",
                ),
                (
                    "This DonationAlerts account is already connected",
                    "It is connected to another Twitch account. Disconnect it there and try again.",
                ),
            )
            .into(),
            Self::BudgetExhausted { provider, .. } => {
                let p = provider.name();
                own(choose(
                    ru,
                    (
                        &format!("{p} сейчас перегружен"),
                        &format!(
                            "Лимит запросов к {p} сейчас исчерпан. Ничего не сохранено; \
                             попробуйте ещё раз через минуту."
                        ),
                    ),
                    (
                        &format!("{p} is busy right now"),
                        &format!(
                            "The request limit for {p} is used up right now. Nothing was \
                             saved; please try again in a minute."
                        ),
                    ),
                ))
            }
            Self::TooManyAttempts { .. } => pick(
                (
                    "Слишком много попыток",
                    "Подключение начинали слишком часто. Попробуйте ещё раз через минуту.",
                ),
                (
                    "Too many attempts",
                    "Connecting was started too often. Please try again in a minute.",
                ),
            )
            .into(),
            Self::Store(_) | Self::Coordination(_) => pick(
                (
                    "Сервис временно недоступен",
                    "Попробуйте ещё раз через минуту.",
                ),
                ("Temporarily unavailable", "Please try again in a minute."),
            ).into(),
            Self::NotFound => pick(
                ("Страница не найдена", "Такой страницы здесь нет."),
                ("Page not found", "There is no such page here."),
            ).into(),
        }
    }

    /// The error page. `retry_href` is where "try again" leads (the start of the flow).
    pub(crate) fn into_page(self, app: &App, t: &Texts, retry_href: &str) -> Response {
        let status = self.status();
        self.log(status);
        let Words { title, message } = self.words(t);
        let retry_label = if retry_href == "/" {
            t.back_home
        } else {
            t.try_again
        };
        let mut response = html(
            app,
            status,
            &ErrorPage {
                t,
                status: status.as_u16(),
                code: self.code(),
                title: &title,
                message: &message,
                retry_href,
                retry_label,
            },
        );
        self.add_retry_after(&mut response);
        response
    }
}

/// The error of the JSON routes (`/auth/status`, later `/api/…`):
/// `{"error":"<code>","message":"…"}` with the status [`WebError::status`] decides.
#[derive(Debug)]
pub(crate) struct ApiError(pub WebError);

impl<E: Into<WebError>> From<E> for ApiError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        self.0.log(status);
        let body = serde_json::json!({
            "error": self.0.code(),
            "message": self.0.words(&texts::EN).message,
        });
        let mut response = (
            status,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(body),
        )
            .into_response();
        self.0.add_retry_after(&mut response);
        response
    }
}

/// Cookies of a request, by name (the first occurrence wins).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Lax always, Secure whenever the site is https.
pub fn set_cookie(
    app: &App,
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: i64,
) -> HeaderValue {
    let secure = if is_https(&app.config) {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timeout() -> ProviderError {
        ProviderError::Timeout("no answer".into())
    }

    #[test]
    fn provider_failures_are_502_and_timeouts_504_with_their_own_codes() {
        let failed = WebError::Provider {
            provider: Provider::Twitch,
            step: "the code exchange",
            source: ProviderError::ServerError { status: 500 },
        };
        let malformed = WebError::Provider {
            provider: Provider::Twitch,
            step: "/validate",
            source: ProviderError::Malformed {
                what: "unexpected JSON",
                source: None,
            },
        };
        let slow = WebError::Provider {
            provider: Provider::Twitch,
            step: "Helix /users",
            source: timeout(),
        };
        assert_eq!(
            (failed.status(), failed.code()),
            (StatusCode::BAD_GATEWAY, "provider_failed")
        );
        assert_eq!(malformed.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            (slow.status(), slow.code()),
            (StatusCode::GATEWAY_TIMEOUT, "provider_timeout")
        );
        assert_eq!(
            WebError::CodeRejected {
                provider: Provider::Twitch,
                source: ProviderError::Rejected {
                    status: 400,
                    message: "Invalid authorization code".into()
                }
            }
            .status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn every_state_refusal_is_a_400_with_a_code_of_its_own() {
        let refusals = [
            StateRefusal::Missing,
            StateRefusal::CookieMissing,
            StateRefusal::CookieInvalid,
            StateRefusal::Mismatch,
            StateRefusal::Expired,
            StateRefusal::Replayed,
        ];
        let codes: std::collections::HashSet<_> =
            refusals.iter().map(|r| WebError::from(*r).code()).collect();
        assert_eq!(codes.len(), refusals.len());
        for refusal in refusals {
            assert_eq!(WebError::from(refusal).status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn the_logged_chain_keeps_every_cause_once() {
        let error = WebError::Provider {
            provider: Provider::Twitch,
            step: "the code exchange",
            source: ProviderError::Timeout(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("waited {:?}", Duration::from_millis(1500)),
            ))),
        };
        assert_eq!(
            error_chain(&error),
            "Twitch failed at the code exchange: the provider did not answer in time: \
             waited 1.5s"
        );
    }

    #[test]
    fn refusals_that_know_when_to_come_back_say_so_in_retry_after() {
        let throttled = ApiError(WebError::TooManyAttempts {
            retry_after: Duration::from_millis(1200),
        })
        .into_response();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(throttled.headers()[header::RETRY_AFTER], "2");
        let busy = ApiError(WebError::BudgetExhausted {
            provider: Provider::DonationAlerts,
            retry_after: Duration::from_millis(5),
        })
        .into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            busy.headers()[header::RETRY_AFTER],
            "1",
            "at least a second"
        );
        let other = ApiError(WebError::LoginRequired).into_response();
        assert!(other.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn api_errors_are_json_with_the_same_status_and_code() {
        let response = ApiError::from(StateRefusal::Replayed).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "state_replayed");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}
