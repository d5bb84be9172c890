//! Versioned migrations. `PRAGMA user_version` holds the number of migrations applied; each
//! start applies the missing ones in one transaction, under the writer lease.
//! Append new migrations; never edit one that has shipped.

/// Times are Unix milliseconds (INTEGER) unless a column says otherwise; tokens are stored
/// only as AES-256-GCM ciphertext (BLOB).
pub const MIGRATIONS: &[&str] = &[
    // 1: the records of the contract.
    r"
    CREATE TABLE users (
        twitch_user_id     TEXT PRIMARY KEY,
        login              TEXT NOT NULL,
        display_name       TEXT NOT NULL,
        profile_image_url  TEXT,
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL
    );

    CREATE TABLE provider_tokens (
        twitch_user_id     TEXT NOT NULL REFERENCES users(twitch_user_id) ON DELETE CASCADE,
        provider           TEXT NOT NULL CHECK (provider IN ('twitch', 'donationalerts')),
        access_token_enc   BLOB NOT NULL,
        refresh_token_enc  BLOB,
        scopes             TEXT NOT NULL DEFAULT '',
        expires_at         INTEGER,
        status             TEXT NOT NULL CHECK (status IN ('active', 'need_reauth', 'revoked')),
        last_validated_at  INTEGER,
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL,
        PRIMARY KEY (twitch_user_id, provider)
    );

    CREATE TABLE donationalerts_links (
        streamer_twitch_id TEXT PRIMARY KEY REFERENCES users(twitch_user_id) ON DELETE CASCADE,
        da_user_id         INTEGER NOT NULL UNIQUE,
        da_name            TEXT,
        -- Highest DonationAlerts donation id already recorded (the poll's high-water mark).
        poll_cursor        INTEGER,
        -- Fencing token of the poll lock that last moved the cursor; older tokens are refused.
        cursor_fence       INTEGER NOT NULL DEFAULT 0,
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL
    );

    CREATE TABLE donations (
        streamer_twitch_id TEXT NOT NULL,
        da_donation_id     INTEGER NOT NULL,
        donor_name         TEXT,
        message            TEXT NOT NULL DEFAULT '',
        -- Decimal text of DonationAlerts' JSON number (its shortest form: 100.50 is 100.5),
        -- never summed or rounded as a float.
        amount             TEXT NOT NULL,
        currency           TEXT NOT NULL,
        created_at         TEXT NOT NULL,
        received_at        TEXT NOT NULL,
        PRIMARY KEY (streamer_twitch_id, da_donation_id)
    );

    -- Transactional outbox: an event is recorded with its donation and published from here,
    -- so one committed while Redis was down is published when it returns.
    CREATE TABLE event_outbox (
        event_id           TEXT PRIMARY KEY,
        streamer_twitch_id TEXT NOT NULL,
        kind               TEXT NOT NULL,
        payload            TEXT NOT NULL,
        created_at         INTEGER NOT NULL,
        published_at       INTEGER
    );
    CREATE INDEX event_outbox_unpublished ON event_outbox (created_at) WHERE published_at IS NULL;

    -- Highest fencing token accepted per lock resource (the writer lease and poll locks).
    CREATE TABLE fencing (
        resource           TEXT PRIMARY KEY,
        token              INTEGER NOT NULL
    );
    ",
    // 2: browser sessions, revocable server-side. Only a hash of the session id is stored,
    // so the database alone opens no session.
    r"
    CREATE TABLE sessions (
        id_hash            BLOB PRIMARY KEY,
        twitch_user_id     TEXT NOT NULL REFERENCES users(twitch_user_id) ON DELETE CASCADE,
        created_at         INTEGER NOT NULL,
        expires_at         INTEGER NOT NULL,
        revoked_at         INTEGER
    );
    CREATE INDEX sessions_by_user ON sessions (twitch_user_id);
    ",
    // 3: when a streamer was last polled (by any instance), so that instances sharing the
    // work do not poll one streamer twice in a row; set only by a recorded poll.
    r"
    ALTER TABLE donationalerts_links ADD COLUMN last_polled_at INTEGER;
    ",
    // 4: the token validation's order (least recently validated first, never-validated as
    // 0) read from an index, not a scan of every token; an empty access_token_enc is a
    // token deleted because its connection ended (need_reauth).
    r"
    CREATE INDEX provider_tokens_validation
        ON provider_tokens (provider, status, coalesce(last_validated_at, 0), twitch_user_id);
    ",
    // 5: a poll reads a bounded number of pages. One that stopped before reaching the cursor
    // leaves the cursor where it is and keeps here where the next poll goes on (the link of
    // the first page not read) and the highest donation id seen since the walk began (the
    // cursor once a poll reaches it).
    r"
    ALTER TABLE donationalerts_links ADD COLUMN resume_link TEXT;
    ALTER TABLE donationalerts_links ADD COLUMN resume_high_water INTEGER;
    ",
    // 6: the realtime bridge's shard leases: the fencing token of the last write each shard's
    // holder made, so a bridge paused past its lease cannot record after the next holder did.
    r"
    CREATE TABLE realtime_shard_fences (
        shard   INTEGER PRIMARY KEY,
        fence   INTEGER NOT NULL
    );
    ",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_applies_to_an_empty_database() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in MIGRATIONS {
            conn.execute_batch(migration).unwrap();
        }
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 8);
    }
}
