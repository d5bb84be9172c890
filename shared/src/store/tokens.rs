//! Provider tokens by provider: read one row, replace its tokens after a refresh, record a
//! validation, list the tokens due for validation, end a connection whose tokens died. The
//! rules around them (when to refresh, under which lock) are in `crate::tokens`.

use rusqlite::{OptionalExtension as _, params};

use super::accounts::StoredTokens;
use super::{Store, StoreError};
use crate::domain::event::BusEvent;
use crate::domain::{Provider, TwitchUserId, now_ms};

/// Where a validation run stands in the list of due tokens: the `(last_validated_at,
/// twitch_user_id)` of the last token handed out (never-validated tokens count as 0).
pub(crate) type ValidationCursor = (i64, String);

/// Columns read into a [`StoredTokens`], in the order [`stored_tokens_from`] expects.
const TOKEN_COLUMNS: &str =
    "twitch_user_id, access_token_enc, refresh_token_enc, scopes, expires_at, status";

/// Active tokens of provider ?1 due at ?2 after the cursor (?3, ?4), at most ?5, in order.
fn due_query() -> String {
    format!(
        "SELECT {TOKEN_COLUMNS}, coalesce(last_validated_at, 0) AS validated
         FROM provider_tokens
         WHERE provider = ?1 AND status = 'active'
           AND coalesce(last_validated_at, 0) <= ?2
           AND (coalesce(last_validated_at, 0), twitch_user_id) > (?3, ?4)
         ORDER BY validated, twitch_user_id LIMIT ?5"
    )
}

fn stored_tokens_from(
    row: &rusqlite::Row<'_>,
    provider: Provider,
) -> rusqlite::Result<StoredTokens> {
    let scopes: Option<String> = row.get(3)?;
    Ok(StoredTokens {
        twitch_user_id: row.get(0)?,
        provider: provider.as_str(),
        access_token_sealed: row.get(1)?,
        refresh_token_sealed: row.get(2)?,
        scopes: scopes
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        expires_at: row.get(4)?,
        status: row.get(5)?,
    })
}

/// New tokens for a row, sealed for it.
#[derive(Debug, Clone)]
pub(crate) struct RefreshedTokens {
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
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM provider_tokens
                     WHERE twitch_user_id = ?1 AND provider = ?2"
                ),
                params![user, provider.as_str()],
                |row| stored_tokens_from(row, provider),
            )
            .optional()
        })
        .await
    }

    /// Active tokens of `provider` last validated at or before `due_before` (or never), in
    /// the order of that time then user id, after `after`: the next page of a validation run.
    /// The order makes a run that stopped early continue, on the next run, with the tokens
    /// it did not reach.
    pub(crate) async fn tokens_due_for_validation(
        &self,
        provider: Provider,
        due_before: i64,
        after: Option<ValidationCursor>,
        limit: usize,
    ) -> Result<Vec<(ValidationCursor, StoredTokens)>, StoreError> {
        let (after_time, after_user) = after.unwrap_or((-1, String::new()));
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&due_query())?;
            let rows = statement.query_map(
                params![
                    provider.as_str(),
                    due_before,
                    after_time,
                    after_user,
                    limit as i64
                ],
                |row| {
                    let tokens = stored_tokens_from(row, provider)?;
                    Ok((
                        (row.get(6)?, tokens.twitch_user_id.as_str().to_owned()),
                        tokens,
                    ))
                },
            )?;
            rows.collect()
        })
        .await
    }

    /// Records that the provider accepted the access token `sealed_access` at `at`, with the
    /// expiry it reported (`None`: the token does not expire), unless the row holds other
    /// tokens by now. `false` when it does.
    pub(crate) async fn record_validation(
        &self,
        user: &TwitchUserId,
        provider: Provider,
        sealed_access: Vec<u8>,
        at: i64,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        self.write(move |conn| {
            let changed = conn.execute(
                "UPDATE provider_tokens SET last_validated_at = ?3, expires_at = ?5
                 WHERE twitch_user_id = ?1 AND provider = ?2 AND access_token_enc = ?4",
                params![user, provider.as_str(), at, sealed_access, expires_at],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    /// Whether the row still holds the access token `sealed_access` and it was validated at
    /// or after `since`.
    pub(crate) async fn validated_since(
        &self,
        user: &TwitchUserId,
        provider: Provider,
        sealed_access: Vec<u8>,
        since: i64,
    ) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM provider_tokens
                 WHERE twitch_user_id = ?1 AND provider = ?2 AND access_token_enc = ?3
                   AND last_validated_at >= ?4)",
                params![user, provider.as_str(), sealed_access, since],
                |row| row.get(0),
            )
        })
        .await
    }

    /// The provider will not refresh these tokens any more: deletes them (the row stays,
    /// `need_reauth`, so the dashboard can say so), ends the user's sessions when the tokens
    /// were their login (Twitch), and records `event` in the outbox, all in one write.
    /// `false` when the row held other tokens by now (a new login replaced them) or was gone:
    /// nothing is written.
    pub(crate) async fn end_connection(
        &self,
        user: &TwitchUserId,
        provider: Provider,
        dead_access: Vec<u8>,
        event: BusEvent,
    ) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        self.write(move |conn| {
            let now = now_ms();
            // An empty access token is how a deleted one is stored (the column is NOT NULL).
            let changed = conn.execute(
                "UPDATE provider_tokens SET access_token_enc = X'', refresh_token_enc = NULL,
                        status = 'need_reauth', updated_at = ?3
                 WHERE twitch_user_id = ?1 AND provider = ?2 AND access_token_enc = ?4",
                params![user, provider.as_str(), now, dead_access],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            if provider == Provider::Twitch {
                conn.execute(
                    "UPDATE sessions SET revoked_at = ?2
                     WHERE twitch_user_id = ?1 AND revoked_at IS NULL",
                    params![user, now],
                )?;
            }
            super::outbox::record_event(conn, &event, now)?;
            Ok(true)
        })
        .await
    }

    /// Stores refreshed tokens (the rotated refresh token replaces the old one; a provider
    /// that sent none leaves the old one in place) and marks the row active and validated (a
    /// token the provider has just issued is valid), if the row
    /// still holds `replacing` (the sealed access token the refresh started from). `false`
    /// when it does not (replaced or disconnected meanwhile): nothing is written.
    pub(crate) async fn replace_tokens(
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
                        scopes = ?5, expires_at = ?6, status = 'active', updated_at = ?7,
                        last_validated_at = ?7
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_due_tokens_are_read_from_the_validation_index_in_its_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in super::super::schema::MIGRATIONS {
            conn.execute_batch(migration).unwrap();
        }
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", due_query()))
            .unwrap()
            .query_map(params!["twitch", 0, -1, "", 10], |r| r.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join(" | ");
        assert!(plan.contains("provider_tokens_validation"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");
    }
}
