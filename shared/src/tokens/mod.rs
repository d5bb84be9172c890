//! Stored provider tokens, for both providers: load and open them, refresh them before they
//! expire or after a provider refused them, re-seal and store the new pair, and end a
//! connection (`need_reauth`, tokens deleted, `token.revoked` published) when the provider
//! will not refresh it any more. [`validation`] is the hourly check of every Twitch token;
//! [`chat_token`] hands a fresh Twitch token to the chat bots and [`chat_token_refused`]
//! replaces one that Twitch refused them; [`revoke_at_provider`] ends both tokens at the
//! provider on disconnect.
//!
//! A refresh runs under the lock `locks:tokens:{provider}:{twitchUserId}` (node-redlock
//! format), and only if the stored tokens are still the ones the caller saw: when several
//! instances find the same expired token at once, one refreshes and the others take its
//! result. Providers rotate refresh tokens, so two refreshes racing would leave one of them
//! holding a dead token; the rotated refresh token is always stored.

pub mod validation;

use std::sync::Arc;
use std::time::Duration;

use crate::config::TokenLifecycleConfig;
use crate::coordination::{CoordinationError, EventBus, Lock, Locks};
use crate::crypto::{CryptoError, TokenCipher};
use crate::domain::event::{BusEvent, TokenRevokedPayload};
use crate::domain::{Provider, TokenStatus, TwitchUserId, now_ms, rfc3339_utc};
use crate::metrics::Metrics;
use crate::providers::donationalerts::DonationAlertsClient;
use crate::providers::twitch::TwitchClient;
use crate::providers::{ProviderError, TokenSet};
use crate::secret::Secret;
use crate::store::accounts::{StoredTokens, TokenKind, seal_token};
use crate::store::tokens::RefreshedTokens;
use crate::store::{Store, StoreError};
use crate::telemetry::error_chain;

/// What the token functions work with, built once per process (by `App`): the store, the
/// refresh locks, the bus (`token.revoked`), the cipher, the provider clients
/// and the token settings. A clone is one reference count.
#[derive(Clone)]
pub struct TokenKeeper(Arc<KeeperParts>);

