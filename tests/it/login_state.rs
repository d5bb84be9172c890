//! What a login may and may not leave behind: starting one stores nothing, a new login ends
//! the browser's previous session, and a sealed token opens only in its own row.

use std::collections::BTreeMap;

use avatar_tests::{RedisServer, TestApp, location};
use shared::crypto::CryptoError;
use shared::store::accounts::{TokenKind, TwitchLogin, seal_token};

use crate::login::{
    binding_cookie, callback_with_cookies, hand_login_until_consent, session_cookie,
};

/// `text` as a Twitch user id (the tests' ids are well formed).
fn user_id(text: &str) -> shared::domain::TwitchUserId {
    shared::domain::TwitchUserId::parse(text).expect("a Twitch user id")
}

/// Every key of the Redis database (a small test database: KEYS is fine here).
async fn redis_keys(redis: &RedisServer) -> Vec<String> {
    let mut conn = redis.connection().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn dbsize(redis: &RedisServer) -> i64 {
    let mut conn = redis.connection().await;
    redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
}

/// Row counts of every table of the app's database.
fn row_counts(app: &TestApp) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(app.dir.path().join("data.sqlite")).unwrap();
    let mut tables = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap();
    let names: Vec<String> = tables
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(names.len() >= 4, "the schema is there: {names:?}");
    names
        .into_iter()
        .map(|name| {
            let count = app.rows(&format!("\"{name}\""));
            (name, count)
        })
        .collect()
}

#[tokio::test]
async fn ten_thousand_started_logins_write_nothing_to_redis_or_the_database() {
    // Arrange
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url())]).await;
    let keys_before = redis_keys(&redis).await;
    let size_before = dbsize(&redis).await;
    let rows_before = row_counts(&app);
    let writes_before = app.writes();

    // Act: 10,000 unauthenticated starts, 16 at a time.
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let http = app.http.clone();
        let url = format!("{}/auth/twitch", app.address);
        clients.spawn(async move {
            let mut redirects = 0;
            for _ in 0..625 {
                let response = http.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 302);
                assert!(response.headers().contains_key("set-cookie"));
                redirects += 1;
            }
            redirects
        });
    }
    let mut redirects = 0;
    while let Some(done) = clients.join_next().await {
        redirects += done.unwrap();
    }

    // Assert: 10,000 states handed out, not one stored.
    assert_eq!(redirects, 10_000);
    assert_eq!(dbsize(&redis).await, size_before);
    assert_eq!(redis_keys(&redis).await, keys_before);
    assert_eq!(row_counts(&app), rows_before);
    assert_eq!(app.writes(), writes_before);
    // A full login still works afterwards, and marks only its own state used.
    let browser = app.browser();
    let page = browser.start_login().await;
    let callback = browser.decide(&page, "authorize").await;
    assert_eq!(location(&browser.get(&callback).await), "/success");
    let used = format!("oauth:state:{}", page.params["state"]);
    assert!(redis_keys(&redis).await.contains(&used));
}

