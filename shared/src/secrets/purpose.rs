//! What each secret of the stack holds, and which of them each function is given.
//!
//! template.yaml keeps the secret settings in one Secrets Manager secret per purpose and
//! gives each function, in its `SECRETS_ARN` and in its role's policy, only the secrets its
//! handlers use: a function that never opens a stored token cannot read the key that opens
//! them. A test compares the template with [`needed_by`].

use crate::bundle::Function;

/// One secret of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretPurpose {
    /// Signs session cookies, OAuth state cookies and CSRF tokens.
    SessionKey,
    /// Seals and opens the stored tokens.
    TokenKeys,
    /// Twitch's code exchange, token refresh and app token.
    TwitchClient,
    /// DonationAlerts' code exchange and token refresh.
    DonationAlertsClient,
    /// Redis AUTH: the token of the stack's ElastiCache, or a whole URL the operator gave.
    Redis,
}

impl SecretPurpose {
    pub const ALL: &'static [SecretPurpose] = &[
        Self::SessionKey,
        Self::TokenKeys,
        Self::TwitchClient,
        Self::DonationAlertsClient,
        Self::Redis,
    ];

    /// The variables a secret of this purpose may hold.
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Self::SessionKey => &["SESSION_SECRET"],
            Self::TokenKeys => &["TOKEN_ENCRYPTION_KEY", "TOKEN_ENCRYPTION_OLD_KEYS"],
            Self::TwitchClient => &["TWITCH_CLIENT_SECRET"],
            Self::DonationAlertsClient => &["DA_CLIENT_SECRET"],
            Self::Redis => &["REDIS_AUTH_TOKEN", "REDIS_URL", "REDIS_LOCK_URLS"],
        }
    }
}

/// The secrets the realtime bridge uses: what `da-poll` uses (it opens and refreshes the
/// DonationAlerts tokens, and asks Helix who is live), for the same reasons.
pub const NEEDED_BY_REALTIME_BRIDGE: &[SecretPurpose] = &[
    SecretPurpose::TokenKeys,
    SecretPurpose::TwitchClient,
    SecretPurpose::DonationAlertsClient,
    SecretPurpose::Redis,
];

/// The secrets `function`'s handlers use. Every function reaches Redis (locks, one-time
/// states, the rate limiter, heartbeats). The client IDs are no secret: the functions get
/// them in their environment, which is all an authorize URL or a revocation needs.
pub fn needed_by(function: Function) -> &'static [SecretPurpose] {
    use SecretPurpose::{DonationAlertsClient, Redis, SessionKey, TokenKeys, TwitchClient};
    match function {
        // Redis and SQLite status only.
        Function::Health => &[Redis],
        // Signs the state cookie, and reads the session before a DonationAlerts connection.
        Function::AuthStart => &[SessionKey, Redis],
        // Checks the state cookie, exchanges the code, seals the tokens, starts a session.
        Function::AuthCallback => &[
            SessionKey,
            TokenKeys,
            TwitchClient,
            DonationAlertsClient,
            Redis,
        ],
        // Sessions and CSRF; opens the stored tokens to revoke them at a disconnect.
        Function::Pages => &[SessionKey, TokenKeys, Redis],
        // Opens, refreshes and seals the streamer's Twitch tokens.
        Function::ChatToken => &[TokenKeys, TwitchClient, Redis],
        // Opens and refreshes DonationAlerts tokens; asks Helix who is live with Twitch's
        // app token.
        Function::DaPoll => &[TokenKeys, TwitchClient, DonationAlertsClient, Redis],
        // Opens, validates and refreshes Twitch tokens.
        Function::TokenValidate => &[TokenKeys, TwitchClient, Redis],
    }
}
