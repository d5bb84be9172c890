//! Users, their provider tokens (sealed, see `crypto`), and browser sessions.

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError};
use crate::crypto::{CryptoError, TokenCipher};
use crate::domain::{TwitchUserId, now_ms};
use crate::secret::Secret;

/// Which of a provider's tokens a sealed value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    fn column(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
        }
    }
}

/// Where a sealed token is stored: its associated data, binding the ciphertext to the row
/// (user and provider) and column, so it opens nowhere else.
pub(crate) fn token_context(twitch_user_id: &str, provider: &str, kind: TokenKind) -> String {
    format!("{twitch_user_id}/{provider}/{}", kind.column())
}

/// Seals a token for the row of `twitch_user_id` and `provider`.
pub fn seal_token(
    cipher: &TokenCipher,
    twitch_user_id: &TwitchUserId,
    provider: &str,
    kind: TokenKind,
    token: &str,
) -> Vec<u8> {
    cipher.seal(
        token,
        &token_context(twitch_user_id.as_str(), provider, kind),
    )
}

/// The `scopes` column (space-separated) as a list.
fn scopes_from_column(column: Option<String>) -> Vec<String> {
    column
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A completed Twitch login, ready to be written: profile, sealed tokens, the new session.
#[derive(Debug, Clone)]
pub struct TwitchLogin {
    pub twitch_user_id: TwitchUserId,
    pub login: String,
    pub display_name: String,
    pub profile_image_url: Option<String>,
    pub access_token_sealed: Vec<u8>,
    pub refresh_token_sealed: Option<Vec<u8>>,
    pub scopes: Vec<String>,
    /// Unix ms.
    pub expires_at: Option<i64>,
    pub session_id_hash: Vec<u8>,
    /// Unix ms.
    pub session_expires_at: i64,
    /// The session the browser held when it logged in again: ended in the same write.
    pub replaced_session_id_hash: Option<Vec<u8>>,
}

/// The user behind a live session, as the pages show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub twitch_user_id: TwitchUserId,
    pub login: String,
    pub display_name: String,
    pub profile_image_url: Option<String>,
    pub scopes: Vec<String>,
    /// `active`, `need_reauth`, `revoked`, or `None` when the tokens were deleted.
    pub twitch_status: Option<String>,
    pub donationalerts_status: Option<String>,
    /// The scopes the DonationAlerts grant holds (empty without a connection).
    pub donationalerts_scopes: Vec<String>,
}

/// A stored token pair, still sealed, with the row it was read from.
#[derive(Debug, Clone)]
pub struct StoredTokens {
    pub twitch_user_id: TwitchUserId,
    pub provider: &'static str,
    pub access_token_sealed: Vec<u8>,
    pub refresh_token_sealed: Option<Vec<u8>>,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub status: String,
}

impl StoredTokens {
    /// The access token, if it was sealed for this very row.
    pub fn open_access(&self, cipher: &TokenCipher) -> Result<Secret<String>, CryptoError> {
        self.open(cipher, TokenKind::Access, &self.access_token_sealed)
    }

    /// The refresh token (`None` when the provider issued none), if sealed for this row.
    pub fn open_refresh(
        &self,
        cipher: &TokenCipher,
    ) -> Option<Result<Secret<String>, CryptoError>> {
        self.refresh_token_sealed
            .as_ref()
            .map(|sealed| self.open(cipher, TokenKind::Refresh, sealed))
    }

    fn open(
        &self,
        cipher: &TokenCipher,
        kind: TokenKind,
        sealed: &[u8],
    ) -> Result<Secret<String>, CryptoError> {
        cipher.open(
            sealed,
            &token_context(self.twitch_user_id.as_str(), self.provider, kind),
        )
    }
}

