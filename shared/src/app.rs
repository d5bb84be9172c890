//! The application state every function and the local server build once per process
//! (once per Lambda cold start): configuration, coordination, store, instance identity.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigErrors, Deployment};
use crate::coordination::memory::InProcessCoordinator;
use crate::coordination::redis::RedisCoordinator;
use crate::coordination::{CoordinationError, Coordinator};
use crate::crypto::{Signer, TokenCipher};
use crate::metrics::{Metrics, PollStats, RealtimeStats, WriterBatches};
use crate::poll::{PollParts, Poller, PollerNotConfigured};
use crate::providers::centrifugo::CentrifugoClient;
use crate::providers::donationalerts::DonationAlertsClient;
use crate::providers::twitch::TwitchClient;
use crate::realtime::grants::GrantQueue;
use crate::realtime::{Bridge, BridgeParts};
use crate::secret::random_hex;
use crate::secrets::SecretPurpose;
use crate::store::{Store, StoreError};
use crate::telemetry::error_chain;
use crate::tokens::validation::{TokenValidator, ValidatorNotConfigured};
use crate::tokens::{KeeperParts, TokenKeeper};

/// How often a long-running process (avatar-local) announces itself.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("coordination could not be set up")]
    Coordination(#[from] CoordinationError),
    #[error("the store could not be opened")]
    Store(#[from] StoreError),
    #[error("could not listen on {0}")]
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
    /// Seals tokens at rest.
    pub cipher: Arc<TokenCipher>,
    /// Signs cookies and CSRF tokens.
    pub signer: Arc<Signer>,
    /// `None` until TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET are set.
    pub twitch: Option<Arc<TwitchClient>>,
    /// `None` until DA_CLIENT_ID and DA_CLIENT_SECRET are set.
    pub donationalerts: Option<Arc<DonationAlertsClient>>,
    /// What this process's poller has done (zeros where none runs), for `/health`.
    pub poll_stats: Arc<PollStats>,
    /// What this process's realtime bridge has done (zeros where none runs).
    pub realtime_stats: Arc<RealtimeStats>,
    /// Every figure, for `/metrics` and the functions' EMF lines.
    pub metrics: Arc<Metrics>,
    /// Stored tokens: open, refresh, end (see `tokens`).
    pub tokens: TokenKeeper,
}

impl App {
    /// Reads the configuration from the environment, starts logging and builds the app:
    /// what every `main` does first.
    pub async fn from_env() -> Result<Self, StartupError> {
        Self::from_env_given(SecretPurpose::ALL).await
    }

    /// [`App::from_env`] for the realtime bridge, given only its secrets
    /// ([`crate::secrets::NEEDED_BY_REALTIME_BRIDGE`]).
    pub async fn realtime_from_env() -> Result<Self, StartupError> {
        Self::from_env_given(crate::secrets::NEEDED_BY_REALTIME_BRIDGE).await
    }

    /// [`App::from_env`] for a process given only the secrets of `given` (a Lambda function:
    /// [`crate::secrets::needed_by`]).
    pub(crate) async fn from_env_given(
        given: &'static [SecretPurpose],
    ) -> Result<Self, StartupError> {
        let config = Config::load_given(given).await?;
        crate::telemetry::init(&config.log_filter, config.deployment.log_format());
        Self::build(config).await
    }

    /// Builds the app from a parsed configuration. Reading the keys comes first: for a local
    /// run without keys that creates the key file beside the database.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let keys = config.keys.load()?;
        if let Some(file) = &keys.generated_key_file {
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
        let writer_batches = WriterBatches::default();
        let store = Store::open_reporting(
            &config.sqlite,
            &coordinator,
            Some(Arc::new(writer_batches.clone())),
        )
        .await?;
        tracing::info!(
            path = %config.sqlite.path.display(),
            journal_mode = store.journal_mode().as_str(),
            "store ready"
        );
        let http = crate::providers::ProviderHttp::new(config.provider_timeout);
        let twitch = TwitchClient::new(&config.twitch, http.clone()).map(Arc::new);
        let donationalerts = DonationAlertsClient::new(&config.donationalerts, http).map(Arc::new);
        if twitch.is_none() {
            tracing::warn!("TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET unset: Twitch login is off");
        }
        let poll_stats = Arc::<PollStats>::default();
        let realtime_stats = Arc::<RealtimeStats>::default();
        let metrics = Arc::new(Metrics::new(
            poll_stats.clone(),
            realtime_stats.clone(),
            &writer_batches,
        ));
        let cipher = Arc::new(TokenCipher::new(&keys));
        let tokens = TokenKeeper::new(KeeperParts {
            store: store.clone(),
            locks: coordinator.locks(),
            bus: coordinator.bus(),
            cipher: cipher.clone(),
            twitch: twitch.clone(),
            donationalerts: donationalerts.clone(),
            config: config.tokens.clone(),
            provider_timeout: config.provider_timeout,
            metrics: metrics.clone(),
        });
        Ok(Self(Arc::new(AppState {
            tokens,
            cipher,
            signer: Arc::new(Signer::new(&keys)),
            twitch,
            donationalerts,
            poll_stats,
            realtime_stats,
            metrics,
            config: Arc::new(config),
            coordinator,
            store,
            instance_id: random_hex(8).into(),
        })))
    }

    /// The DonationAlerts poller over this process's store, coordinator, tokens and clients
    /// (`None` without DA_CLIENT_ID and DA_CLIENT_SECRET: nothing to poll with).
    pub fn poller(&self) -> Option<Poller> {
        self.poll_parts().map(Poller::new)
    }

    /// What a poller (or one poll, [`crate::poll::streamer::PollContext`]) works with.
    pub fn poll_parts(&self) -> Option<PollParts> {
        Some(PollParts {
            store: self.store.clone(),
            locks: self.coordinator.locks(),
            budget: self.coordinator.budget(),
            bus: self.coordinator.bus(),
            presence: self.coordinator.presence(),
            subscriptions: self.coordinator.subscriptions(),
            tokens: self.tokens.clone(),
            client: self.donationalerts.clone()?,
            twitch: self.twitch.clone(),
            polling: self.config.polling.clone(),
            provider_timeout: self.config.provider_timeout,
            instance_id: self.instance_id.clone(),
            stats: self.poll_stats.clone(),
        })
    }

    /// The realtime bridge (`None` without DA_CLIENT_ID and DA_CLIENT_SECRET). Its grant
    /// queue starts here, so this runs inside the Tokio runtime.
    pub fn realtime_bridge(&self) -> Option<Bridge> {
        let client = self.donationalerts.clone()?;
        let grants = GrantQueue::start(
            self.coordinator.budget(),
            self.config.polling.rate_limit_per_minute,
        );
        let centrifugo = CentrifugoClient::new(
            self.config.donationalerts.centrifugo_url.clone(),
            self.config.provider_timeout,
        );
        Some(Bridge::new(BridgeParts::new(
            self.store.clone(),
            self.coordinator.locks(),
            self.coordinator.bus(),
            self.coordinator.presence(),
            self.coordinator.subscriptions(),
            self.tokens.clone(),
            client,
            centrifugo,
            self.twitch.clone(),
            grants,
            self.config.realtime.clone(),
            self.instance_id.clone(),
            self.realtime_stats.clone(),
            (self.config.deployment == Deployment::Aws).then(|| self.config.stack_name.clone()),
        )))
    }

    /// The validation of every stored Twitch token (`None` without Twitch credentials).
    pub fn token_validator(&self) -> Option<TokenValidator> {
        TokenValidator::new(&self.tokens)
    }

    /// Heartbeats until `shutdown` resolves (long-running processes only; in AWS, an
    /// instance is counted when its `/health` probe heartbeats).
    pub async fn heartbeat_until(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.coordinator.presence().heartbeat(&self.instance_id).await {
                        tracing::warn!(error = %error_chain(&e), "heartbeat failed");
                    }
                }
            }
        }
    }
}

/// The `da-poll` function's job (built once per cold start).
pub fn da_poll_job(app: &App) -> Result<Poller, PollerNotConfigured> {
    app.poller().ok_or(PollerNotConfigured)
}

/// The `token-validate` function's job (built once per cold start).
pub fn token_validate_job(app: &App) -> Result<TokenValidator, ValidatorNotConfigured> {
    app.token_validator().ok_or(ValidatorNotConfigured)
}

/// Ctrl-C (SIGINT) or SIGTERM. The handlers are installed here, at once, not when the future
/// is first polled: a signal that arrives as soon as the server answers must already stop it
/// cleanly rather than kill it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) else {
            tracing::warn!("no signal handler could be installed: stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    }
}
