//! The headers responses carry. Every response, whatever produced it (a handler, the
//! fallback, a 405, the edge's own timeouts), gets [`SecurityHeaders`] in one layer; a page
//! adds [`page_headers`] (its content policy, framing, referrer and caching).

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Config;

/// Whether the site is served over https (`PUBLIC_BASE_URL`): cookies are `Secure` and HSTS
/// is sent only then.
pub(crate) fn is_https(config: &Config) -> bool {
    config.public_base_url.scheme() == "https"
}

/// The headers every response carries, whatever produced it.
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security`: only when the public URL is https (browsers ignore it
    /// over http, and it must not pin a plain-http development host).
    hsts: bool,
}

impl SecurityHeaders {
    pub(crate) fn for_config(config: &Config) -> Self {
        Self {
            hsts: is_https(config),
        }
    }

    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if self.hsts {
            headers.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            );
        }
    }
}

/// The headers of a page. `img-src` also allows Twitch's image CDN (avatars) and, when
/// Twitch is a local fake (demo, tests), the fake's origin.
pub fn page_headers(config: &Config) -> [(HeaderName, HeaderValue); 4] {
    let mut images = String::from("'self' https://static-cdn.jtvnw.net");
    let api = &config.twitch.api_base_url;
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
