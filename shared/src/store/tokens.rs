//! Provider tokens by provider: read one row, replace its tokens after a refresh, change its
//! status. The rules around them (when to refresh, under which lock) are in `crate::tokens`.

use rusqlite::{OptionalExtension as _, params};

use super::accounts::StoredTokens;
use super::{Store, StoreError, now_ms};
use crate::tokens::{Provider, TokenStatus, TwitchUserId};

/// New tokens for a row, sealed for it.
#[derive(Debug, Clone)]
pub struct RefreshedTokens {
    pub access_token_sealed: Vec<u8>,
    pub refresh_token_sealed: Option<Vec<u8>>,
    pub scopes: Vec<String>,
    /// Unix ms.
    pub expires_at: Option<i64>,
}

impl Store {
    /// A user's tokens for one provider, still sealed.
    pub async fn provider_tokens(
        &self,
        user: &TwitchUserId,
        provider: Provider,
    ) -> Result<Option<StoredTokens>, StoreError> {
        let user = user.as_str().to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT access_token_enc, refresh_token_enc, scopes, expires_at, status
                 FROM provider_tokens WHERE twitch_user_id = ?1 AND provider = ?2",
                params![user, provider.as_str()],
                |row| {
                    let scopes: Option<String> = row.get(2)?;
                    Ok(StoredTokens {
                        twitch_user_id: user.clone(),
                        provider: provider.as_str(),
                        access_token_sealed: row.get(0)?,
                        refresh_token_sealed: row.get(1)?,
                        scopes: scopes
                            .unwrap_or_default()
                            .split_whitespace()
                            .map(str::to_owned)
                            .collect(),
                        expires_at: row.get(3)?,
                        status: row.get(4)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Stores refreshed tokens (the rotated refresh token replaces the old one; a provider
    /// that sent none leaves the old one in place) and marks the row active, if the row
    /// still holds `replacing` (the sealed access token the refresh started from). `false`
    /// when it does not (replaced or disconnected meanwhile): nothing is written.
    pub async fn replace_tokens(
        &self,
        user: &TwitchUserId,
        provider: Provider,
        replacing: Vec<u8>,
        tokens: RefreshedTokens,
    ) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        self.write(move |conn| {
            let changed = conn.execute(
                "UPDATE provider_tokens SET access_token_enc = ?3,
                        refresh_token_enc = coalesce(?4, refresh_token_enc),
                        scopes = ?5, expires_at = ?6, status = 'active', updated_at = ?7
                 WHERE twitch_user_id = ?1 AND provider = ?2 AND access_token_enc = ?8",
                params![
                    user,
                    provider.as_str(),
                    tokens.access_token_sealed,
                    tokens.refresh_token_sealed,
                    tokens.scopes.join(" "),
                    tokens.expires_at,
                    now_ms(),
                    replacing
                ],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    /// Sets a row's status (e.g. `need_reauth` when the provider refused a refresh).
    pub async fn set_token_status(
        &self,
        user: &TwitchUserId,
        provider: Provider,
        status: TokenStatus,
    ) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        self.write(move |conn| {
            let changed = conn.execute(
                "UPDATE provider_tokens SET status = ?3, updated_at = ?4
                 WHERE twitch_user_id = ?1 AND provider = ?2",
                params![user, provider.as_str(), status.as_str(), now_ms()],
            )?;
            Ok(changed > 0)
        })
        .await
    }
}
