//! Twitch and DonationAlerts: the OAuth clients and the DonationAlerts poller.

use std::time::Duration;

use url::Url;

use super::Reader;
use crate::secret::Secret;
use crate::secrets::SecretPurpose;

#[derive(Debug, Clone)]
pub struct TwitchConfig {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret<String>>,
    /// Whether this process is given `TWITCH_CLIENT_SECRET`: every process but a function
    /// whose handlers never use it ([`crate::secrets::needed_by`]). Such a function builds
    /// its client from the client ID alone, which is all an authorize URL or a revocation
    /// needs; elsewhere the client exists only with both.
    pub client_secret_given: bool,
    pub scopes: Vec<String>,
    pub redirect_uri: Url,
    pub auth_base_url: Url,
    pub api_base_url: Url,
}

#[derive(Debug, Clone)]
pub struct DonationAlertsConfig {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret<String>>,
    /// Like [`TwitchConfig::client_secret_given`], for `DA_CLIENT_SECRET`.
    pub client_secret_given: bool,
    pub scopes: Vec<String>,
    pub redirect_uri: Url,
    pub base_url: Url,
    /// The realtime socket's address (`DA_CENTRIFUGO_URL`, `ws://` or `wss://`).
    pub centrifugo_url: Url,
}

/// The scope that lets a streamer's donations be pushed to the realtime bridge; a grant
/// without it stays on polling.
pub const DONATION_SUBSCRIBE_SCOPE: &str = "oauth-donation-subscribe";

/// The stored tokens' lifecycle: refresh before expiry, hourly validation of Twitch tokens.
#[derive(Debug, Clone)]
pub struct TokenLifecycleConfig {
    /// Tokens expiring sooner than this are refreshed before use (`TOKEN_REFRESH_MARGIN_MS`).
    pub refresh_margin: Duration,
    /// Requests per second to Twitch's `/validate` (`TWITCH_VALIDATE_RATE_PER_SEC`).
    pub validate_rate_per_sec: u32,
    /// Validations in flight at once (`TWITCH_VALIDATE_CONCURRENCY`).
    pub validate_concurrency: usize,
    /// A token last validated this long ago is due (`TWITCH_VALIDATE_DUE_AFTER_MS`). Runs
    /// come every 10 minutes, so 50 minutes keeps every token validated within the hour.
    pub validate_due_after: Duration,
}

#[derive(Debug, Clone)]
pub struct PollingConfig {
    pub interval: Duration,
    pub concurrency: usize,
    pub lock_ttl: Duration,
    pub rate_limit_per_minute: u32,
    /// How often a streamer with a live realtime subscription is polled anyway, to find what
    /// a dropped socket missed (`DA_RECONCILE_INTERVAL_MS`).
    pub reconcile_interval: Duration,
}

/// The realtime bridge (SPEC section 9).
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// Streamers are hashed into this many shards, each held by one bridge process
    /// (`REALTIME_SHARDS`).
    pub shards: u32,
    /// The shard lease's TTL (`REALTIME_SHARD_TTL_MS`): how long a dead bridge's shards
    /// stay unserved.
    pub shard_ttl: Duration,
}

impl Reader<'_> {
    /// `base` is the public base URL without a trailing slash; the redirect URI hangs off it.
    pub(super) fn twitch(&mut self, base: &str) -> TwitchConfig {
        TwitchConfig {
            client_id: self.string("TWITCH_CLIENT_ID"),
            client_secret: self.secret("TWITCH_CLIENT_SECRET"),
            client_secret_given: self.is_given(SecretPurpose::TwitchClient),
            scopes: self.scopes("TWITCH_SCOPES", "chat:read"),
            redirect_uri: self.http_url(
                "TWITCH_REDIRECT_URI",
                &format!("{base}/auth/twitch/callback"),
            ),
            auth_base_url: self.http_url("TWITCH_AUTH_BASE_URL", "https://id.twitch.tv/oauth2"),
            api_base_url: self.http_url("TWITCH_API_BASE_URL", "https://api.twitch.tv/helix"),
        }
    }

    /// `base` is the public base URL without a trailing slash; the redirect URI hangs off it.
    pub(super) fn donationalerts(&mut self, base: &str) -> DonationAlertsConfig {
        DonationAlertsConfig {
            client_id: self.string("DA_CLIENT_ID"),
            client_secret: self.secret("DA_CLIENT_SECRET"),
            client_secret_given: self.is_given(SecretPurpose::DonationAlertsClient),
            scopes: self.scopes(
                "DA_SCOPES",
                "oauth-user-show oauth-donation-index oauth-donation-subscribe",
            ),
            redirect_uri: self.http_url(
                "DA_REDIRECT_URI",
                &format!("{base}/auth/donationalerts/callback"),
            ),
            base_url: self.http_url("DA_BASE_URL", "https://www.donationalerts.com"),
            centrifugo_url: self.websocket_url(
                "DA_CENTRIFUGO_URL",
                "wss://centrifugo.donationalerts.com/connection/websocket",
            ),
        }
    }

    pub(super) fn token_lifecycle(&mut self) -> TokenLifecycleConfig {
        TokenLifecycleConfig {
            refresh_margin: self.millis("TOKEN_REFRESH_MARGIN_MS", 300_000, 0, 86_400_000),
            validate_rate_per_sec: self.number("TWITCH_VALIDATE_RATE_PER_SEC", 50, 1, 10_000)
                as u32,
            validate_concurrency: self.number("TWITCH_VALIDATE_CONCURRENCY", 8, 1, 256) as usize,
            validate_due_after: self.millis(
                "TWITCH_VALIDATE_DUE_AFTER_MS",
                3_000_000,
                1_000,
                3_600_000,
            ),
        }
    }

    pub(super) fn polling(&mut self) -> PollingConfig {
        PollingConfig {
            interval: self.millis("DA_POLL_INTERVAL_MS", 5000, 100, 3_600_000),
            concurrency: self.number("DA_POLL_CONCURRENCY", 4, 1, 256) as usize,
            lock_ttl: self.millis("DA_POLL_LOCK_TTL_MS", 4500, 100, 600_000),
            rate_limit_per_minute: self.number("DA_RATE_LIMIT_PER_MIN", 60, 1, 100_000) as u32,
            reconcile_interval: self.millis("DA_RECONCILE_INTERVAL_MS", 600_000, 1_000, 86_400_000),
        }
    }

    pub(super) fn realtime(&mut self) -> RealtimeConfig {
        RealtimeConfig {
            shards: self.number("REALTIME_SHARDS", 16, 1, 4096) as u32,
            shard_ttl: self.millis("REALTIME_SHARD_TTL_MS", 15_000, 1_000, 600_000),
        }
    }
}
