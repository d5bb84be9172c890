//! Connecting DonationAlerts from the dashboard, end to end over real HTTP against the fake
//! DonationAlerts: the connection stored sealed with its baseline, the status API, the
//! dashboard, disconnecting; every refusal a page naming its reason, with nothing written.

use std::sync::Arc;
use std::time::Duration;

use avatar_tests::{RedisServer, TestApp, location, set_cookie};
use fake_providers::donationalerts::{ApiFailure, NewDonation, RequestKind};
use fake_providers::twitch::FakeUser;
use shared::coordination::RateLimit;
use shared::domain::TwitchUserId;
use shared::poll::StopSignal;
use shared::poll::cache::StreamerCache;
use shared::poll::schedule::PollOutcome;
use shared::poll::streamer::{PollContext, poll_streamer};

use crate::login::error_code;

/// Connect starts a session may make a minute (see `web::donationalerts`).
const CONNECT_STARTS_PER_MINUTE: usize = 5;

fn donation(message: &str) -> NewDonation {
    NewDonation {
        da_user_id: None,
        username: Some("Viewer".into()),
        message: message.into(),
        amount: serde_json::Number::from(100),
        currency: "RUB".into(),
        created_at: None,
    }
}

/// Rows of the streamer's DonationAlerts connection: its link and its tokens.
fn connection_rows(app: &TestApp) -> i64 {
    let conn = rusqlite::Connection::open(app.app.store.path()).unwrap();
    let tokens: i64 = conn
        .query_row(
            "SELECT count(*) FROM provider_tokens WHERE provider = 'donationalerts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    tokens + app.rows("donationalerts_links")
}

#[tokio::test]
async fn a_logged_in_streamer_connects_donationalerts_and_history_is_not_news() {
    // Arrange: a donation made before connecting
    let app = TestApp::spawn(&[]).await;
    let browser = app.browser();
    browser.log_in().await;
    let old = app.donationalerts.donate(donation("before connecting"));

    // Act
    let callback = browser.connect_donationalerts().await;

    // Assert
    assert_eq!(callback.status(), 302);
    assert_eq!(location(&callback), "/success");
    let status: serde_json::Value = browser
        .get("/api/donationalerts/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        status,
        serde_json::json!({"connected": true, "status": "active", "da_user_id": 7_130_000,
                           "needs_reauth": false, "realtime": true})
    );
    let conn = rusqlite::Connection::open(app.app.store.path()).unwrap();
    let (cursor, name): (i64, String) = conn
        .query_row(
            "SELECT poll_cursor, da_name FROM donationalerts_links",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        cursor, old.id,
        "the newest donation at connect time is the baseline"
    );
    assert_eq!(name, "Demo Streamer");
    let sealed: Vec<u8> = conn
        .query_row(
            "SELECT access_token_enc FROM provider_tokens WHERE provider = 'donationalerts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let issued = app.donationalerts.issued_tokens();
    assert!(
        !sealed
            .windows(issued[0].len())
            .any(|w| w == issued[0].as_bytes()),
        "the token is stored sealed"
    );
    let dashboard = browser.get("/success").await.text().await.unwrap();
    assert!(
        dashboard.contains("data-state=\"connected\""),
        "{dashboard}"
    );
    assert!(dashboard.contains("id=\"donationalerts-disconnect\""));
    assert!(
        !dashboard.contains("id=\"realtime-reconnect\""),
        "a grant with realtime alerts needs no reconnect: {dashboard}"
    );
}

/// The dashboard as `browser` sees it in `lang` (`Accept-Language`).
async fn dashboard_in(browser: &avatar_tests::Browser, lang: &str) -> String {
    browser
        .client
        .get(format!("{}/success", browser.base))
        .header("Accept-Language", lang)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn donationalerts_status(browser: &avatar_tests::Browser) -> serde_json::Value {
    browser
        .get("/api/donationalerts/status")
        .await
        .json()
        .await
        .unwrap()
}

/// Stores the demo streamer's DonationAlerts connection as one made before realtime alerts:
/// tokens the fake issued for the two scopes DA_SCOPES used to ask for, stored with them.
async fn connect_with_old_scopes(app: &TestApp) {
    use shared::store::accounts::{TokenKind, seal_token};
    const OLD_SCOPES: &[&str] = &["oauth-user-show", "oauth-donation-index"];
    let streamer = TwitchUserId::parse(&FakeUser::demo().id).unwrap();
    let issued = app.donationalerts.issue_tokens(7_130_000, OLD_SCOPES);
    let seal =
        |kind, token: &str| seal_token(&app.app.cipher, &streamer, "donationalerts", kind, token);
    app.app
        .store
        .connect_donationalerts(shared::store::donationalerts::DonationAlertsConnection {
            streamer_twitch_id: streamer.clone(),
            da_user_id: shared::domain::DaUserId(7_130_000),
            da_name: Some("Demo Streamer".into()),
            access_token_sealed: seal(TokenKind::Access, &issued.access_token),
            refresh_token_sealed: Some(seal(TokenKind::Refresh, &issued.refresh_token)),
            scopes: OLD_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: None,
            initial_cursor: Some(0),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_streamer_connected_before_realtime_alerts_is_asked_to_reconnect_and_then_is_not() {
    // Arrange: the streamer's grant predates oauth-donation-subscribe (the two scopes
    // DA_SCOPES used to ask for), while DA_SCOPES now asks for it.
    let app = TestApp::spawn(&[]).await;
    assert!(
        app.app
            .config
            .donationalerts
            .scopes
            .iter()
            .any(|s| s == shared::config::DONATION_SUBSCRIBE_SCOPE),
        "the default DA_SCOPES ask for realtime alerts"
    );
    let browser = app.browser();
    browser.log_in().await;
    connect_with_old_scopes(&app).await;

    // Act
    let status = donationalerts_status(&browser).await;
    let russian = dashboard_in(&browser, "ru").await;
    let english = dashboard_in(&browser, "en").await;

    // Assert: connected (polled), not realtime; the page offers the connect button.
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["realtime"], false, "{status}");
    assert!(russian.contains("id=\"realtime-reconnect\""), "{russian}");
    assert!(
        russian.contains("Переподключите DonationAlerts, чтобы донаты приходили мгновенно"),
        "{russian}"
    );
    assert!(
        russian.contains(
            "<a class=\"button\" id=\"donationalerts-realtime-connect\" href=\"/auth/donationalerts\">"
        ),
        "{russian}"
    );
    assert!(
        english.contains("Reconnect DonationAlerts for realtime alerts"),
        "{english}"
    );
    assert!(english.contains("data-state=\"connected\""), "{english}");

    // Act: the streamer follows the button and grants what DA_SCOPES asks for now.
    let callback = browser.connect_donationalerts().await;

    // Assert: realtime, and no more notice.
    assert_eq!(location(&callback), "/success");
    let status = donationalerts_status(&browser).await;
    assert_eq!(status["realtime"], true, "{status}");
    let dashboard = dashboard_in(&browser, "ru").await;
    assert!(
        dashboard.contains("data-state=\"connected\""),
        "{dashboard}"
    );
    assert!(
        !dashboard.contains("id=\"realtime-reconnect\""),
        "{dashboard}"
    );
}

#[tokio::test]
async fn without_the_subscribe_scope_in_da_scopes_no_reconnect_is_offered() {
    // An operator who keeps the old DA_SCOPES: a reconnect would grant nothing more.
    let app = TestApp::spawn(&[("DA_SCOPES", "oauth-user-show oauth-donation-index")]).await;
    let browser = app.browser();
    browser.log_in().await;
    browser.connect_donationalerts().await;

    let status = donationalerts_status(&browser).await;
    let dashboard = dashboard_in(&browser, "ru").await;

    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["realtime"], false, "{status}");
    assert!(
        dashboard.contains("data-state=\"connected\""),
        "{dashboard}"
    );
    assert!(
        !dashboard.contains("id=\"realtime-reconnect\""),
        "{dashboard}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_donation_after_connecting_shows_on_the_dashboard_once_polled() {
    // Arrange
    let app = TestApp::spawn(&[("DA_POLL_INTERVAL_MS", "200")]).await;
    let browser = app.browser();
    browser.log_in().await;
    browser.connect_donationalerts().await;
    let poller = app.app.poller().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        poller
            .run(None, async move {
                let _ = stopped.await;
            })
            .await
    });

    // Act
    app.donationalerts
        .donate(donation("<b>Привет</b> со стрима 🎉"));

    // Assert
    avatar_tests::wait_until(
        "the donation on the dashboard",
        Duration::from_secs(20),
        || {
            let browser = &browser;
            async move {
                let html = browser.get("/success").await.text().await.unwrap();
                // Shown, and escaped: the donor's markup is text on the page.
                assert!(!html.contains("<b>Привет"), "{html}");
                html.contains("&#60;b&#62;Привет&#60;/b&#62; со стрима 🎉")
            }
        },
    )
    .await;
    let _ = stop.send(());
    running.await.unwrap();
}

#[tokio::test]
async fn disconnecting_forgets_the_tokens_and_the_status_says_so() {
    // Arrange
    let app = TestApp::spawn(&[]).await;
    let browser = app.browser();
    browser.log_in().await;
    browser.connect_donationalerts().await;

    // Act
    let disconnected = browser
        .post_from_dashboard("/api/donationalerts/disconnect")
        .await;

    // Assert
    assert_eq!(disconnected.status(), 303);
    assert_eq!(connection_rows(&app), 0);
    let status: serde_json::Value = browser
        .get("/api/donationalerts/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["connected"], false);
    assert_eq!(status["status"], serde_json::Value::Null);
    let dashboard = browser.get("/success").await.text().await.unwrap();
    assert!(dashboard.contains("id=\"donationalerts-connect\""));
}

#[tokio::test]
async fn disconnecting_twitch_also_ends_the_donationalerts_link_and_its_polling() {
    // Arrange: logged in, DonationAlerts connected, one poll done, so the poller's cache
    // holds the opened tokens
    let app = TestApp::spawn(&[]).await;
    let browser = app.browser();
    browser.log_in().await;
    let before_connecting = browser.get("/success").await.text().await.unwrap();
    browser.connect_donationalerts().await;
    let cache = Arc::new(StreamerCache::default());
    let poller = PollContext {
        parts: Arc::new(app.app.poll_parts().unwrap()),
        cache: cache.clone(),
        min_gap: Duration::ZERO,
        stop: StopSignal::default(),
        subscribed_since: None,
    };
    let streamer = TwitchUserId::parse(&FakeUser::demo().id).unwrap();
    let poll = || poll_streamer(&poller, &streamer);
    app.donationalerts.donate(donation("before disconnecting"));
    assert_eq!(poll().await, PollOutcome::Polled { new_donations: 1 });
    assert!(cache.get(&streamer).is_some(), "the poll filled the cache");
    let dashboard = browser.get("/success").await.text().await.unwrap();

    // Act
    let disconnected = browser.post_from_dashboard("/auth/twitch/disconnect").await;
    let after = app.donationalerts.donate(donation("after disconnecting"));
    let asked_before = app.donationalerts.request_count(RequestKind::Donations);
    let outcome = poll().await;

    // Assert: the next poll neither asks DonationAlerts with the cached tokens nor records anything
    assert_eq!(outcome, PollOutcome::NeedsReauth);
    assert_eq!(
        app.donationalerts.request_count(RequestKind::Donations),
        asked_before,
        "DonationAlerts was asked after the disconnect"
    );
    assert!(
        cache.get(&streamer).is_none(),
        "the cache forgot the tokens"
    );
    let conn = rusqlite::Connection::open(app.app.store.path()).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [after.id], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM donations WHERE da_donation_id = ?1"),
        0,
        "a donation after the disconnect was recorded"
    );
    assert_eq!(
        count("SELECT count(*) FROM event_outbox WHERE event_id LIKE '%:' || ?1"),
        0,
        "a donation after the disconnect was published"
    );
    // Link and tokens are gone, with the Twitch tokens and the sessions
    assert_eq!(disconnected.status(), 303);
    assert_eq!(app.rows("donationalerts_links"), 0);
    assert_eq!(app.rows("provider_tokens"), 0);
    assert_eq!(browser.status().await["authenticated"], false);
    assert!(app.app.store.poll_targets().await.unwrap().is_empty());
    // The dashboard said so before the button was pressed
    assert!(
        !before_connecting.contains("id=\"disconnect-note\""),
        "no DonationAlerts note while it is not connected: {before_connecting}"
    );
    let note = dashboard
        .split("id=\"disconnect-note\">")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_else(|| panic!("the dashboard warns before disconnecting: {dashboard}"));
    assert!(note.contains("DonationAlerts"), "{note}");
}

#[tokio::test]
async fn a_revoked_connection_shows_need_reauth_on_the_dashboard_and_in_the_status_api() {
    // Arrange: connected, then revoked at DonationAlerts; a poll finds out
    let app = TestApp::spawn(&[]).await;
    let browser = app.browser();
    browser.log_in().await;
    browser.connect_donationalerts().await;
    app.donationalerts.revoke_tokens_of(7_130_000);
    let poller = app.app.poller().unwrap();

    // Act
    poller
        .run_until(tokio::time::Instant::now() + Duration::from_secs(12))
        .await;

    // Assert
    let status: serde_json::Value = browser
        .get("/api/donationalerts/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "need_reauth", "{status}");
    assert_eq!(status["needs_reauth"], true);
    assert_eq!(status["connected"], false);
    let dashboard = browser.get("/success").await.text().await.unwrap();
    assert!(
        dashboard.contains("data-state=\"need_reauth\""),
        "{dashboard}"
    );
    assert!(dashboard.contains("href=\"/auth/donationalerts\""));
}

#[tokio::test]
async fn connect_refusals_are_pages_naming_their_reason_and_write_nothing() {
    let app = TestApp::spawn(&[("PROVIDER_TIMEOUT_MS", "700")]).await;

    // Without a session: a page asking to log in first.
    let stranger = app.browser();
    let refused = stranger.get("/auth/donationalerts").await;
    assert_eq!(refused.status(), 401);
    let html = refused.text().await.unwrap();
    assert_eq!(error_code(&html), "login_required", "{html}");
    assert!(html.contains("href=\"/auth/twitch\""));

    let browser = app.browser();
    browser.log_in().await;
    let writes_before = app.writes();

    // A state started in another browser.
    let other = app.browser();
    other.log_in().await;
    let page = other.start_connect().await;
    let callback = other.decide(&page, "authorize").await;
    let foreign = browser.get(&callback).await;
    assert_eq!(foreign.status(), 400);
    let html = foreign.text().await.unwrap();
    assert_eq!(error_code(&html), "state_cookie_missing", "{html}");

    // A replayed callback: refused by the state check, DonationAlerts not asked again.
    let page = browser.start_connect().await;
    let callback = browser.decide(&page, "authorize").await;
    // Read the callback's query before the browser's cookie is cleared by its first use.
    let cookie_jar_callback = callback.clone();
    browser.get(&cookie_jar_callback).await;
    let connected_writes = app.writes();
    let token_requests = app
        .donationalerts
        .request_count(fake_providers::donationalerts::RequestKind::Token);
    let replay = app.browser();
    replay.log_in().await;
    let replayed = replay.get(&callback).await;
    assert_eq!(replayed.status(), 400);
    assert_eq!(
        app.donationalerts
            .request_count(fake_providers::donationalerts::RequestKind::Token),
        token_requests
    );
    browser
        .post_from_dashboard("/api/donationalerts/disconnect")
        .await;
    let writes_after_disconnect = app.writes();

    // DonationAlerts failing (500) and not answering in time: 502 and 504.
    for (failure, status, code) in [
        (ApiFailure::ServerError, 502, "provider_failed"),
        (
            ApiFailure::Slow(Duration::from_secs(3)),
            504,
            "provider_timeout",
        ),
    ] {
        app.donationalerts.set_failure(None, failure);
        let failed = browser.connect_donationalerts().await;
        assert_eq!(failed.status(), status);
        let html = failed.text().await.unwrap();
        assert_eq!(error_code(&html), code, "{html}");
        assert!(
            html.contains("DonationAlerts"),
            "the page names the provider: {html}"
        );
        app.donationalerts.set_failure(None, ApiFailure::None);
    }

    // Nothing was written by any refusal.
    assert!(connected_writes > writes_before);
    assert_eq!(app.writes(), writes_after_disconnect);
    assert_eq!(app.rows("donationalerts_links"), 0);
}

/// The `Retry-After` of a response, in seconds.
fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After in seconds: {:?}", response.headers()))
}

#[tokio::test]
async fn with_the_shared_budget_spent_the_callback_asks_donationalerts_nothing_and_answers_503() {
    // Arrange: a budget of one request a minute, spent a moment ago by a poll
    let app = TestApp::spawn(&[("DA_RATE_LIMIT_PER_MIN", "1")]).await;
    let browser = app.browser();
    browser.log_in().await;
    let page = browser.start_connect().await;
    let callback = browser.decide(&page, "authorize").await;
    let spent = app
        .app
        .coordinator
        .budget()
        .rate_limit("ratelimit:donationalerts", &RateLimit::per_minute(1))
        .await
        .unwrap();
    assert!(spent.allowed);
    let writes_before = app.writes();

    // Act
    let refused = browser.get(&callback).await;

    // Assert
    assert_eq!(refused.status(), 503);
    assert!(retry_after(&refused) >= 1);
    let html = refused.text().await.unwrap();
    assert_eq!(error_code(&html), "provider_budget_exhausted", "{html}");
    assert!(html.contains("через минуту"), "{html}");
    assert!(
        app.donationalerts.requests().is_empty(),
        "DonationAlerts was asked {:?}",
        app.donationalerts.requests()
    );
    assert_eq!(app.writes(), writes_before, "nothing written");
    assert_eq!(connection_rows(&app), 0);
}

#[tokio::test]
async fn the_callbacks_account_read_takes_a_grant_of_the_shared_budget_too() {
    // Arrange: a budget of one request a minute, which the code exchange takes
    let app = TestApp::spawn(&[("DA_RATE_LIMIT_PER_MIN", "1")]).await;
    let browser = app.browser();
    browser.log_in().await;
    let writes_before = app.writes();

    // Act
    let refused = browser.connect_donationalerts().await;

    // Assert
    assert_eq!(refused.status(), 503);
    let html = refused.text().await.unwrap();
    assert_eq!(error_code(&html), "provider_budget_exhausted", "{html}");
    assert_eq!(app.donationalerts.request_count(RequestKind::Token), 1);
    assert_eq!(
        app.donationalerts.request_count(RequestKind::User),
        0,
        "/api/v1/user/oauth was asked without a grant"
    );
    assert_eq!(app.writes(), writes_before, "nothing written");
    assert_eq!(connection_rows(&app), 0);
}

#[tokio::test]
async fn connect_starts_are_throttled_per_session_under_a_key_that_hides_the_session() {
    // Arrange
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url())]).await;
    let browser = app.browser();
    let login = browser.log_in().await;
    let session = set_cookie(&login, "avatar_session").expect("a session cookie");
    let session_id = session
        .trim_start_matches("avatar_session=")
        .split(['.', ';'])
        .next()
        .unwrap()
        .to_owned();

    // Act: more starts within a minute than a person connecting ever needs
    let mut statuses = Vec::new();
    for _ in 0..CONNECT_STARTS_PER_MINUTE {
        statuses.push(browser.get("/auth/donationalerts").await.status().as_u16());
    }
    let throttled = browser.get("/auth/donationalerts").await;
    let other = app.browser();
    other.log_in().await;
    let other_start = other.get("/auth/donationalerts").await;

    // Assert
    assert!(statuses.iter().all(|s| *s == 302), "{statuses:?}");
    assert_eq!(throttled.status(), 429);
    assert!(retry_after(&throttled) >= 1);
    assert!(
        set_cookie(&throttled, "avatar_oauth_donationalerts").is_none(),
        "no flow started"
    );
    let html = throttled.text().await.unwrap();
    assert_eq!(error_code(&html), "too_many_attempts", "{html}");
    assert_eq!(
        other_start.status(),
        302,
        "another session has its own allowance"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ratelimit:connect:*")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "one key per session: {keys:?}");
    assert!(
        keys.iter().all(|k| !k.contains(&session_id)),
        "a raw session id in a Redis key: {keys:?}"
    );
}