#[tokio::test]
async fn logging_in_again_from_the_same_browser_ends_its_previous_session() {
    // Arrange: this browser holds a session; another browser holds one too.
    let app = TestApp::spawn(&[]).await;
    let previous = format!("avatar_session={}", session_cookie(&app).await);
    let other_browser = format!("avatar_session={}", session_cookie(&app).await);
    assert_eq!(
        app.status_with_cookie(&previous).await["authenticated"],
        true
    );

    // Act: the same browser logs in again, sending its session cookie along.
    let login = hand_login_until_consent(&app).await;
    let callback = callback_with_cookies(
        &app,
        &login.callback,
        &[binding_cookie(&login.binding), previous.clone()],
    )
    .await;

    // Assert: the new session works, the previous one is refused, the other browser's stays.
    assert_eq!(location(&callback), "/success");
    let new = avatar_tests::set_cookie(&callback, "avatar_session")
        .and_then(|v| v.split(';').next().map(str::to_owned))
        .unwrap();
    assert_eq!(app.status_with_cookie(&new).await["authenticated"], true);
    assert_eq!(
        app.status_with_cookie(&previous).await["authenticated"],
        false,
        "the replaced session no longer opens anything"
    );
    assert_eq!(
        app.status_with_cookie(&other_browser).await["authenticated"],
        true
    );
    let conn = rusqlite::Connection::open(app.dir.path().join("data.sqlite")).unwrap();
    let revoked: i64 = conn
        .query_row(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(revoked, 1);
}

#[tokio::test]
async fn a_sealed_token_moved_to_another_users_row_does_not_open() {
    // Arrange: the demo streamer logs in (tokens sealed by the login), and a second user's
    // row is written through the store.
    let app = TestApp::spawn(&[]).await;
    assert_eq!(location(&app.browser().log_in().await), "/success");
    let cipher = &app.app.cipher;
    let other = "777000";
    app.app
        .store
        .record_twitch_login(TwitchLogin {
            twitch_user_id: user_id(other),
            login: "other".into(),
            display_name: "Other".into(),
            profile_image_url: None,
            access_token_sealed: seal_token(
                cipher,
                &user_id(other),
                "twitch",
                TokenKind::Access,
                "a2",
            ),
            refresh_token_sealed: Some(seal_token(
                cipher,
                &user_id(other),
                "twitch",
                TokenKind::Refresh,
                "r2",
            )),
            scopes: vec!["chat:read".into()],
            expires_at: None,
            session_id_hash: vec![7; 32],
            session_expires_at: shared::domain::now_ms() + 60_000,
            replaced_session_id_hash: None,
        })
        .await
        .unwrap();
    let own = app
        .app
        .store
        .twitch_tokens(&user_id(other))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.open_access(cipher).unwrap().expose(), "a2");

    // Act: someone with write access to the database copies the demo streamer's sealed
    // tokens into the other user's row.
    let conn = rusqlite::Connection::open(app.dir.path().join("data.sqlite")).unwrap();
    let moved = conn
        .execute(
            "UPDATE provider_tokens SET
                access_token_enc = (SELECT access_token_enc FROM provider_tokens
                                    WHERE twitch_user_id = '141981764' AND provider = 'twitch'),
                refresh_token_enc = (SELECT refresh_token_enc FROM provider_tokens
                                     WHERE twitch_user_id = '141981764' AND provider = 'twitch')
             WHERE twitch_user_id = ?1 AND provider = 'twitch'",
            [other],
        )
        .unwrap();
    assert_eq!(moved, 1);
    drop(conn);

    // Assert: in the other row they open to nothing; in their own row they still open.
    let stolen = app
        .app
        .store
        .twitch_tokens(&user_id(other))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stolen.open_access(cipher).err(),
        Some(CryptoError::Tampered)
    );
    assert_eq!(
        stolen.open_refresh(cipher).map(|r| r.err()),
        Some(Some(CryptoError::Tampered))
    );
    let genuine = app.demo_user_tokens().await;
    let access = genuine.open_access(cipher).unwrap();
    assert!(app.twitch.issued_tokens().contains(access.expose()));
    assert!(genuine.open_refresh(cipher).unwrap().is_ok());
}

#[tokio::test]
async fn a_callback_completed_on_one_instance_is_refused_as_replayed_on_another() {
    // Arrange: two instances sharing Redis and SESSION_SECRET (the harness gives both the
    // same key); the login completes on the first.
    let redis = RedisServer::start();
    let first = TestApp::spawn(&[("REDIS_URL", &redis.url())]).await;
    let second = TestApp::spawn(&[("REDIS_URL", &redis.url())]).await;
    let login = hand_login_until_consent(&first).await;
    let cookies = [binding_cookie(&login.binding)];
    let done = callback_with_cookies(&first, &login.callback, &cookies).await;
    assert_eq!(location(&done), "/success");

    // Act: the same callback, cookie and all, sent to the second instance.
    let path = login.callback.split_once("/auth/").unwrap().1;
    let replay = callback_with_cookies(
        &second,
        &format!("{}/auth/{path}", second.address),
        &cookies,
    )
    .await;

    // Assert: the shared marker refused it before the second instance asked Twitch.
    crate::login::assert_refused(replay, 400, "state_replayed").await;
    assert_eq!(second.twitch.token_requests(), 0);
    assert_eq!(second.rows("sessions"), 0);
}