pub struct KeeperParts {
    pub store: Store,
    /// The refresh locks.
    pub locks: Locks,
    /// Where `token.revoked` goes.
    pub bus: EventBus,
    pub cipher: Arc<TokenCipher>,
    /// `None` until TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET are set.
    pub twitch: Option<Arc<TwitchClient>>,
    /// `None` until DA_CLIENT_ID and DA_CLIENT_SECRET are set.
    pub donationalerts: Option<Arc<DonationAlertsClient>>,
    pub config: TokenLifecycleConfig,
    /// Longest a call to a provider may take (`PROVIDER_TIMEOUT_MS`): refresh locks are held
    /// for a little over two.
    pub provider_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

impl TokenKeeper {
    pub fn new(parts: KeeperParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for TokenKeeper {
    type Target = KeeperParts;

    fn deref(&self) -> &KeeperParts {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no such user")]
    UnknownUser,
    #[error("no {0} tokens are stored for this user")]
    NotFound(&'static str),
    #[error("the {0} connection must be renewed by the streamer")]
    NeedsReauth(&'static str),
    #[error("{0} is not configured")]
    NotConfigured(&'static str),
    #[error("another instance is refreshing these tokens and did not finish in time")]
    RefreshBusy,
    #[error("the tokens could not be read or stored")]
    Store(#[from] StoreError),
    #[error("a stored token does not open")]
    Crypto(#[from] CryptoError),
    #[error("the refresh lock could not be taken")]
    Lock(#[from] CoordinationError),
    #[error("the provider failed")]
    Provider(#[from] ProviderError),
}

/// Opened tokens, ready to use. The access token is a [`Secret`].
#[derive(Debug, Clone)]
pub struct UsableTokens {
    pub access_token: Secret<String>,
    pub scopes: Vec<String>,
    /// Unix ms; `None` when the provider gave no lifetime.
    pub expires_at: Option<i64>,
    /// The sealed access token these came from: a later refresh checks that the stored
    /// tokens are still these before replacing them.
    sealed_access: Vec<u8>,
}

impl UsableTokens {
    /// Tokens that were never stored, for unit tests of code that only carries them.
    #[cfg(test)]
    pub(crate) fn for_tests(access: &str) -> Self {
        Self {
            access_token: Secret::new(access.to_owned()),
            scopes: Vec::new(),
            expires_at: None,
            sealed_access: Vec::new(),
        }
    }

    /// Valid for at least `margin` more (tokens without a lifetime always are).
    pub fn valid_for(&self, margin: Duration) -> bool {
        self.expires_at
            .is_none_or(|at| at > now_ms() + margin.as_millis() as i64)
    }
}

/// The lock a refresh of these tokens runs under.
pub(crate) fn refresh_lock(provider: Provider, user: &TwitchUserId) -> String {
    format!("locks:tokens:{}:{}", provider.as_str(), user.as_str())
}

/// The stored (still sealed) tokens of `user` for `provider`.
async fn stored(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
) -> Result<StoredTokens, TokenError> {
    keeper
        .store
        .provider_tokens(user, provider)
        .await?
        .ok_or(TokenError::NotFound(provider.as_str()))
}

/// The stored tokens of `user` for `provider`, opened; refused unless `active`.
pub async fn load(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
) -> Result<UsableTokens, TokenError> {
    let stored = stored(keeper, user, provider).await?;
    open_active(keeper, provider, &stored)
}

/// Tokens valid for at least `margin` more: refreshed first when they expire sooner.
pub async fn fresh(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    margin: Duration,
) -> Result<UsableTokens, TokenError> {
    let tokens = load(keeper, user, provider).await?;
    refreshed_if_expiring(keeper, user, provider, tokens, margin).await
}

/// `tokens` if they are valid for at least `margin` more, else their refresh.
async fn refreshed_if_expiring(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    tokens: UsableTokens,
    margin: Duration,
) -> Result<UsableTokens, TokenError> {
    if tokens.valid_for(margin) {
        return Ok(tokens);
    }
    refresh(keeper, user, provider, &tokens).await
}

/// The expiry `/validate` reports for a token it was asked about at `asked_at` (Unix ms):
/// `expires_in` seconds from then; `None` for `0`, Twitch's "does not expire" (legacy tokens).
pub(crate) fn expiry_from_validation(asked_at: i64, expires_in: u64) -> Option<i64> {
    let lifetime_ms = i64::try_from(expires_in.saturating_mul(1000)).unwrap_or(i64::MAX);
    (expires_in > 0).then(|| asked_at.saturating_add(lifetime_ms))
}

/// A chat bot's token is valid for at least this long when handed out.
pub const CHAT_TOKEN_MIN_VALIDITY: Duration = Duration::from_secs(5 * 60);

/// What a chat bot gets to read (and write) chat as the streamer.
#[derive(Debug, Clone)]
pub struct ChatToken {
    pub access_token: Secret<String>,
    /// Unix ms; `None` for a token without a lifetime.
    pub expires_at: Option<i64>,
    pub scopes: Vec<String>,
    pub login: String,
}

impl ChatToken {
    fn new(tokens: UsableTokens, login: String) -> Self {
        Self {
            access_token: tokens.access_token,
            expires_at: tokens.expires_at,
            scopes: tokens.scopes,
            login,
        }
    }
}

/// How long a chat token must still be valid when handed out.
fn chat_token_margin(keeper: &TokenKeeper) -> Duration {
    CHAT_TOKEN_MIN_VALIDITY.max(keeper.config.refresh_margin)
}

/// The streamer's login; `UnknownUser` for a user who never logged in.
async fn chat_login(keeper: &TokenKeeper, user: &TwitchUserId) -> Result<String, TokenError> {
    keeper
        .store
        .user_login(user)
        .await?
        .ok_or(TokenError::UnknownUser)
}

/// For a bot, tokens that are gone mean the streamer must log in again.
fn gone_means_reauth(error: TokenError) -> TokenError {
    match error {
        TokenError::NotFound(provider) => TokenError::NeedsReauth(provider),
        other => other,
    }
}

/// The streamer's Twitch token, valid for at least [`CHAT_TOKEN_MIN_VALIDITY`] (or the
/// refresh margin, if longer): refreshed first when it expires sooner. `UnknownUser` for a
/// user who never logged in; `NeedsReauth` when the tokens are gone (disconnected, refused).
#[tracing::instrument(name = "tokens.chat_token", skip_all, fields(streamer = %user))]
pub async fn chat_token(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
) -> Result<ChatToken, TokenError> {
    let login = chat_login(keeper, user).await?;
    let tokens = fresh(keeper, user, Provider::Twitch, chat_token_margin(keeper))
        .await
        .map_err(gone_means_reauth)?;
    Ok(ChatToken::new(tokens, login))
}

/// A chat bot says Twitch answered 401 to `refused`: the answer is what [`chat_token`]
/// answers, with a token Twitch accepts now. When `refused` is still the stored token, it is
/// checked with `/validate` (which also corrects its stored expiry) and refreshed if Twitch
/// refuses it; a refused refresh ends the connection (`NeedsReauth`, `token.revoked`
/// published). When the stored token is newer, it is handed out without asking Twitch.
///
/// Many bots report the same token at once: the check runs under the per-user refresh lock,
/// and a holder that finds the token replaced, or validated since its report arrived, answers
/// with it instead of asking Twitch again; so one report validates (and refreshes) and the
/// others take its result, across instances.
#[tracing::instrument(name = "tokens.chat_token_refused", skip_all, fields(streamer = %user))]
pub async fn chat_token_refused(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    refused: &Secret<String>,
) -> Result<ChatToken, TokenError> {
    let reported_at = now_ms();
    let login = chat_login(keeper, user).await?;
    let tokens = replace_refused(keeper, user, refused, reported_at)
        .await
        .map_err(gone_means_reauth)?;
    Ok(ChatToken::new(tokens, login))
}

async fn replace_refused(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    refused: &Secret<String>,
    reported_at: i64,
) -> Result<UsableTokens, TokenError> {
    let provider = Provider::Twitch;
    let margin = chat_token_margin(keeper);
    let tokens = load(keeper, user, provider).await?;
    if !is_stored(&tokens, refused) {
        tracing::info!("a bot reported an older token; the stored one is handed out");
        return refreshed_if_expiring(keeper, user, provider, tokens, margin).await;
    }
    // Long enough for a validation and a refresh, with room to store the result.
    let hold = keeper.provider_timeout * 3 + Duration::from_secs(1);
    let lock = take_refresh_lock(keeper, user, provider, hold).await?;
    let result = recheck_holding_lock(keeper, user, refused, reported_at, margin).await;
    release_refresh_lock(keeper, &lock).await;
    result
}

/// Whether `token` is the access token of `tokens`; compared in constant time.
fn is_stored(tokens: &UsableTokens, token: &Secret<String>) -> bool {
    crate::crypto::constant_time_eq(tokens.access_token.expose(), token.expose())
}

/// [`chat_token_refused`]'s check at Twitch, under the refresh lock.
async fn recheck_holding_lock(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    refused: &Secret<String>,
    reported_at: i64,
    margin: Duration,
) -> Result<UsableTokens, TokenError> {
    let provider = Provider::Twitch;
    let mut tokens = load(keeper, user, provider).await?;
    let settled = !is_stored(&tokens, refused)
        || keeper
            .store
            .validated_since(user, provider, tokens.sealed_access.clone(), reported_at)
            .await?;
    if !settled {
        let twitch = keeper
            .twitch
            .as_ref()
            .ok_or(TokenError::NotConfigured("Twitch"))?;
        let asked_at = now_ms();
        match twitch.validate(tokens.access_token.expose()).await {
            Ok(validation) => {
                tracing::info!("Twitch still accepts the reported token");
                tokens.expires_at = expiry_from_validation(asked_at, validation.expires_in);
                let sealed = tokens.sealed_access.clone();
                keeper
                    .store
                    .record_validation(user, provider, sealed, asked_at, tokens.expires_at)
                    .await?;
            }
            Err(e) if e.is_unauthorized() => {
                tracing::info!("Twitch refuses the reported token: refreshing it");
                return refresh_holding_lock(keeper, user, provider, &tokens).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Replaced by another report's refresh, or accepted by Twitch: handed out if it lasts.
    if tokens.valid_for(margin) {
        return Ok(tokens);
    }
    refresh_holding_lock(keeper, user, provider, &tokens).await
}

/// Disconnect: makes both stored tokens stop working at the provider before they are deleted
/// here. Twitch: each is revoked (its documentation names access tokens; the refresh token is
/// revoked too so that it cannot mint new ones). DonationAlerts has no revocation endpoint:
/// its tokens stop being used here and die when the streamer removes the app there. Best
/// effort: the streamer wants to disconnect even when the provider cannot be reached.
#[tracing::instrument(name = "tokens.revoke", skip_all, fields(provider = provider.as_str(), streamer = %user))]
pub async fn revoke_at_provider(keeper: &TokenKeeper, user: &TwitchUserId, provider: Provider) {
    let Provider::Twitch = provider else {
        tracing::info!("DonationAlerts has no revocation endpoint; the tokens are deleted here");
        return;
    };
    let Some(twitch) = keeper.twitch.as_ref() else {
        return;
    };
    let stored = match keeper.store.provider_tokens(user, provider).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "could not read the tokens to revoke");
            return;
        }
    };
    let tokens = [
        ("access", Some(stored.open_access(&keeper.cipher))),
        ("refresh", stored.open_refresh(&keeper.cipher)),
    ];
    for (kind, token) in tokens {
        let token = match token {
            Some(Ok(token)) => token,
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(kind, error = %error_chain(&e), "a stored token does not open; not revoked");
                continue;
            }
        };
        if let Err(e) = twitch.revoke(token.expose()).await {
            tracing::warn!(kind, error = %error_chain(&e), "Twitch did not revoke the token; deleted here anyway");
        }
    }
}

/// Replaces `seen` (refused by the provider, or about to expire) with fresh tokens. When
/// another instance already replaced them, its tokens are returned without asking the
/// provider again. A refresh the provider refuses marks the connection `need_reauth`.
#[tracing::instrument(name = "tokens.refresh", skip_all, fields(provider = provider.as_str(), streamer = %user))]
pub async fn refresh(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    seen: &UsableTokens,
) -> Result<UsableTokens, TokenError> {
    // Long enough for one provider round trip, with room to store the result.
    let hold = keeper.provider_timeout * 2 + Duration::from_secs(1);
    let lock = take_refresh_lock(keeper, user, provider, hold).await?;
    let result = refresh_holding_lock(keeper, user, provider, seen).await;
    release_refresh_lock(keeper, &lock).await;
    result
}

/// The refresh lock of `user`'s `provider` tokens, held for `hold`; waits as long for it
/// (`RefreshBusy` when another holder keeps it longer).
async fn take_refresh_lock(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    hold: Duration,
) -> Result<Lock, TokenError> {
    keeper
        .locks
        .lock_within(&refresh_lock(provider, user), hold, hold)
        .await?
        .ok_or(TokenError::RefreshBusy)
}

async fn release_refresh_lock(keeper: &TokenKeeper, lock: &Lock) {
    if let Err(e) = keeper.locks.release(lock).await {
        tracing::warn!(error = %error_chain(&e), "the token refresh lock was not released; it expires by itself");
    }
}

async fn refresh_holding_lock(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    seen: &UsableTokens,
) -> Result<UsableTokens, TokenError> {
    let stored = stored(keeper, user, provider).await?;
    if stored.access_token_sealed != seen.sealed_access {
        // Refreshed by someone else while we waited for the lock.
        return open_active(keeper, provider, &stored);
    }
    if TokenStatus::parse(&stored.status) != Some(TokenStatus::Active) {
        return Err(TokenError::NeedsReauth(provider.as_str()));
    }
    let Some(refresh_token) = stored.open_refresh(&keeper.cipher).transpose()? else {
        end_connection(keeper, user, provider, stored.access_token_sealed.clone()).await?;
        return Err(TokenError::NeedsReauth(provider.as_str()));
    };
    let answer = match provider {
        Provider::Twitch => {
            let client = keeper
                .twitch
                .as_ref()
                .ok_or(TokenError::NotConfigured("Twitch"))?;
            client.refresh(refresh_token.expose()).await
        }
        Provider::DonationAlerts => {
            let client = keeper
                .donationalerts
                .as_ref()
                .ok_or(TokenError::NotConfigured("DonationAlerts"))?;
            client.refresh(refresh_token.expose(), &stored.scopes).await
        }
    };
    let new = match answer {
        Ok(new) => new,
        Err(ProviderError::Rejected { status, .. }) if status == 400 || status == 401 => {
            // A holder that outlived its lock may find the refresh token rotated by the next
            // holder: that is not the streamer's doing.
            if let Some(newer) = replaced_meanwhile(keeper, user, provider, &stored).await? {
                return open_active(keeper, provider, &newer);
            }
            tracing::warn!(
                status,
                "the provider refused the refresh: the streamer must reconnect"
            );
            end_connection(keeper, user, provider, stored.access_token_sealed.clone()).await?;
            return Err(TokenError::NeedsReauth(provider.as_str()));
        }
        Err(e) => return Err(e.into()),
    };
    let sealed = seal(keeper, user, provider, &new, &stored.scopes);
    let usable = UsableTokens {
        access_token: new.access_token.clone(),
        scopes: sealed.scopes.clone(),
        expires_at: sealed.expires_at,
        sealed_access: sealed.access_token_sealed.clone(),
    };
    let replacing = stored.access_token_sealed.clone();
    if !keeper
        .store
        .replace_tokens(user, provider, replacing, sealed)
        .await?
    {
        return match replaced_meanwhile(keeper, user, provider, &stored).await? {
            Some(newer) => open_active(keeper, provider, &newer),
            None => Err(TokenError::NotFound(provider.as_str())),
        };
    }
    tracing::info!("tokens refreshed");
    keeper.metrics.tokens.refreshed(provider);
    Ok(usable)
}

/// The stored tokens, if they are no longer `seen` (another refresh replaced them).
async fn replaced_meanwhile(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    seen: &StoredTokens,
) -> Result<Option<StoredTokens>, TokenError> {
    Ok(keeper
        .store
        .provider_tokens(user, provider)
        .await?
        .filter(|now| now.access_token_sealed != seen.access_token_sealed))
}

/// The provider refused tokens that were just refreshed (or will not refresh them): the
/// connection is over until the streamer connects again: the tokens are deleted, the sessions
/// ended and `token.revoked` published.
pub(crate) async fn connection_lost(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    dead: &UsableTokens,
) -> Result<(), TokenError> {
    end_connection(keeper, user, provider, dead.sealed_access.clone()).await
}

/// Deletes the dead tokens (the row stays, `need_reauth`), ends the streamer's sessions when
/// they were their Twitch login, and publishes `token.revoked` so that bots holding a copy stop
/// using it. The event is recorded with the change and relayed at once (or by the next relay
/// run if the bus is down). Nothing happens when the row holds other tokens by now (a new
/// login replaced them).
#[tracing::instrument(name = "tokens.end_connection", skip_all, fields(provider = provider.as_str(), streamer = %user))]
async fn end_connection(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    dead_access: Vec<u8>,
) -> Result<(), TokenError> {
    let at = now_ms();
    let payload = TokenRevokedPayload {
        event_id: format!("token.revoked:{}:{}:{at}", provider.as_str(), user.as_str()),
        streamer_id: user.as_str().to_owned(),
        provider: provider.as_str().to_owned(),
        reason: "refresh_refused".to_owned(),
        revoked_at: rfc3339_utc(at),
    };
    let ended = keeper
        .store
        .end_connection(
            user,
            provider,
            dead_access,
            BusEvent::token_revoked(&payload),
        )
        .await?;
    if ended {
        keeper.metrics.tokens.connection_ended(provider);
        tracing::warn!("tokens deleted: the streamer must connect again");
        if let Err(e) = crate::outbox::relay_pending(&keeper.store, &keeper.bus).await {
            tracing::warn!(error = %error_chain(&e), "token.revoked waits in the outbox for the bus");
        }
    }
    Ok(())
}

/// Seals a provider's answer for the row of `user`; scopes the answer does not name are
/// the ones stored before.
fn seal(
    keeper: &TokenKeeper,
    user: &TwitchUserId,
    provider: Provider,
    tokens: &TokenSet,
    previous_scopes: &[String],
) -> RefreshedTokens {
    let name = provider.as_str();
    RefreshedTokens {
        access_token_sealed: seal_token(
            &keeper.cipher,
            user,
            name,
            TokenKind::Access,
            tokens.access_token.expose(),
        ),
        refresh_token_sealed: tokens
            .refresh_token
            .as_ref()
            .map(|r| seal_token(&keeper.cipher, user, name, TokenKind::Refresh, r.expose())),
        scopes: if tokens.scopes.is_empty() {
            previous_scopes.to_vec()
        } else {
            tokens.scopes.clone()
        },
        expires_at: tokens.expires_in.map(|d| now_ms() + d.as_millis() as i64),
    }
}

pub(crate) fn open_active(
    keeper: &TokenKeeper,
    provider: Provider,
    stored: &StoredTokens,
) -> Result<UsableTokens, TokenError> {
    if TokenStatus::parse(&stored.status) != Some(TokenStatus::Active) {
        return Err(TokenError::NeedsReauth(provider.as_str()));
    }
    Ok(UsableTokens {
        access_token: stored.open_access(&keeper.cipher)?,
        scopes: stored.scopes.clone(),
        expires_at: stored.expires_at,
        sealed_access: stored.access_token_sealed.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twitch_user_id_is_one_to_twenty_digits() {
        assert_eq!(
            TwitchUserId::parse("141981764").map(|id| id.to_string()),
            Some("141981764".into())
        );
        for bad in ["", "12a", "-1", " 1", "1".repeat(21).as_str(), "١٢٣"] {
            assert_eq!(TwitchUserId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_round_trip_through_their_column_values() {
        for status in [
            TokenStatus::Active,
            TokenStatus::NeedReauth,
            TokenStatus::Revoked,
        ] {
            assert_eq!(TokenStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(TokenStatus::parse("ACTIVE"), None);
    }

    #[test]
    fn validate_reports_the_lifetime_from_when_it_was_asked_and_zero_means_none() {
        assert_eq!(expiry_from_validation(1_000, 14_124), Some(14_125_000));
        assert_eq!(expiry_from_validation(1_000, 0), None);
        assert_eq!(expiry_from_validation(1_000, u64::MAX), Some(i64::MAX));
    }

    #[test]
    fn refresh_locks_are_per_provider_and_user() {
        let user = TwitchUserId::parse("42").unwrap();
        assert_eq!(
            refresh_lock(Provider::DonationAlerts, &user),
            "locks:tokens:donationalerts:42"
        );
        assert_ne!(
            refresh_lock(Provider::Twitch, &user),
            refresh_lock(Provider::DonationAlerts, &user)
        );
    }
}
