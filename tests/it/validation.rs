//! The hourly validation of stored Twitch tokens against the fake Twitch, real SQLite and a
//! private Redis: what one run does with valid, expired and revoked tokens, how runs cut
//! off by their deadline continue so that no token waits more than an hour, and how a
//! validation corrects the stored expiry to Twitch's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use avatar_tests::twitch_users::{SeededUser, add_session, seed_twitch_users};
use avatar_tests::{RedisServer, TestApp};
use fake_providers::twitch::{DEFAULT_ACCESS_TOKEN_TTL, FakeUser};
use shared::domain::now_ms;
use shared::tokens::validation::ValidationReport;
use tokio::time::Instant;

const MINUTE: i64 = 60_000;

/// `(status, last_validated_at, access sealed is empty, refresh sealed)` of one row.
type TokenRow = (String, Option<i64>, bool, Option<Vec<u8>>);

/// Every stored Twitch token row, by user.
fn token_rows(app: &TestApp) -> BTreeMap<String, TokenRow> {
    let conn = rusqlite::Connection::open(app.dir.path().join("data.sqlite")).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT twitch_user_id, status, last_validated_at, length(access_token_enc) = 0,
                    refresh_token_enc
             FROM provider_tokens WHERE provider = 'twitch'",
        )
        .unwrap();
    statement
        .query_map([], |r| {
            Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn live_sessions(app: &TestApp, user: &str) -> i64 {
    let conn = rusqlite::Connection::open(app.dir.path().join("data.sqlite")).unwrap();
    conn.query_row(
        "SELECT count(*) FROM sessions WHERE twitch_user_id = ?1 AND revoked_at IS NULL",
        [user],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_over_a_thousand_tokens_validates_refreshes_and_ends_the_revoked() {
    // Arrange: 1,000 users; Twitch expired 50 access tokens and revoked 10 grants outright.
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[
        ("REDIS_URL", &redis.url()),
        ("TWITCH_VALIDATE_RATE_PER_SEC", "5000"),
        ("TWITCH_VALIDATE_CONCURRENCY", "32"),
    ])
    .await;
    let users = seed_twitch_users(&app.app, &app.twitch, 5_000_000, 1000).await;
    let expired: Vec<&SeededUser> = users[100..150].iter().collect();
    let revoked: Vec<&SeededUser> = users[500..510].iter().collect();
    for user in &expired {
        app.twitch.expire_access_token(&user.tokens.access_token);
    }
    for user in &revoked {
        app.twitch
            .invalidate_access_token(&user.tokens.access_token);
        app.twitch
            .invalidate_refresh_token(&user.tokens.refresh_token);
    }
    for user in revoked
        .iter()
        .chain(&users[0..10].iter().collect::<Vec<_>>())
    {
        add_session(&app.app, &user.id).await;
    }
    let validator = app.app.token_validator().expect("Twitch is configured");
    let now = now_ms();

    // Act
    let report = validator
        .run_at(now, Instant::now() + Duration::from_secs(120))
        .await;

    // Assert: the counts …
    assert_eq!(
        (
            report.validated,
            report.refreshed,
            report.revoked,
            report.errors,
            report.cut_off
        ),
        (940, 50, 10, 0, false),
        "{report:?}"
    );
    // … and what each kind of token became.
    let rows = token_rows(&app);
    let expired_ids: BTreeSet<&str> = expired.iter().map(|u| u.id.as_str()).collect();
    let revoked_ids: BTreeSet<&str> = revoked.iter().map(|u| u.id.as_str()).collect();
    for user in &users {
        let (status, validated_at, access_deleted, refresh) = &rows[&user.id];
        if revoked_ids.contains(user.id.as_str()) {
            assert_eq!(status, "need_reauth");
            assert!(*access_deleted && refresh.is_none(), "dead tokens deleted");
            assert_eq!(live_sessions(&app, &user.id), 0, "sessions ended");
        } else if expired_ids.contains(user.id.as_str()) {
            assert_eq!(status, "active");
            assert!(validated_at.is_some_and(|at| at >= now));
            let stored = app
                .app
                .store
                .twitch_tokens(&shared::domain::TwitchUserId::parse(&user.id).unwrap())
                .await
                .unwrap()
                .unwrap();
            let new_refresh = stored.open_refresh(&app.app.cipher).unwrap().unwrap();
            assert_ne!(new_refresh.expose(), &user.tokens.refresh_token);
            assert!(app.twitch.refresh_token_is_live(new_refresh.expose()));
        } else {
            assert_eq!((status.as_str(), *validated_at), ("active", Some(now)));
        }
    }
    for user in &users[0..10] {
        assert_eq!(live_sessions(&app, &user.id), 1, "healthy sessions kept");
    }
    // … and the bots were told, once per revoked grant.
    let mut conn = redis.connection().await;
    let entries: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg("avatar:events")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let revoked_events: BTreeSet<String> = stream_fields(&entries)
        .into_iter()
        .filter(|fields| fields["type"] == "token.revoked")
        .map(|fields| {
            let data: serde_json::Value = serde_json::from_str(&fields["data"]).unwrap();
            assert_eq!(data["provider"], "twitch");
            fields["streamerId"].clone()
        })
        .collect();
    assert_eq!(
        revoked_events,
        revoked_ids.iter().map(|id| id.to_string()).collect()
    );

    // A second run finds nothing due.
    let again = validator
        .run_at(now + MINUTE, Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(
        (
            again.validated,
            again.refreshed,
            again.revoked,
            again.errors
        ),
        (0, 0, 0, 0)
    );
}

/// The fields of every entry of an XRANGE reply.
fn stream_fields(entries: &[redis::Value]) -> Vec<BTreeMap<String, String>> {
    entries
        .iter()
        .map(|entry| {
            let redis::Value::Array(parts) = entry else {
                panic!("an entry is [id, fields]")
            };
            let fields: Vec<String> = redis::from_redis_value(parts[1].clone()).unwrap();
            fields
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_cut_off_by_their_deadline_continue_and_no_token_waits_more_than_an_hour() {
    // Arrange: 60 tokens; a run may validate at most 40 a second and lasts one second, so
    // the first run cannot finish. Runs come every 10 minutes of virtual time; a token is due
    // 40 minutes after its validation, which leaves two runs to spare before the hour.
    let app = TestApp::spawn(&[
        ("TWITCH_VALIDATE_RATE_PER_SEC", "40"),
        ("TWITCH_VALIDATE_CONCURRENCY", "8"),
        ("TWITCH_VALIDATE_DUE_AFTER_MS", "2400000"),
    ])
    .await;
    app.twitch.set_validate_latency(Duration::from_millis(10));
    let users = seed_twitch_users(&app.app, &app.twitch, 7_000_000, 60).await;
    let validator = app.app.token_validator().unwrap();
    let start = now_ms();
    let validated_at = |app: &TestApp| -> BTreeMap<String, Option<i64>> {
        token_rows(app)
            .into_iter()
            .map(|(id, (_, at, _, _))| (id, at))
            .collect()
    };
    let run = |at: i64| validator.run_at(at, Instant::now() + Duration::from_secs(1));

    // Act and assert: the first run is cut off; the second continues with the others.
    let first: ValidationReport = run(start).await;
    assert!(first.cut_off, "{first:?}");
    assert!(first.validated > 0 && first.validated < 60, "{first:?}");
    let after_first = validated_at(&app);
    let second = run(start + 10 * MINUTE).await;
    let after_second = validated_at(&app);
    let revalidated = after_first
        .iter()
        .filter(|(id, at)| at.is_some() && after_second[*id] != **at)
        .count();
    assert_eq!(
        revalidated, 0,
        "the second run started with the tokens the first missed"
    );
    assert_eq!(
        after_second.values().filter(|at| at.is_some()).count(),
        first.validated + second.validated
    );

    // Two hours of runs every ten minutes: no token is ever older than an hour.
    for k in 2..=12 {
        let now = start + k * 10 * MINUTE;
        run(now).await;
        for user in &users {
            let last = validated_at(&app)[&user.id].unwrap_or(start);
            assert!(
                now - last <= 60 * MINUTE,
                "at +{k}0 min, user {} was last validated {} min before",
                user.id,
                (now - last) / MINUTE
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avatar_local_validates_at_start_and_refreshes_a_refused_token_with_default_timeouts() {
    // Arrange: a streamer logged in an hour ago; then Twitch stopped accepting the access
    // token.
    let app = TestApp::spawn(&[]).await;
    app.browser().log_in().await;
    app.app
        .store
        .write(|conn| {
            conn.execute("UPDATE provider_tokens SET last_validated_at = 0", [])
                .map(|_| ())
        })
        .await
        .unwrap();
    let issued = app.twitch.issued_tokens();
    app.twitch.expire_access_token(&issued[0]);
    let mut vars: Vec<(String, String)> = avatar_tests::base_vars(app.dir.path())
        .into_iter()
        .collect();
    vars.extend(app.twitch.app_variables(app.twitch_address));

    // Act: avatar-local starts over the same database, PROVIDER_TIMEOUT_MS at its default.
    let server = avatar_tests::LocalServer::start(&["--port", "0"], &vars, "info").await;

    // Assert: its first validation run refreshed the token and stored the new one.
    avatar_tests::wait_until(
        "a live token to be stored",
        Duration::from_secs(20),
        || async {
            let stored = app.demo_user_tokens().await;
            let access = stored.open_access(&app.app.cipher).unwrap();
            app.twitch.access_token_is_live(access.expose())
        },
    )
    .await;
    assert_eq!(app.twitch.token_requests(), 2, "one exchange, one refresh");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_corrects_a_stored_expiry_to_the_lifetime_twitch_reports() {
    // Arrange: a streamer logged in (Twitch's token lives four hours), but the stored expiry
    // says a month, so the chat-token route would never refresh it before Twitch refuses it.
    let before = now_ms();
    let app = TestApp::spawn(&[]).await;
    app.browser().log_in().await;
    let user = FakeUser::demo().id;
    app.set_twitch_token_expiry(&user, now_ms() + 30 * 24 * 60 * MINUTE)
        .await;
    let validator = app.app.token_validator().expect("Twitch is configured");

    // Act: the next run an hour later (virtual time) validates it.
    let report = validator
        .run_at(
            now_ms() + 60 * MINUTE,
            Instant::now() + Duration::from_secs(30),
        )
        .await;

    // Assert: the stored expiry is Twitch's: four hours after the login.
    let after = now_ms();
    assert_eq!((report.validated, report.errors), (1, 0), "{report:?}");
    let ttl = DEFAULT_ACCESS_TOKEN_TTL.as_millis() as i64;
    let stored = app.demo_user_tokens().await.expires_at.expect("an expiry");
    assert!(
        (before + ttl - 2_000..=after + ttl).contains(&stored),
        "stored expiry {stored} is not four hours after the login ({before})"
    );
}
