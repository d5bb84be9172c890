//! Typed configuration from the environment (and `.env` when present).
//!
//! Every variable of the contract is read here and nowhere else. A missing or malformed
//! value becomes a [`ConfigError`] naming the variable; the binaries print all of them and
//! exit non-zero rather than run half-configured.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use url::Url;

use crate::secret::{Secret, random_bytes};

/// Where the process runs: decides a few defaults and which secrets are mandatory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// `avatar-local`, tests, a developer's machine.
    Local,
    /// Inside AWS Lambda (detected by `AWS_LAMBDA_FUNCTION_NAME`).
    Lambda,
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
    pub keys: KeyConfig,
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
}

/// Limits of the local server's connections. Lambdas sit behind API Gateway, which
/// enforces its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpServerConfig {
    /// Longest a client may take to send a request's headers (`HTTP_HEADER_TIMEOUT_MS`).
    pub header_timeout: Duration,
    /// Longest a keep-alive connection may sit between requests (`HTTP_IDLE_TIMEOUT_MS`).
    pub idle_timeout: Duration,
    /// Longest a client may take to send a request body (`HTTP_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog
    /// (`HTTP_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct TwitchConfig {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret<String>>,
    pub scopes: Vec<String>,
    pub redirect_uri: Url,
    pub auth_base_url: Url,
    pub api_base_url: Url,
}

#[derive(Debug, Clone)]
pub struct DonationAlertsConfig {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret<String>>,
    pub scopes: Vec<String>,
    pub redirect_uri: Url,
    pub base_url: Url,
}

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

    /// The URL to connect with, upgraded to `rediss://` when TLS is forced.
    pub fn connection_url(&self, force_tls: bool) -> String {
        let mut url = self.0.expose().clone();
        if force_tls && url.scheme() == "redis" {
            // Only fails for cannot-be-a-base URLs, which `parse` has already excluded.
            let _ = url.set_scheme("rediss");
        }
        url.to_string()
    }

    /// `host:port`, safe to log.
    pub fn host_port(&self) -> String {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    Wal,
    Delete,
    Truncate,
    Persist,
}

impl JournalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wal => "wal",
            Self::Delete => "delete",
            Self::Truncate => "truncate",
            Self::Persist => "persist",
        }
    }

    fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "wal" => Ok(Self::Wal),
            "delete" => Ok(Self::Delete),
            "truncate" => Ok(Self::Truncate),
            "persist" => Ok(Self::Persist),
            other => Err(format!(
                "must be one of wal, delete, truncate, persist (got {other:?})"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub journal_mode: JournalMode,
    /// Read-only connections in the read pool.
    pub read_connections: usize,
}

#[derive(Debug, Clone)]
pub struct PollingConfig {
    pub interval: Duration,
    pub concurrency: usize,
    pub lock_ttl: Duration,
    pub rate_limit_per_minute: u32,
}

/// An AES-256 key.
pub type Key32 = Secret<[u8; 32]>;

#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub token_encryption_key: Key32,
    pub token_encryption_old_keys: Vec<Key32>,
    pub session_secret: Key32,
    /// Set when the keys came from the generated local key file.
    pub generated_key_file: Option<PathBuf>,
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

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

/// Name of the key file generated beside the database when no keys are configured locally.
pub fn local_key_file_for(sqlite_path: &Path) -> PathBuf {
    let mut name = sqlite_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "data.sqlite".into());
    name.push(".keys");
    sqlite_path.with_file_name(name)
}

impl Config {
    /// Reads `.env` (when present; real environment variables win), the environment, and
    /// with `SECRETS_ARN` set the Secrets Manager secret (credentials and region from the
    /// usual AWS sources). What every process does once at start.
    pub async fn load() -> Result<Self, ConfigErrors> {
        Self::from_vars(&Self::load_vars().await?)
    }

