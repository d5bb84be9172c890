//! Many Twitch users with stored tokens, issued by the fake Twitch and written directly in
//! the store (no browser), for the token validation's tests and benchmark.

use std::time::Duration;

use fake_providers::twitch::{FakeTwitch, FakeUser, IssuedTokens};
use shared::app::App;
use shared::domain::now_ms;
use shared::store::accounts::{TokenKind, seal_token};

/// A seeded user and the tokens the fake issued them (as stored, sealed).
#[derive(Debug, Clone)]
pub struct SeededUser {
    pub id: String,
    pub tokens: IssuedTokens,
}

/// Users `first_id`, `first_id + 1`, … (`count` of them), each logged in once: tokens issued
/// by `fake` with four-hour lifetimes, stored sealed and never validated, in one write.
pub async fn seed_twitch_users(
    app: &App,
    fake: &FakeTwitch,
    first_id: u64,
    count: usize,
) -> Vec<SeededUser> {
    let users: Vec<SeededUser> = (0..count as u64)
        .map(|i| {
            let id = (first_id + i).to_string();
            let tokens = fake.issue_tokens(
                FakeUser {
                    id: id.clone(),
                    login: format!("user{id}"),
                    display_name: format!("User {id}"),
                },
                &["chat:read"],
                Duration::from_secs(4 * 3600),
            );
            SeededUser { id, tokens }
        })
        .collect();
    let rows: Vec<(String, Vec<u8>, Vec<u8>)> = users
        .iter()
        .map(|user| {
            let id = shared::domain::TwitchUserId::parse(&user.id).expect("a Twitch user id");
            let seal = |kind, token: &str| seal_token(&app.cipher, &id, "twitch", kind, token);
            (
                user.id.clone(),
                seal(TokenKind::Access, &user.tokens.access_token),
                seal(TokenKind::Refresh, &user.tokens.refresh_token),
            )
        })
        .collect();
    let expires_at = now_ms() + 4 * 3600 * 1000;
    app.store
        .write(move |conn| {
            for (id, access, refresh) in &rows {
                conn.execute(
                    "INSERT INTO users (twitch_user_id, login, display_name, created_at, updated_at)
                     VALUES (?1, 'user' || ?1, 'User ' || ?1, 0, 0)",
                    [id],
                )?;
                conn.execute(
                    "INSERT INTO provider_tokens (twitch_user_id, provider, access_token_enc,
                            refresh_token_enc, scopes, expires_at, status, created_at, updated_at)
                     VALUES (?1, 'twitch', ?2, ?3, 'chat:read', ?4, 'active', 0, 0)",
                    rusqlite::params![id, access, refresh, expires_at],
                )?;
            }
            Ok(())
        })
        .await
        .expect("users stored");
    users
}

/// Gives `user` a live session (as a login would), returning its id hash.
pub async fn add_session(app: &App, user: &str) -> Vec<u8> {
    let id_hash = shared::crypto::sha256(&shared::crypto::random_token(32));
    let (user, hash) = (user.to_owned(), id_hash.clone());
    app.store
        .write(move |conn| {
            conn.execute(
                "INSERT INTO sessions (id_hash, twitch_user_id, created_at, expires_at)
                 VALUES (?1, ?2, 0, ?3)",
                rusqlite::params![hash, user, now_ms() + 3_600_000],
            )
            .map(|_| ())
        })
        .await
        .expect("session stored");
    id_hash
}
