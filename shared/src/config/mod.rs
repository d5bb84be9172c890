//! Typed configuration from the environment (and `.env` when present).
//!
//! Every variable of the contract is read here and nowhere else. A missing or malformed
//! value becomes a [`ConfigError`] naming the variable; the binaries print all of them and
//! exit non-zero rather than run half-configured.
//!
//! This module holds the loading and the parsing helpers; each concern reads its own
//! variables in a submodule: `providers` (Twitch, DonationAlerts, the poller), `redis`,
//! `sqlite`, `keys` (and the local key file) and `http_server` (the local server's limits).

mod http_server;
mod keys;
mod providers;
mod redis;
mod sqlite;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use url::Url;

pub use self::http_server::HttpServerConfig;
pub use self::keys::{Key32, KeyConfig, KeySource, decode_key, local_key_file_for};
pub use self::providers::{
    DONATION_SUBSCRIBE_SCOPE, DonationAlertsConfig, PollingConfig, RealtimeConfig,
    TokenLifecycleConfig, TwitchConfig,
};
pub use self::redis::{RedisConfig, RedisUrl};
pub use self::sqlite::{JournalMode, SqliteConfig};
use crate::secret::Secret;
use crate::secrets::SecretPurpose;
use crate::telemetry::LogFormat;
pub use crate::vars::{ConfigError, value};

/// Where the process runs: decides a few defaults and which secrets are mandatory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// `avatar-local`, tests, a developer's machine.
    Local,
    /// In AWS: a Lambda function (detected by `AWS_LAMBDA_FUNCTION_NAME`) or the realtime
    /// bridge's ECS task (`ECS_CONTAINER_METADATA_URI_V4`). The keys it is given are
    /// required (never generated into a file), logs are JSON, the database is on EFS.
    Aws,
}

impl Deployment {
    /// How this deployment's log lines are written.
    pub fn log_format(self) -> LogFormat {
        match self {
            Self::Local => LogFormat::Text,
            Self::Aws => LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub deployment: Deployment,
    pub port: u16,
    pub public_base_url: Url,
    pub twitch: TwitchConfig,
    pub donationalerts: DonationAlertsConfig,
    pub redis: RedisConfig,
    pub sqlite: SqliteConfig,
    pub polling: PollingConfig,
    pub realtime: RealtimeConfig,
    pub tokens: TokenLifecycleConfig,
    /// Where the keys come from; [`KeySource::load`] reads them (and creates the local key
    /// file).
    pub keys: KeySource,
    /// How long a started login stays valid (`OAUTH_STATE_TTL_MS`, at most 300 s).
    pub oauth_state_ttl: Duration,
    pub secrets_arn: Option<String>,
    pub internal_api_token: Option<Secret<String>>,
    /// Longest a call to Twitch or DonationAlerts may take (`PROVIDER_TIMEOUT_MS`).
    pub provider_timeout: Duration,
    /// How long one health probe of Redis and SQLite is reused (`HEALTH_MAX_AGE_MS`).
    pub health_max_age: Duration,
    /// Timeouts and connection cap of the local server (`HTTP_*`).
    pub http: HttpServerConfig,
    pub log_filter: String,
    /// The `Stack` dimension of the functions' CloudWatch metrics (`STACK_NAME`, which
    /// template.yaml sets to the stack's name; its alarms select on it).
    pub stack_name: String,
}

/// `STACK_NAME` when unset: the stack name the README deploys under.
pub(crate) const DEFAULT_STACK_NAME: &str = "avatar-twitch-oauth";

/// Every problem found, so an operator fixes them all in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    pub fn names(&self, variable: &str) -> bool {
        self.0.iter().any(|e| e.variable == variable)
    }
}

impl Config {
    /// Reads `.env` (when present; real environment variables win), the environment, and
    /// with `SECRETS_ARN` set the Secrets Manager secrets (credentials and region from the
    /// environment, as Lambda sets them). What every process does once at start.
    pub async fn load() -> Result<Self, ConfigErrors> {
        Self::load_given(SecretPurpose::ALL).await
    }

    /// [`Config::load`] for a process given only the secrets of `given`: in AWS a function
    /// is given those its handlers use ([`crate::secrets::needed_by`]), and requires no
    /// other.
    pub(crate) async fn load_given(given: &'static [SecretPurpose]) -> Result<Self, ConfigErrors> {
        Self::from_vars_given(&Self::load_vars().await?, given)
    }