    /// The variables [`Config::load`] reads, before parsing (`avatar-local` adjusts a few).
    pub async fn load_vars() -> Result<HashMap<String, String>, ConfigErrors> {
        let _ = dotenvy::dotenv();
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        if let Some(arn) = vars
            .get("SECRETS_ARN")
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
        {
            let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            crate::secrets::merge_into(&mut vars, &arn, &aws)
                .await
                .map_err(|e| ConfigErrors(vec![e]))?;
        }
        Ok(vars)
    }

    /// Builds the configuration from a map of variables; tests call this directly.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        let mut reader = Reader {
            vars,
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

struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    /// The value, or `None` when unset or blank.
    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
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

    /// An absolute http(s) URL without a trailing slash in its path.
    fn http_url(&mut self, name: &'static str, default: &str) -> Url {
        let raw = self.get(name).unwrap_or(default).to_owned();
        match parse_http_url(&raw) {
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

    fn key(&mut self, name: &'static str, raw: &str) -> Option<Key32> {
        match decode_key(raw) {
            Ok(key) => Some(key),
            Err(problem) => {
                self.fail(name, problem);
                None
            }
        }
    }

    fn read(&mut self) -> Option<Config> {
        let deployment = if self.get("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            Deployment::Lambda
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

        let twitch = TwitchConfig {
            client_id: self.string("TWITCH_CLIENT_ID"),
            client_secret: self.secret("TWITCH_CLIENT_SECRET"),
            scopes: self.scopes("TWITCH_SCOPES", "chat:read"),
            redirect_uri: self.http_url(
                "TWITCH_REDIRECT_URI",
                &format!("{base}/auth/twitch/callback"),
            ),
            auth_base_url: self.http_url("TWITCH_AUTH_BASE_URL", "https://id.twitch.tv/oauth2"),
            api_base_url: self.http_url("TWITCH_API_BASE_URL", "https://api.twitch.tv/helix"),
        };
        let donationalerts = DonationAlertsConfig {
            client_id: self.string("DA_CLIENT_ID"),
            client_secret: self.secret("DA_CLIENT_SECRET"),
            scopes: self.scopes("DA_SCOPES", "oauth-user-show oauth-donation-index"),
            redirect_uri: self.http_url(
                "DA_REDIRECT_URI",
                &format!("{base}/auth/donationalerts/callback"),
            ),
            base_url: self.http_url("DA_BASE_URL", "https://www.donationalerts.com"),
        };

        let redis = self.redis();
        let sqlite = self.sqlite(deployment);
        let polling = PollingConfig {
            interval: Duration::from_millis(self.number(
                "DA_POLL_INTERVAL_MS",
                5000,
                100,
                3_600_000,
            )),
            concurrency: self.number("DA_POLL_CONCURRENCY", 4, 1, 256) as usize,
            lock_ttl: Duration::from_millis(self.number("DA_POLL_LOCK_TTL_MS", 4500, 100, 600_000)),
            rate_limit_per_minute: self.number("DA_RATE_LIMIT_PER_MIN", 60, 1, 100_000) as u32,
        };
        let provider_timeout =
            Duration::from_millis(self.number("PROVIDER_TIMEOUT_MS", 10_000, 100, 60_000));
        let health_max_age =
            Duration::from_millis(self.number("HEALTH_MAX_AGE_MS", 1000, 0, 3_600_000));
        let http = self.http_server();
        let keys = self.keys(deployment, &sqlite.path);
        let oauth_state_ttl =
            Duration::from_millis(self.number("OAUTH_STATE_TTL_MS", 300_000, 1_000, 300_000));
        let log_filter = self.string("RUST_LOG").unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            self.fail("RUST_LOG", format!("not a valid tracing filter ({e})"));
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
            keys: keys?,
            oauth_state_ttl,
            secrets_arn: self.string("SECRETS_ARN"),
            internal_api_token: self.secret("INTERNAL_API_TOKEN"),
            provider_timeout,
            health_max_age,
            http,
            log_filter,
        })
    }

    fn http_server(&mut self) -> HttpServerConfig {
        let mut millis =
            |name, default| Duration::from_millis(self.number(name, default, 100, 3_600_000));
        HttpServerConfig {
            header_timeout: millis("HTTP_HEADER_TIMEOUT_MS", 10_000),
            idle_timeout: millis("HTTP_IDLE_TIMEOUT_MS", 60_000),
            body_timeout: millis("HTTP_BODY_TIMEOUT_MS", 30_000),
            max_connections: self.number("HTTP_MAX_CONNECTIONS", 4096, 1, 1_000_000) as usize,
        }
    }

    fn redis(&mut self) -> RedisConfig {
        let url = match self.get("REDIS_URL").map(RedisUrl::parse) {
            None => None,
            Some(Ok(url)) => Some(url),
            Some(Err(problem)) => {
                self.fail("REDIS_URL", problem);
                None
            }
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

    fn sqlite(&mut self, deployment: Deployment) -> SqliteConfig {
        let default_path = match deployment {
            Deployment::Local => "data.sqlite",
            Deployment::Lambda => "/mnt/data/data.sqlite",
        };
        let path = PathBuf::from(self.get("SQLITE_PATH").unwrap_or(default_path));
        let journal_mode = match self.get("SQLITE_JOURNAL_MODE").map(JournalMode::parse) {
            None => JournalMode::Wal,
            Some(Ok(mode)) => mode,
            Some(Err(problem)) => {
                self.fail("SQLITE_JOURNAL_MODE", problem);
                JournalMode::Wal
            }
        };
        let read_connections = self.number("DB_CONCURRENCY", 4, 1, 64) as usize;
        SqliteConfig {
            path,
            journal_mode,
            read_connections,
        }
    }

    fn keys(&mut self, deployment: Deployment, sqlite_path: &Path) -> Option<KeyConfig> {
        let token_raw = self.string("TOKEN_ENCRYPTION_KEY");
        let session_raw = self.string("SESSION_SECRET");
        let mut old = Vec::new();
        if let Some(raw) = self.string("TOKEN_ENCRYPTION_OLD_KEYS") {
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if let Some(key) = self.key("TOKEN_ENCRYPTION_OLD_KEYS", part) {
                    old.push(key);
                }
            }
        }
        let token = token_raw
            .as_deref()
            .map(|raw| self.key("TOKEN_ENCRYPTION_KEY", raw));
        let session = session_raw
            .as_deref()
            .map(|raw| self.key("SESSION_SECRET", raw));
        if let (Some(token), Some(session)) = (&token, &session) {
            return Some(KeyConfig {
                token_encryption_key: token.clone()?,
                token_encryption_old_keys: old,
                session_secret: session.clone()?,
                generated_key_file: None,
            });
        }
        if deployment == Deployment::Lambda {
            for (name, value) in [
                ("TOKEN_ENCRYPTION_KEY", &token),
                ("SESSION_SECRET", &session),
            ] {
                if value.is_none() {
                    self.fail(name, "is required in AWS (a base64-encoded 32-byte key)");
                }
            }
            return None;
        }
        if !self.errors.is_empty() {
            // Don't create files for a configuration that is going to be refused.
            return None;
        }
        let file = local_key_file_for(sqlite_path);
        match LocalKeyFile::load_or_create(&file) {
            Ok(generated) => Some(KeyConfig {
                token_encryption_key: token.flatten().unwrap_or(generated.token_encryption_key),
                token_encryption_old_keys: old,
                session_secret: session.flatten().unwrap_or(generated.session_secret),
                generated_key_file: Some(file),
            }),
            Err(problem) => {
                self.fail("TOKEN_ENCRYPTION_KEY", format!("unset, and {problem}"));
                None
            }
        }
    }
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

/// Decodes a base64 (standard or URL-safe, padded or not) 32-byte key.
pub fn decode_key(raw: &str) -> Result<Key32, String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let raw = raw.trim();
    let bytes = [BASE64, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(raw).ok())
        .ok_or_else(|| "is not valid base64".to_string())?;
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "must decode to exactly 32 bytes (got {}); generate one with: openssl rand -base64 32",
            bytes.len()
        )
    })?;
    Ok(Secret::new(key))
}

