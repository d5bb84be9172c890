//! Redis: the coordination server (`REDIS_URL`, with `REDIS_AUTH_TOKEN` as its password when
//! the URL carries none) and the lock quorum (`REDIS_LOCK_URLS`).

use std::fmt;

use url::Url;

use super::Reader;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Unset: single-instance mode, coordination in-process.
    pub url: Option<RedisUrl>,
    pub required: bool,
    /// Independent masters for lock quorum; defaults to `[url]`.
    pub lock_urls: Vec<RedisUrl>,
    pub force_tls: bool,
}

/// A `redis://` or `rediss://` URL. It may carry a password, so it only prints its host.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Secret<Url>);

impl RedisUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "redis" | "rediss" => {}
            other => {
                return Err(format!(
                    "scheme must be redis:// or rediss://, not {other}://"
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host".into());
        }
        Ok(Self(Secret::new(url)))
    }

    /// The same server with `password` for AUTH; refused when the URL carries one already.
    fn with_password(&self, password: &str) -> Result<Self, &'static str> {
        let mut url = self.0.expose().clone();
        if url.password().is_some() {
            return Err("REDIS_URL carries a password of its own: give one or the other");
        }
        url.set_password(Some(password))
            .map_err(|()| "cannot be added to REDIS_URL")?;
        Ok(Self(Secret::new(url)))
    }

    /// The URL to connect with, upgraded to `rediss://` when TLS is forced.
    pub(crate) fn connection_url(&self, force_tls: bool) -> String {
        let mut url = self.0.expose().clone();
        if force_tls && url.scheme() == "redis" {
            // Only fails for cannot-be-a-base URLs, which `parse` has already excluded.
            let _ = url.set_scheme("rediss");
        }
        url.to_string()
    }

    /// `host:port`, safe to log.
    pub(crate) fn host_port(&self) -> String {
        let url = self.0.expose();
        format!(
            "{}:{}",
            url.host_str().unwrap_or("?"),
            url.port().unwrap_or(6379)
        )
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.host_port())
    }
}

impl Reader<'_> {
    pub(super) fn redis(&mut self) -> RedisConfig {
        let url = match self.get("REDIS_URL").map(RedisUrl::parse) {
            None => None,
            Some(Ok(url)) => Some(url),
            Some(Err(problem)) => {
                self.fail("REDIS_URL", problem);
                None
            }
        };
        // The stack's ElastiCache: its address in REDIS_URL, its AUTH token in a secret.
        let url = match (url, self.get("REDIS_AUTH_TOKEN").map(str::to_owned)) {
            (Some(url), Some(token)) => match url.with_password(&token) {
                Ok(url) => Some(url),
                Err(problem) => {
                    self.fail("REDIS_AUTH_TOKEN", problem);
                    None
                }
            },
            (None, Some(_)) if !self.errors.iter().any(|e| e.variable == "REDIS_URL") => {
                self.fail("REDIS_AUTH_TOKEN", "needs REDIS_URL to be set as well");
                None
            }
            (url, _) => url,
        };
        let required = self.bool("REDIS_REQUIRED", false);
        if required && url.is_none() && !self.errors.iter().any(|e| e.variable == "REDIS_URL") {
            self.fail(
                "REDIS_URL",
                "must be set when REDIS_REQUIRED=true (refusing to run without Redis)",
            );
        }
        let mut lock_urls = Vec::new();
        if let Some(raw) = self.get("REDIS_LOCK_URLS").map(str::to_owned) {
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match RedisUrl::parse(part) {
                    Ok(u) => lock_urls.push(u),
                    Err(problem) => self.fail("REDIS_LOCK_URLS", format!("{problem} in one entry")),
                }
            }
            if url.is_none() && !lock_urls.is_empty() {
                self.fail("REDIS_LOCK_URLS", "needs REDIS_URL to be set as well");
            }
        }
        if lock_urls.is_empty() {
            lock_urls.extend(url.clone());
        }
        let force_tls = self.bool("REDIS_TLS", false);
        RedisConfig {
            url,
            required,
            lock_urls,
            force_tls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::with_keys;

    #[test]
    fn redis_required_without_a_url_is_refused() {
        let errors = Config::from_vars(&with_keys(&[("REDIS_REQUIRED", "true")])).unwrap_err();
        assert!(errors.names("REDIS_URL"));
    }

    #[test]
    fn lock_urls_default_to_the_redis_url_and_never_print_passwords() {
        let config = Config::from_vars(&with_keys(&[(
            "REDIS_URL",
            "redis://:s3cret@127.0.0.1:7000/0",
        )]))
        .unwrap();
        assert_eq!(config.redis.lock_urls.len(), 1);
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            config.redis.lock_urls[0]
                .connection_url(true)
                .starts_with("rediss://")
        );
    }

    #[test]
    fn the_auth_token_becomes_the_password_of_a_url_without_one() {
        let config = Config::from_vars(&with_keys(&[
            ("REDIS_URL", "rediss://cache.example:6379"),
            ("REDIS_AUTH_TOKEN", "s3cretToken0123456789"),
        ]))
        .unwrap();
        let url = config.redis.url.as_ref().unwrap();
        assert_eq!(
            url.connection_url(false),
            "rediss://:s3cretToken0123456789@cache.example:6379"
        );
        assert_eq!(
            config.redis.lock_urls[0].connection_url(false),
            url.connection_url(false)
        );
        assert!(!format!("{config:?}").contains("s3cretToken"));
    }

    #[test]
    fn an_auth_token_without_a_url_or_beside_a_password_is_refused_unechoed() {
        for (url, token) in [
            (None, "t0ken-of-the-stack"),
            (
                Some("rediss://:other@cache.example:6379"),
                "t0ken-of-the-stack",
            ),
        ] {
            let mut pairs = vec![("REDIS_AUTH_TOKEN", token)];
            pairs.extend(url.map(|url| ("REDIS_URL", url)));
            let errors = Config::from_vars(&with_keys(&pairs)).unwrap_err();
            assert!(errors.names("REDIS_AUTH_TOKEN"), "{url:?}: {errors}");
            assert!(!errors.to_string().contains(token), "{errors}");
        }
    }
}