    /// The variables [`Config::load`] reads, before parsing (`avatar-local` adjusts a few).
    pub async fn load_vars() -> Result<HashMap<String, String>, ConfigErrors> {
        // A function has no `.env`: skip the search for one up the directory tree.
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_none() {
            let _ = dotenvy::dotenv();
        }
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        if let Some(arns) = value(&vars, "SECRETS_ARN").map(str::to_owned) {
            crate::secrets::merge_into(&mut vars, &arns)
                .await
                .map_err(|e| ConfigErrors(vec![e]))?;
        }
        Ok(vars)
    }

    /// Builds the configuration of a process given every secret from a map of variables;
    /// tests call this directly.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        Self::from_vars_given(vars, SecretPurpose::ALL)
    }

    /// Builds the configuration of a process given the secrets of `given` only: in AWS
    /// (`AWS_LAMBDA_FUNCTION_NAME` set) a key outside them is not required, and a client
    /// secret outside them is not expected (see [`TwitchConfig::client_secret_given`]).
    pub(crate) fn from_vars_given(
        vars: &HashMap<String, String>,
        given: &'static [SecretPurpose],
    ) -> Result<Self, ConfigErrors> {
        let mut reader = Reader {
            vars,
            given,
            errors: Vec::new(),
        };
        let config = reader.read();
        if reader.errors.is_empty() {
            config.ok_or_else(|| ConfigErrors(Vec::new()))
        } else {
            Err(ConfigErrors(reader.errors))
        }
    }

    /// True when Redis coordinates several instances.
    pub fn is_distributed(&self) -> bool {
        self.redis.url.is_some()
    }
}

/// `RUST_LOG` as the functions read it: a level and/or `target=level` pairs, comma-separated
/// (`info`, `warn,shared::poll=debug`). Span and field filters (`target[span{field}]`) are
/// refused rather than read as a strange target name: the filter that would understand
/// them brings a regex engine into every function.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let usage = "give a level (error, warn, info, debug, trace, off) and/or comma-separated \
                 target=level pairs";
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let target = directive
            .split_once('=')
            .map_or(directive, |(target, _)| target);
        if !target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
        {
            return Err(format!(
                "{directive:?}: span and field filters are not supported; {usage}"
            ));
        }
    }
    filter
        .parse::<tracing_subscriber::filter::Targets>()
        .map(|_| ())
        .map_err(|e| format!("not a valid filter ({e}): {usage}"))
}

struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    /// The secrets this process is given.
    given: &'static [SecretPurpose],
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    /// The value, or `None` when unset or blank.
    fn get(&self, name: &str) -> Option<&str> {
        value(self.vars, name)
    }

    /// Whether this process is given the secret of `purpose`.
    fn is_given(&self, purpose: SecretPurpose) -> bool {
        self.given.contains(&purpose)
    }

    fn fail(&mut self, variable: &'static str, problem: impl Into<String>) {
        self.errors.push(ConfigError {
            variable,
            problem: problem.into(),
        });
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    fn secret(&self, name: &str) -> Option<Secret<String>> {
        self.string(name).map(Secret::new)
    }

    fn bool(&mut self, name: &'static str, default: bool) -> bool {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off") => false,
            Some(other) => {
                self.fail(name, format!("must be true or false (got {other:?})"));
                default
            }
        }
    }

    /// A whole number in `min..=max`.
    fn number(&mut self, name: &'static str, default: u64, min: u64, max: u64) -> u64 {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            Ok(n) => {
                self.fail(name, format!("must be between {min} and {max} (got {n})"));
                default
            }
            Err(_) => {
                self.fail(name, format!("must be a whole number (got {raw:?})"));
                default
            }
        }
    }

    /// A duration in whole milliseconds, in `min..=max`.
    fn millis(&mut self, name: &'static str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.number(name, default, min, max))
    }

    /// An absolute http(s) URL without a trailing slash in its path.
    fn http_url(&mut self, name: &'static str, default: &str) -> Url {
        self.url(name, default, parse_http_url)
    }

    fn websocket_url(&mut self, name: &'static str, default: &str) -> Url {
        self.url(name, default, parse_websocket_url)
    }

    fn url(
        &mut self,
        name: &'static str,
        default: &str,
        parse: fn(&str) -> Result<Url, String>,
    ) -> Url {
        let raw = self.get(name).unwrap_or(default).to_owned();
        match parse(&raw) {
            Ok(url) => url,
            Err(problem) => {
                self.fail(name, problem);
                // A placeholder keeps reading going so every error is reported at once.
                Url::parse("http://invalid.invalid").expect("static URL")
            }
        }
    }

    fn scopes(&self, name: &str, default: &str) -> Vec<String> {
        self.get(name)
            .unwrap_or(default)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    fn read(&mut self) -> Option<Config> {
        let deployment = if self.get("AWS_LAMBDA_FUNCTION_NAME").is_some()
            || self.get("ECS_CONTAINER_METADATA_URI_V4").is_some()
        {
            Deployment::Aws
        } else {
            Deployment::Local
        };
        let port = self.number("PORT", 3000, 0, 65535) as u16;

        let base_var = if self.get("PUBLIC_BASE_URL").is_some() || self.get("BASE_URL").is_none() {
            "PUBLIC_BASE_URL"
        } else {
            "BASE_URL"
        };
        let public_base_url = self.http_url(base_var, &format!("http://localhost:{port}"));
        let base = public_base_url.as_str().trim_end_matches('/').to_owned();

        let twitch = self.twitch(&base);
        let donationalerts = self.donationalerts(&base);

        let redis = self.redis();
        let sqlite = self.sqlite(deployment);
        let polling = self.polling();
        let realtime = self.realtime();
        let tokens = self.token_lifecycle();
        let provider_timeout = self.millis("PROVIDER_TIMEOUT_MS", 10_000, 100, 60_000);
        let health_max_age = self.millis("HEALTH_MAX_AGE_MS", 1000, 0, 3_600_000);
        let http = self.http_server();
        let keys = self.keys(deployment, &sqlite.path);
        let oauth_state_ttl = self.millis("OAUTH_STATE_TTL_MS", 300_000, 1_000, 300_000);
        let internal_api_token = self.internal_api_token();
        let log_filter = self.string("RUST_LOG").unwrap_or_else(|| "info".into());
        if let Err(problem) = check_log_filter(&log_filter) {
            self.fail("RUST_LOG", problem);
        }

        Some(Config {
            deployment,
            port,
            public_base_url,
            twitch,
            donationalerts,
            redis,
            sqlite,
            polling,
            realtime,
            tokens,
            keys: keys?,
            oauth_state_ttl,
            secrets_arn: self.string("SECRETS_ARN"),
            internal_api_token,
            provider_timeout,
            health_max_age,
            http,
            log_filter,
            stack_name: self
                .string("STACK_NAME")
                .unwrap_or_else(|| DEFAULT_STACK_NAME.to_owned()),
        })
    }
}

/// The shortest `INTERNAL_API_TOKEN` accepted: the token hands out every streamer's chat
/// token, so it must not be guessable (`openssl rand -hex 32` makes 64 characters).
pub(crate) const MIN_INTERNAL_API_TOKEN_CHARS: usize = 32;

impl Reader<'_> {
    fn internal_api_token(&mut self) -> Option<Secret<String>> {
        let token = self.secret("INTERNAL_API_TOKEN")?;
        let length = token.expose().chars().count();
        if length < MIN_INTERNAL_API_TOKEN_CHARS {
            self.fail(
                "INTERNAL_API_TOKEN",
                format!(
                    "must be at least {MIN_INTERNAL_API_TOKEN_CHARS} characters (got {length}); \
                     generate one with: openssl rand -hex 32"
                ),
            );
            return None;
        }
        Some(token)
    }
}

fn parse_websocket_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a valid URL ({e}): {raw:?}"))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(format!("must be a ws:// or wss:// URL (got {raw:?})"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no host: {raw:?}"));
    }
    Ok(url)
}

