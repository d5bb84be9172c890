//! Users, their provider tokens (sealed, see `crypto`), and browser sessions.

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError, now_ms};

/// Where a sealed token is stored: its associated data, binding the ciphertext to the row.
pub fn token_context(twitch_user_id: &str, provider: &str, which: &str) -> String {
    format!("{twitch_user_id}/{provider}/{which}")
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
    pub twitch_user_id: String,
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
}

/// The user behind a live session, as the pages show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub twitch_user_id: String,
    pub login: String,
    pub display_name: String,
    pub profile_image_url: Option<String>,
    pub scopes: Vec<String>,
    /// `active`, `need_reauth`, `revoked`, or `None` when the tokens were deleted.
    pub twitch_status: Option<String>,
    pub donationalerts_status: Option<String>,
}

/// A stored token pair, still sealed.
#[derive(Debug, Clone)]
pub struct StoredTokens {
    pub access_token_sealed: Vec<u8>,
    pub refresh_token_sealed: Option<Vec<u8>>,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub status: String,
}

impl Store {
    /// Writes the user, their Twitch tokens and a new session in one transaction.
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
            Ok(())
        })
        .await
    }

    /// The user of a live (unrevoked, unexpired) session.
    pub async fn session_user(&self, id_hash: Vec<u8>) -> Result<Option<SessionUser>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT u.twitch_user_id, u.login, u.display_name, u.profile_image_url,
                        t.scopes, t.status, d.status
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
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Ends one session (logout). Its cookie no longer opens anything.
    pub async fn revoke_session(&self, id_hash: Vec<u8>) -> Result<(), StoreError> {
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
        twitch_user_id: String,
    ) -> Result<Option<StoredTokens>, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT access_token_enc, refresh_token_enc, scopes, expires_at, status
                 FROM provider_tokens WHERE twitch_user_id = ?1 AND provider = 'twitch'",
                [twitch_user_id],
                |row| {
                    Ok(StoredTokens {
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

    /// Disconnect: deletes the user's Twitch tokens and ends every session of theirs.
    pub async fn forget_twitch_connection(&self, twitch_user_id: String) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = now_ms();
            conn.execute(
                "DELETE FROM provider_tokens WHERE twitch_user_id = ?1 AND provider = 'twitch'",
                [&twitch_user_id],
            )?;
            conn.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE twitch_user_id = ?1 AND revoked_at IS NULL",
                params![twitch_user_id, now],
            )?;
            Ok(())
        })
        .await
    }
}