impl Store {
    /// Writes the user, their Twitch tokens and a new session in one transaction, ending
    /// the session this browser held before (if any).
    pub async fn record_twitch_login(&self, login: TwitchLogin) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = now_ms();
            conn.execute(
                "INSERT INTO users (twitch_user_id, login, display_name, profile_image_url,
                                    created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (twitch_user_id) DO UPDATE SET
                    login = excluded.login, display_name = excluded.display_name,
                    profile_image_url = excluded.profile_image_url, updated_at = excluded.updated_at",
                params![
                    login.twitch_user_id,
                    login.login,
                    login.display_name,
                    login.profile_image_url,
                    now
                ],
            )?;
            conn.execute(
                "INSERT INTO provider_tokens (twitch_user_id, provider, access_token_enc,
                        refresh_token_enc, scopes, expires_at, status, last_validated_at,
                        created_at, updated_at)
                 VALUES (?1, 'twitch', ?2, ?3, ?4, ?5, 'active', ?6, ?6, ?6)
                 ON CONFLICT (twitch_user_id, provider) DO UPDATE SET
                    access_token_enc = excluded.access_token_enc,
                    refresh_token_enc = excluded.refresh_token_enc,
                    scopes = excluded.scopes, expires_at = excluded.expires_at,
                    status = 'active', last_validated_at = excluded.last_validated_at,
                    updated_at = excluded.updated_at",
                params![
                    login.twitch_user_id,
                    login.access_token_sealed,
                    login.refresh_token_sealed,
                    login.scopes.join(" "),
                    login.expires_at,
                    now
                ],
            )?;
            conn.execute(
                "INSERT INTO sessions (id_hash, twitch_user_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    login.session_id_hash,
                    login.twitch_user_id,
                    now,
                    login.session_expires_at
                ],
            )?;
            if let Some(replaced) = &login.replaced_session_id_hash {
                conn.execute(
                    "UPDATE sessions SET revoked_at = ?2 WHERE id_hash = ?1 AND revoked_at IS NULL",
                    params![replaced, now],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The user of a live (unrevoked, unexpired) session.
    pub(crate) async fn session_user(
        &self,
        id_hash: Vec<u8>,
    ) -> Result<Option<SessionUser>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT u.twitch_user_id, u.login, u.display_name, u.profile_image_url,
                        t.scopes, t.status, d.status, d.scopes
                 FROM sessions s
                 JOIN users u ON u.twitch_user_id = s.twitch_user_id
                 LEFT JOIN provider_tokens t
                        ON t.twitch_user_id = u.twitch_user_id AND t.provider = 'twitch'
                 LEFT JOIN provider_tokens d
                        ON d.twitch_user_id = u.twitch_user_id AND d.provider = 'donationalerts'
                 WHERE s.id_hash = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2",
                params![id_hash, now_ms()],
                |row| {
                    Ok(SessionUser {
                        twitch_user_id: row.get(0)?,
                        login: row.get(1)?,
                        display_name: row.get(2)?,
                        profile_image_url: row.get(3)?,
                        scopes: scopes_from_column(row.get(4)?),
                        twitch_status: row.get(5)?,
                        donationalerts_status: row.get(6)?,
                        donationalerts_scopes: scopes_from_column(row.get(7)?),
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// The login name of a known user.
    pub async fn user_login(
        &self,
        twitch_user_id: &TwitchUserId,
    ) -> Result<Option<String>, StoreError> {
        let twitch_user_id = twitch_user_id.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT login FROM users WHERE twitch_user_id = ?1",
                [&twitch_user_id],
                |row| row.get(0),
            )
            .optional()
        })
        .await
    }

    /// Ends one session (logout). Its cookie no longer opens anything.
    pub(crate) async fn revoke_session(&self, id_hash: Vec<u8>) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE id_hash = ?1 AND revoked_at IS NULL",
                params![id_hash, now_ms()],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn twitch_tokens(
        &self,
        twitch_user_id: &TwitchUserId,
    ) -> Result<Option<StoredTokens>, StoreError> {
        let twitch_user_id = twitch_user_id.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT access_token_enc, refresh_token_enc, scopes, expires_at, status
                 FROM provider_tokens WHERE twitch_user_id = ?1 AND provider = 'twitch'",
                [&twitch_user_id],
                |row| {
                    Ok(StoredTokens {
                        twitch_user_id: twitch_user_id.clone(),
                        provider: "twitch",
                        access_token_sealed: row.get(0)?,
                        refresh_token_sealed: row.get(1)?,
                        scopes: scopes_from_column(row.get(2)?),
                        expires_at: row.get(3)?,
                        status: row.get(4)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Twitch disconnect ("forget my accounts"): in one write, deletes the user's Twitch
    /// tokens, their DonationAlerts link and tokens (polling of them stops), and ends every
    /// session of theirs. Profile and recorded donations stay.
    pub(crate) async fn forget_twitch_connection(
        &self,
        twitch_user_id: &TwitchUserId,
    ) -> Result<(), StoreError> {
        let twitch_user_id = twitch_user_id.clone();
        self.write(move |conn| {
            let now = now_ms();
            conn.execute(
                "DELETE FROM provider_tokens WHERE twitch_user_id = ?1 AND provider = 'twitch'",
                [&twitch_user_id],
            )?;
            super::donationalerts::delete_connection(conn, &twitch_user_id)?;
            conn.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE twitch_user_id = ?1 AND revoked_at IS NULL",
                params![twitch_user_id, now],
            )?;
            Ok(())
        })
        .await
    }
}