/// The key file `avatar-local` writes beside the database the first time it runs without keys,
/// so encrypted tokens and sessions survive restarts. Mode 0600.
struct LocalKeyFile {
    token_encryption_key: Key32,
    session_secret: Key32,
}

impl LocalKeyFile {
    fn load_or_create(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|problem| {
                format!("the key file {} is damaged: {problem}", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(format!(
                "the key file {} cannot be read: {e}",
                path.display()
            )),
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut token = None;
        let mut session = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("TOKEN_ENCRYPTION_KEY", v)) => token = Some(decode_key(v)?),
                Some(("SESSION_SECRET", v)) => session = Some(decode_key(v)?),
                _ => {}
            }
        }
        Ok(Self {
            token_encryption_key: token.ok_or("TOKEN_ENCRYPTION_KEY is missing")?,
            session_secret: session.ok_or("SESSION_SECRET is missing")?,
        })
    }

    fn create(path: &Path) -> Result<Self, String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let token = random_bytes(32);
        let session = random_bytes(32);
        let text = format!(
            "# Generated by avatar-local: keep it private and keep it with the database.\n\
             TOKEN_ENCRYPTION_KEY={}\nSESSION_SECRET={}\n",
            BASE64.encode(&token),
            BASE64.encode(&session)
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("the directory {} cannot be created: {e}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("the key file {} cannot be created: {e}", path.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| format!("the key file {} cannot be written: {e}", path.display()))?;
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with_keys(pairs: &[(&str, &str)]) -> HashMap<String, String> {
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
            vec!["oauth-user-show", "oauth-donation-index"]
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
            ("HTTP_HEADER_TIMEOUT_MS", "10s"),
            ("HTTP_IDLE_TIMEOUT_MS", "0"),
            ("HTTP_BODY_TIMEOUT_MS", "-5"),
            ("HTTP_MAX_CONNECTIONS", "0"),
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
    fn lambda_requires_keys_and_defaults_to_the_efs_path() {
        let errors =
            Config::from_vars(&vars(&[("AWS_LAMBDA_FUNCTION_NAME", "health")])).unwrap_err();
        assert!(errors.names("TOKEN_ENCRYPTION_KEY"));
        assert!(errors.names("SESSION_SECRET"));
        let config =
            Config::from_vars(&with_keys(&[("AWS_LAMBDA_FUNCTION_NAME", "health")])).unwrap();
        assert_eq!(config.sqlite.path, PathBuf::from("/mnt/data/data.sqlite"));
    }

    #[test]
    fn local_keys_are_generated_once_with_mode_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.sqlite");
        let map = vars(&[("SQLITE_PATH", db.to_str().unwrap())]);
        let first = Config::from_vars(&map).unwrap();
        let file = first.keys.generated_key_file.clone().unwrap();
        assert_eq!(file, dir.path().join("data.sqlite.keys"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = Config::from_vars(&map).unwrap();
        assert_eq!(
            first.keys.token_encryption_key.expose(),
            second.keys.token_encryption_key.expose()
        );
        assert_ne!(
            first.keys.token_encryption_key.expose(),
            first.keys.session_secret.expose()
        );
    }

    #[test]
    fn an_invalid_configuration_creates_no_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.sqlite");
        let map = vars(&[("SQLITE_PATH", db.to_str().unwrap()), ("PORT", "x")]);
        assert!(Config::from_vars(&map).is_err());
        assert!(!local_key_file_for(&db).exists());
    }
}