fn parse_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("not a valid URL ({e}): {raw:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must be an http:// or https:// URL (got {raw:?})"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no host: {raw:?}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("must not carry a query or fragment: {raw:?}"));
    }
    // Normalise "https://x/y/" to "https://x/y" so joining paths is plain concatenation.
    let trimmed = url.as_str().trim_end_matches('/').to_owned();
    Url::parse(&trimmed).map_err(|e| format!("not a valid URL ({e}): {raw:?}"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;

    pub(super) fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(super) fn with_keys(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let key = BASE64.encode([7u8; 32]);
        let mut map = vars(pairs);
        map.entry("TOKEN_ENCRYPTION_KEY".into())
            .or_insert(key.clone());
        map.entry("SESSION_SECRET".into()).or_insert(key);
        map
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::from_vars(&with_keys(&[])).unwrap();
        assert_eq!(config.port, 3000);
        assert_eq!(config.public_base_url.as_str(), "http://localhost:3000/");
        assert_eq!(
            config.twitch.redirect_uri.as_str(),
            "http://localhost:3000/auth/twitch/callback"
        );
        assert_eq!(config.twitch.scopes, vec!["chat:read"]);
        assert_eq!(
            config.donationalerts.scopes,
            vec![
                "oauth-user-show",
                "oauth-donation-index",
                "oauth-donation-subscribe"
            ]
        );
        assert_eq!(config.sqlite.path, PathBuf::from("data.sqlite"));
        assert_eq!(config.sqlite.journal_mode, JournalMode::Wal);
        assert_eq!(config.sqlite.read_connections, 4);
        assert_eq!(config.polling.interval, Duration::from_millis(5000));
        assert_eq!(config.polling.lock_ttl, Duration::from_millis(4500));
        assert_eq!(config.polling.rate_limit_per_minute, 60);
        assert!(!config.is_distributed());
        assert!(!config.redis.required);
        assert_eq!(
            config.http,
            HttpServerConfig {
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                body_timeout: Duration::from_secs(30),
                max_connections: 4096,
                max_connections_per_ip: 256,
            }
        );
    }

    #[test]
    fn base_url_alias_and_port_shape_the_redirect_uris() {
        let config = Config::from_vars(&with_keys(&[
            ("PORT", "8080"),
            ("BASE_URL", "https://a.example/"),
        ]))
        .unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(
            config.donationalerts.redirect_uri.as_str(),
            "https://a.example/auth/donationalerts/callback"
        );
    }

    #[test]
    fn each_malformed_variable_is_named() {
        let cases = [
            ("PUBLIC_BASE_URL", "not a url"),
            ("TWITCH_AUTH_BASE_URL", "ftp://id.example"),
            ("DA_POLL_INTERVAL_MS", "fast"),
            ("DA_POLL_CONCURRENCY", "0"),
            ("PORT", "70000"),
            ("REDIS_URL", "http://localhost:6379"),
            ("REDIS_REQUIRED", "maybe"),
            ("SQLITE_JOURNAL_MODE", "wall"),
            ("TOKEN_ENCRYPTION_KEY", "c2hvcnQ="),
            ("SESSION_SECRET", "!!!"),
            ("TOKEN_ENCRYPTION_OLD_KEYS", "c2hvcnQ="),
            ("RUST_LOG", "info,[[["),
            ("RUST_LOG", "shared[poll{streamer=1}]=debug"),
            ("RUST_LOG", "shared=loud"),
            ("HTTP_HEADER_TIMEOUT_MS", "10s"),
            ("HTTP_IDLE_TIMEOUT_MS", "0"),
            ("HTTP_BODY_TIMEOUT_MS", "-5"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_CONNECTIONS_PER_IP", "0"),
            ("INTERNAL_API_TOKEN", "c2hvcnQ="),
        ];
        for (name, value) in cases {
            let errors = Config::from_vars(&with_keys(&[(name, value)])).unwrap_err();
            assert!(errors.names(name), "{name}={value:?} gave {errors}");
            assert!(
                !errors.to_string().contains("c2hvcnQ"),
                "the value leaked: {errors}"
            );
        }
    }

    #[test]
    fn an_internal_api_token_shorter_than_32_characters_is_refused_without_echoing_it() {
        let short = "x".repeat(MIN_INTERNAL_API_TOKEN_CHARS - 1);
        let errors = Config::from_vars(&with_keys(&[("INTERNAL_API_TOKEN", &short)])).unwrap_err();
        assert!(errors.names("INTERNAL_API_TOKEN"), "{errors}");
        assert!(errors.to_string().contains("at least 32"), "{errors}");
        assert!(
            !errors.to_string().contains(&short),
            "the value leaked: {errors}"
        );

        let long = "y".repeat(MIN_INTERNAL_API_TOKEN_CHARS);
        let config = Config::from_vars(&with_keys(&[("INTERNAL_API_TOKEN", &long)])).unwrap();
        assert_eq!(config.internal_api_token.unwrap().expose(), &long);
    }
}
