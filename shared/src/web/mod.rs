//! The browser-facing part: pages, the Twitch login routes, sessions, cookies, and the one
//! place where errors become pages with a status.
//!
//! Every HTML response carries a strict Content-Security-Policy (no scripts at all, styles
//! from our one stylesheet, forms only to ourselves), and every value in a page goes through
//! the template engine's HTML escaping.

pub mod auth;
pub mod pages;
pub mod session;
pub mod texts;

use askama::Template;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::app::App;
pub use texts::Texts;

/// Security headers for every page. `img-src` also allows Twitch's image CDN (avatars) and,
/// when Twitch is a local fake (demo, tests), the fake's origin.
pub fn security_headers(app: &App) -> [(HeaderName, HeaderValue); 5] {
    let mut images = String::from("'self' https://static-cdn.jtvnw.net");
    let api = &app.config.twitch.api_base_url;
    if api.scheme() == "http" {
        images.push(' ');
        images.push_str(&api.origin().ascii_serialization());
    }
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src {images}; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    );
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&policy)
                .unwrap_or(HeaderValue::from_static("default-src 'none'")),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Nothing leaves for other sites; same-origin requests keep their Origin (with
        // `no-referrer` a browser sends `Origin: null` on our own form posts).
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// A redirect (302 or 303) with the security headers, setting `cookies`.
pub fn redirect(
    app: &App,
    status: StatusCode,
    location: &str,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    let mut response = (status, security_headers(app)).into_response();
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
            security_headers(app),
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    t: &'a Texts,
    status: u16,
    title: &'a str,
    message: &'a str,
    retry_href: &'a str,
    retry_label: &'a str,
}

/// Everything that can go wrong in a browser flow. The status and the words shown are
/// decided here and nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the callback has no state")]
    MissingState,
    #[error("the state is unknown, expired or already used")]
    UnknownState,
    #[error("the state was started in another browser")]
    ForeignBrowser,
    #[error("the provider reported {error}")]
    ProviderDenied { error: String },
    #[error("the callback has no code")]
    MissingCode,
    #[error("the provider refused the code: {0}")]
    CodeRejected(String),
    #[error("the provider failed: {0}")]
    ProviderFailed(String),
    #[error("the provider's answers do not agree: {0}")]
    ProviderInconsistent(String),
    #[error("the request is malformed: {0}")]
    BadRequest(&'static str),
    #[error("the address is too long")]
    TooLong,
    #[error("the request did not come from this site: {0}")]
    CrossSite(String),
    #[error("Twitch login is not configured (TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET)")]
    NotConfigured,
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error("no such page")]
    NotFound,
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingState
            | Self::UnknownState
            | Self::ForeignBrowser
            | Self::MissingCode
            | Self::CodeRejected(_)
            | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ProviderDenied { .. } | Self::CrossSite(_) => StatusCode::FORBIDDEN,
            Self::TooLong => StatusCode::URI_TOO_LONG,
            Self::NotFound => StatusCode::NOT_FOUND,
            // The login failed because a request it depended on (to Twitch) failed.
            Self::ProviderFailed(_) | Self::ProviderInconsistent(_) => {
                StatusCode::FAILED_DEPENDENCY
            }
            Self::NotConfigured | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Title and explanation in the page's language.
    fn words(&self, t: &Texts) -> (&'static str, &'static str) {
        let ru = t.lang == "ru";
        match self {
            Self::MissingState | Self::UnknownState => {
                if ru {
                    (
                        "Ссылка для входа устарела",
                        "Эта попытка входа уже использована или истекла (на вход даётся 5 минут). Начните вход заново.",
                    )
                } else {
                    (
                        "This login link has expired",
                        "This login attempt was already used or has expired (you have 5 minutes). Please start again.",
                    )
                }
            }
            Self::ForeignBrowser => {
                if ru {
                    (
                        "Вход начат в другом браузере",
                        "Завершить вход можно только в том браузере, где он был начат. Начните вход заново здесь.",
                    )
                } else {
                    (
                        "Login started in another browser",
                        "A login can only be completed in the browser that started it. Please start again here.",
                    )
                }
            }
            Self::ProviderDenied { .. } => {
                if ru {
                    (
                        "Вход отменён",
                        "Доступ не был предоставлен. Ничего не сохранено; можно попробовать ещё раз.",
                    )
                } else {
                    (
                        "Login cancelled",
                        "Access was not granted. Nothing was saved; you can try again.",
                    )
                }
            }
            Self::MissingCode | Self::CodeRejected(_) => {
                if ru {
                    (
                        "Twitch не подтвердил вход",
                        "Код авторизации недействителен. Начните вход заново.",
                    )
                } else {
                    (
                        "Twitch did not confirm the login",
                        "The authorization code is not valid. Please start again.",
                    )
                }
            }
            Self::ProviderFailed(_) | Self::ProviderInconsistent(_) => {
                if ru {
                    (
                        "Twitch не ответил",
                        "Не удалось завершить вход: Twitch не ответил как положено. Попробуйте ещё раз через минуту.",
                    )
                } else {
                    (
                        "Twitch did not answer",
                        "The login could not be completed because Twitch did not answer properly. Please try again in a minute.",
                    )
                }
            }
            Self::BadRequest(_) | Self::TooLong => {
                if ru {
                    ("Неверный запрос", "Адрес повреждён. Начните вход заново.")
                } else {
                    ("Bad request", "The address is damaged. Please start again.")
                }
            }
            Self::CrossSite(_) => {
                if ru {
                    (
                        "Запрос отклонён",
                        "Это действие можно выполнить только со страниц этого сайта.",
                    )
                } else {
                    (
                        "Request refused",
                        "This action can only be taken from this site's own pages.",
                    )
                }
            }
            Self::NotConfigured => {
                if ru {
                    (
                        "Вход через Twitch не настроен",
                        "Администратору нужно задать TWITCH_CLIENT_ID и TWITCH_CLIENT_SECRET.",
                    )
                } else {
                    (
                        "Twitch login is not configured",
                        "The operator needs to set TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET.",
                    )
                }
            }
            Self::Unavailable(_) => {
                if ru {
                    (
                        "Сервис временно недоступен",
                        "Попробуйте ещё раз через минуту.",
                    )
                } else {
                    ("Temporarily unavailable", "Please try again in a minute.")
                }
            }
            Self::NotFound => {
                if ru {
                    ("Страница не найдена", "Такой страницы здесь нет.")
                } else {
                    ("Page not found", "There is no such page here.")
                }
            }
        }
    }

    /// The error page. `retry_href` is where "try again" leads (the start of the flow).
    pub fn into_page(self, app: &App, t: &Texts, retry_href: &str) -> Response {
        let status = self.status();
        if status.is_server_error() || status == StatusCode::FAILED_DEPENDENCY {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::info!(error = %self, status = status.as_u16(), "request refused");
        }
        let (title, message) = self.words(t);
        let retry_label = if retry_href == "/" {
            t.back_home
        } else {
            t.try_again
        };
        html(
            app,
            status,
            &ErrorPage {
                t,
                status: status.as_u16(),
                title,
                message,
                retry_href,
                retry_label,
            },
        )
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
    let secure = if is_https(app) { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("invalid=; Max-Age=0"))
}

pub fn is_https(app: &App) -> bool {
    app.config.public_base_url.scheme() == "https"
}
