//! The application state every function and the local server build once per process
//! (once per Lambda cold start): configuration, coordination, store, instance identity.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Config, ConfigErrors};
use crate::coordination::memory::InProcessCoordinator;
use crate::coordination::redis::RedisCoordinator;
use crate::coordination::{CoordinationError, Coordinator};
use crate::crypto::{Signer, TokenCipher};
use crate::oauth::twitch::TwitchClient;
use crate::secret::random_hex;
use crate::store::{Store, StoreError};

/// How often a long-running process (avatar-local) announces itself.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("coordination could not be set up: {0}")]
    Coordination(#[from] CoordinationError),
    #[error("the store could not be opened: {0}")]
    Store(#[from] StoreError),
    #[error("could not listen on {0}: {1}")]
    Listen(String, #[source] std::io::Error),
}

/// Shared by every request. A clone is one reference count: the router clones the state
/// for every request, and counting each part separately showed up in profiles.
#[derive(Clone)]
pub struct App(Arc<AppState>);

impl std::ops::Deref for App {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

pub struct AppState {
    pub config: Arc<Config>,
    pub coordinator: Coordinator,
    pub store: Store,
    /// Identifies this process in heartbeats (`avatar:instances`).
    pub instance_id: Arc<str>,
    pub redis_checks: Arc<RedisCheckLog>,
    /// Seals tokens at rest.
    pub cipher: Arc<TokenCipher>,
    /// Signs cookies and CSRF tokens.
    pub signer: Arc<Signer>,
    /// `None` until TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET are set.
    pub twitch: Option<Arc<TwitchClient>>,
}

/// The last Redis health check, for `/health`.
#[derive(Debug, Default)]
pub struct RedisCheckLog {
    last: Mutex<Option<RedisCheck>>,
}

#[derive(Debug, Clone)]
pub struct RedisCheck {
    pub success: bool,
    pub at: time::OffsetDateTime,
    pub latency: Option<Duration>,
    pub error: Option<String>,
}

impl RedisCheckLog {
    pub fn record(&self, check: RedisCheck) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(check);
    }

    pub fn last(&self) -> Option<RedisCheck> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl App {
    /// Reads the configuration from the environment, starts logging and builds the app:
    /// what every `main` does first.
    pub async fn from_env() -> Result<Self, StartupError> {
        let config = Config::load().await?;
        crate::telemetry::init(&config);
        Self::build(config).await
    }

    pub async fn build(config: Config) -> Result<Self, StartupError> {
        if let Some(file) = &config.keys.generated_key_file {
            tracing::warn!(
                key_file = %file.display(),
                "TOKEN_ENCRYPTION_KEY/SESSION_SECRET unset: using local keys generated into this \
                 file; set both variables in production"
            );
        }
        let coordinator = match &config.redis.url {
            Some(url) => {
                tracing::info!(
                    redis = %url.host_port(),
                    lock_servers = config.redis.lock_urls.len(),
                    required = config.redis.required,
                    "distributed mode: coordinating through Redis"
                );
                Coordinator::Redis(RedisCoordinator::new(
                    url,
                    &config.redis.lock_urls,
                    config.redis.force_tls,
                )?)
            }
            None => {
                tracing::info!(
                    "single-instance mode: REDIS_URL is unset, so locks, state, rate limit and \
                     events stay in this process; do not run a second instance"
                );
                Coordinator::InProcess(InProcessCoordinator::new())
            }
        };
        let store = Store::open(&config.sqlite, &coordinator).await?;
        tracing::info!(
            path = %config.sqlite.path.display(),
            journal_mode = store.journal_mode().as_str(),
            "store ready"
        );
        let http = crate::oauth::http_client(config.provider_timeout);
        let twitch = TwitchClient::new(&config.twitch, http).map(Arc::new);
        if twitch.is_none() {
            tracing::warn!("TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET unset: Twitch login is off");
        }
        Ok(Self(Arc::new(AppState {
            cipher: Arc::new(TokenCipher::new(&config.keys)),
            signer: Arc::new(Signer::new(&config.keys)),
            twitch,
            config: Arc::new(config),
            coordinator,
            store,
            instance_id: random_hex(8).into(),
            redis_checks: Arc::default(),
        })))
    }

    /// Pings Redis and records the result for `/health`; `None` in single-instance mode.
    pub async fn check_redis(&self) -> Option<RedisCheck> {
        if !matches!(self.coordinator, Coordinator::Redis(_)) {
            return None;
        }
        let at = time::OffsetDateTime::now_utc();
        let check = match self.coordinator.ping().await {
            Ok(latency) => RedisCheck {
                success: true,
                at,
                latency: Some(latency),
                error: None,
            },
            Err(e) => RedisCheck {
                success: false,
                at,
                latency: None,
                error: Some(e.to_string()),
            },
        };
        if !check.success && self.config.redis.required {
            tracing::error!(
                error = check.error.as_deref().unwrap_or(""),
                "Redis is down and REDIS_REQUIRED=true: refusing work that needs it (503)"
            );
        }
        self.redis_checks.record(check.clone());
        Some(check)
    }

    /// Heartbeats until `shutdown` resolves (long-running processes only; a Lambda
    /// heartbeats from its handlers instead).
    pub async fn heartbeat_until(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.coordinator.heartbeat(&self.instance_id).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        }
    }
}
