//! The Twitch login end to end over real HTTP against the fake Twitch: the happy path in
//! both coordination modes, every refusal (a 4xx page and nothing written), sessions,
//! disconnect, key rotation.

use std::time::Duration;

use avatar_tests::{Browser, RedisServer, TestApp, location, wait_until};
use fake_providers::twitch::{FakeUser, TokenFailure};

pub(crate) fn assert_error_page(status: reqwest::StatusCode, body: &str, expected: u16) {
    assert_eq!(status.as_u16(), expected, "{body}");
    assert!(
        body.contains("<html"),
        "an error page, not bare text: {body}"
    );
    assert!(
        body.contains("href=\"/auth/twitch\"") || body.contains("href=\"/\""),
        "a way back: {body}"
    );
}

/// The stable error code an error page shows ("Код ошибки: state_replayed (HTTP 400)").
pub(crate) fn error_code(body: &str) -> &str {
    body.split("Код ошибки: ")
        .nth(1)
        .or_else(|| body.split("Error code: ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no error code on the page: {body}"))
}

/// Asserts an error page with `status` that names `code` as the reason.
pub(crate) async fn assert_refused(response: reqwest::Response, status: u16, code: &str) {
    let got = response.status();
    let body = response.text().await.unwrap();
    assert_error_page(got, &body, status);
    assert_eq!(error_code(&body), code, "{body}");
}

/// A login that completes: the dashboard greets the user and everything is stored sealed.
async fn login_works(app: &TestApp) {
    // Arrange
    let browser = app.browser();
    let landing = browser.get("/").await.text().await.unwrap();
    assert!(landing.contains("href=\"/auth/twitch\""), "{landing}");
    assert!(landing.contains("Вход"));

    // Act
    let callback = browser.log_in().await;

    // Assert
    assert_eq!(callback.status(), 302);
    assert_eq!(location(&callback), "/success");
    let dashboard = browser.get("/success").await;
    assert_eq!(dashboard.status(), 200);
    let html = dashboard.text().await.unwrap();
    assert!(html.contains("Demo Streamer"), "{html}");
    assert!(html.contains("chat:read"));
    assert!(
        html.contains("Не подключено"),
        "DonationAlerts placeholder: {html}"
    );
    let status = browser.status().await;
    assert_eq!(status["authenticated"], true);
    assert_eq!(status["user"]["twitchUserId"], "141981764");
    assert_eq!(status["user"]["displayName"], "Demo Streamer");
    assert_eq!(app.rows("users"), 1);
    assert_eq!(app.rows("provider_tokens"), 1);
    let stored = app.demo_user_tokens().await;
    let access = stored.open_access(&app.app.cipher).unwrap();
    assert!(app.twitch.issued_tokens().contains(access.expose()));
    assert_eq!(stored.status, "active");
    assert!(stored.expires_at.unwrap() > shared::domain::now_ms());
}

#[tokio::test]
async fn a_streamer_logs_in_in_single_instance_mode() {
    let app = TestApp::spawn(&[]).await;
    login_works(&app).await;
}

#[tokio::test]
async fn a_streamer_logs_in_in_redis_mode_and_only_the_callback_marks_the_state_used() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url())]).await;

    // While the browser is at Twitch, the state is only in its cookie.
    let browser = app.browser();
    let page = browser.start_login().await;
    let key = format!("oauth:state:{}", page.params["state"]);
    assert_eq!(page.params["state"].len(), 43, "256 bits, URL-safe base64");
    assert_eq!(redis.pttl(&key).await, -2, "nothing stored at the start");
    let callback = browser.decide(&page, "authorize").await;
    assert_eq!(browser.get(&callback).await.status(), 302);
    assert_eq!(redis.get(&key).await.as_deref(), Some("1"), "marked used");
    let ttl = redis.pttl(&key).await;
    assert!((1..=300_000).contains(&ttl), "PTTL {ttl}");

    login_works(&app).await;
}

#[tokio::test]
async fn english_is_served_when_the_browser_prefers_it() {
    let app = TestApp::spawn(&[]).await;
    let page = app
        .http
        .get(format!("{}/", app.address))
        .header("Accept-Language", "en-US,en;q=0.9")
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Log in") && html.contains("lang=\"en\""),
        "{html}"
    );
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
}

#[tokio::test]
async fn refused_callbacks_show_a_4xx_page_naming_the_reason_and_write_nothing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url())]).await;
    let writes_before = app.writes();

    // Missing state.
    let browser = app.browser();
    let response = browser.get("/auth/twitch/callback?code=abc").await;
    assert_refused(response, 400, "state_missing").await;

    // Unknown or garbage state: the browser holds a genuine cookie for another state.
    let browser = app.browser();
    browser.start_login().await;
    let response = browser
        .get("/auth/twitch/callback?code=abc&state=never-issued-state")
        .await;
    assert_refused(response, 400, "state_mismatch").await;

    // Started in another browser: no cookie at all, then another flow's cookie.
    let first = app.browser();
    let page = first.start_login().await;
    let callback = first.decide(&page, "authorize").await;
    let stranger = app.browser();
    assert_refused(stranger.get(&callback).await, 400, "state_cookie_missing").await;
    let other = app.browser();
    other.start_login().await;
    assert_refused(other.get(&callback).await, 400, "state_mismatch").await;

    // A tampered cookie: its signature, or the expiry it signs, altered.
    let login = hand_login_until_consent(&app).await;
    let mut bad_signature = login.binding.clone();
    let last = bad_signature.pop().unwrap();
    bad_signature.push(if last == 'A' { 'B' } else { 'A' });
    let (value, signature) = login.binding.rsplit_once('.').unwrap();
    let (state, expires) = value.rsplit_once('.').unwrap();
    let later = expires.parse::<i64>().unwrap() + 3_600_000;
    let extended = format!("{state}.{later}.{signature}");
    for cookie in [bad_signature, extended, "garbage".to_owned()] {
        let response =
            callback_with_cookies(&app, &login.callback, &[binding_cookie(&cookie)]).await;
        assert_refused(response, 400, "state_cookie_invalid").await;
    }

    // The user clicks Cancel at Twitch.
    let browser = app.browser();
    let page = browser.start_login().await;
    let callback = browser.decide(&page, "cancel").await;
    assert!(callback.contains("error=access_denied"));
    assert_refused(browser.get(&callback).await, 403, "provider_denied").await;

    // A code Twitch rejects.
    let browser = app.browser();
    let page = browser.start_login().await;
    let callback = browser.decide(&page, "authorize").await;
    let tampered = callback.replace("code=", "code=x");
    assert_refused(browser.get(&tampered).await, 400, "code_rejected").await;

    // The authorize redirect tampered with: another state, another redirect_uri.
    let browser = app.browser();
    let mut page = browser.start_login().await;
    page.params
        .insert("state".into(), "attacker-chosen-state".into());
    let callback = browser.decide(&page, "authorize").await;
    assert_refused(browser.get(&callback).await, 400, "state_mismatch").await;
    let mut evil = page.url.clone();
    evil.query_pairs_mut()
        .clear()
        .append_pair("client_id", &page.params["client_id"])
        .append_pair("redirect_uri", "https://evil.example/steal")
        .append_pair("response_type", "code")
        .append_pair("scope", "chat:read")
        .append_pair("state", &page.params["state"]);
    let response = browser.get(evil.as_str()).await;
    assert_eq!(
        response.status(),
        400,
        "Twitch refuses an unregistered redirect"
    );

    // Hostile query strings: 100 KB, invalid UTF-8, repeated keys.
    let browser = app.browser();
    browser.start_login().await;
    let huge = format!(
        "/auth/twitch/callback?code={}&state=x",
        "a".repeat(100 * 1024)
    );
    let status = avatar_tests::raw_get_status(&app.address, &huge).await;
    assert!((400..500).contains(&status), "{status}");
    let response = browser
        .get("/auth/twitch/callback?code=%FF%FE&state=%C3%28")
        .await;
    assert_refused(response, 400, "bad_request").await;
    let response = browser
        .get("/auth/twitch/callback?state=a&state=b&code=c")
        .await;
    assert_refused(response, 400, "bad_request").await;

    // Assert: nothing of any of it was written, and only the two codes that reached
    // Twitch (cancel never does; the rejected code did) were exchanged.
    assert_eq!(app.writes(), writes_before);
    assert_eq!(app.rows("users"), 0);
    assert_eq!(app.rows("sessions"), 0);
    assert_eq!(app.twitch.token_requests(), 1, "only the rejected code");
}

#[tokio::test]
async fn a_login_returning_after_the_state_expired_is_refused_as_expired() {
    // Arrange: states live 3 s (long enough for the fresh login at the end, even on a busy
    // machine); the browser comes back from Twitch later than that.
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url()), ("OAUTH_STATE_TTL_MS", "3000")]).await;
    let browser = app.browser();
    let page = browser.start_login().await;
    // The state was issued before start_login returned, so it has expired 3 s after this
    // (a clock read before start_login would miss however long a busy server took to issue it).
    let issued_by = shared::domain::now_ms();
    let callback = browser.decide(&page, "authorize").await;
    wait_until("the state to expire", Duration::from_secs(10), || async {
        shared::domain::now_ms() >= issued_by + 3_000
    })
    .await;

    // Act
    let response = browser.get(&callback).await;

    // Assert: refused for its age, before Twitch was asked, nothing stored anywhere.
    assert_refused(response, 400, "state_expired").await;
    assert_eq!(app.twitch.token_requests(), 0);
    let key = format!("oauth:state:{}", page.params["state"]);
    assert_eq!(redis.get(&key).await, None);
    assert_eq!(app.rows("sessions"), 0);
    // A login within the time still works.
    assert_eq!(location(&browser.log_in().await), "/success");
}

#[tokio::test]
async fn twitch_failing_gets_502_and_twitch_not_answering_in_time_gets_504() {
    // PROVIDER_TIMEOUT_MS is 1.5 s in tests.
    let app = TestApp::spawn(&[]).await;
    for (failure, status, code) in [
        (TokenFailure::ServerError, 502, "provider_failed"),
        (TokenFailure::MalformedJson, 502, "provider_failed"),
        (
            TokenFailure::Slow(Duration::from_secs(5)),
            504,
            "provider_timeout",
        ),
    ] {
        app.twitch.set_token_failure(failure);
        let browser = app.browser();
        let page = browser.start_login().await;
        let callback = browser.decide(&page, "authorize").await;

        let response = browser.get(&callback).await;

        assert_refused(response, status, code).await;
    }
    assert_eq!(app.rows("users"), 0);
    assert_eq!(app.rows("sessions"), 0);
    app.twitch.set_token_failure(TokenFailure::None);
    assert_eq!(location(&app.browser().log_in().await), "/success");
}

#[tokio::test]
async fn a_replayed_callback_is_refused_by_the_state_check_before_twitch_is_asked() {
    for redis in [None, Some(RedisServer::start())] {
        // Arrange: a completed login whose callback URL and binding cookie were copied.
        let url = redis.as_ref().map(RedisServer::url);
        let vars: Vec<(&str, &str)> = url.iter().map(|u| ("REDIS_URL", u.as_str())).collect();
        let app = TestApp::spawn(&vars).await;
        let login = hand_login_until_consent(&app).await;
        let first =
            callback_with_cookies(&app, &login.callback, &[binding_cookie(&login.binding)]).await;
        assert_eq!(first.status(), 302);
        let exchanges = app.twitch.token_requests();
        let writes = app.writes();

        // Act: the same callback again, with the same cookie.
        let replay =
            callback_with_cookies(&app, &login.callback, &[binding_cookie(&login.binding)]).await;

        // Assert: the state check refused it; Twitch never saw the code a second time.
        assert_refused(replay, 400, "state_replayed").await;
        assert_eq!(exchanges, 1);
        assert_eq!(
            app.twitch.token_requests(),
            exchanges,
            "no second code exchange"
        );
        assert_eq!(app.writes(), writes);
        assert_eq!(app.rows("sessions"), 1);
        if let Some(redis) = &redis {
            // The used marker lives no longer than the state would have.
            let ttl = redis.pttl(&format!("oauth:state:{}", login.state)).await;
            assert!((1..=300_000).contains(&ttl), "PTTL {ttl}");
        }
    }
}

#[tokio::test]
async fn logout_ends_the_session_and_a_copied_cookie_no_longer_works() {
    // Arrange: a logged-in session whose cookie we hold (and could have copied).
    let app = TestApp::spawn(&[]).await;
    let cookie = format!("avatar_session={}", session_cookie(&app).await);
    let with_cookie = |request: reqwest::RequestBuilder| request.header("Cookie", cookie.clone());
    let dashboard = with_cookie(app.http.get(format!("{}/success", app.address)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = avatar_tests::csrf_field(&dashboard);

    // Act
    let response = with_cookie(app.http.post(format!("{}/auth/logout", app.address)))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();

    // Assert: the cookie opens nothing any more.
    assert_eq!(response.status(), 303);
    let status = app.status_with_cookie(&cookie).await;
    assert_eq!(
        status["authenticated"], false,
        "a copied cookie is dead after logout"
    );
    let dashboard = with_cookie(app.http.get(format!("{}/success", app.address)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        dashboard.status(),
        303,
        "the dashboard sends it back to the landing page"
    );
}

#[tokio::test]
async fn after_logout_the_next_login_asks_twitch_for_consent_again() {
    let app = TestApp::spawn(&[]).await;
    let browser = app.browser();
    browser.log_in().await;
    let first = app.twitch.authorize_requests();
    assert!(!first[0].contains_key("force_verify"));

    assert_eq!(
        browser.post_from_dashboard("/auth/logout").await.status(),
        303
    );
    assert_eq!(browser.status().await["authenticated"], false);
    let start = browser.get("/auth/twitch").await;

    assert!(location(&start).contains("force_verify=true"));
}

/// A login made by hand up to Twitch's redirect back (reqwest's jar is opaque, and these
/// tests need the cookies as values).
pub(crate) struct HandLogin {
    /// The signed state cookie `GET /auth/twitch` set.
    pub binding: String,
    pub state: String,
    /// The callback URL Twitch redirected to after consent.
    pub callback: String,
}

pub(crate) async fn hand_login_until_consent(app: &TestApp) -> HandLogin {
    let start = app.get("/auth/twitch").await;
    let binding = set_cookie_value(&start, "avatar_oauth_twitch");
    let authorize = reqwest::Url::parse(&location(&start)).unwrap();
    let mut form: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    let state = form["state"].clone();
    form.insert("decision".into(), "authorize".into());
    let mut post = authorize.clone();
    post.set_query(None);
    let consent = app.http.post(post).form(&form).send().await.unwrap();
    HandLogin {
        binding,
        state,
        callback: location(&consent),
    }
}

pub(crate) fn binding_cookie(value: &str) -> String {
    format!("avatar_oauth_twitch={value}")
}

/// GET `callback` carrying exactly `cookies`.
pub(crate) async fn callback_with_cookies(
    app: &TestApp,
    callback: &str,
    cookies: &[String],
) -> reqwest::Response {
    app.http
        .get(callback)
        .header("Cookie", cookies.join("; "))
        .send()
        .await
        .unwrap()
}

/// The value of a session cookie, from a login made by hand.
pub(crate) async fn session_cookie(app: &TestApp) -> String {
    let login = hand_login_until_consent(app).await;
    let callback =
        callback_with_cookies(app, &login.callback, &[binding_cookie(&login.binding)]).await;
    set_cookie_value(&callback, "avatar_session")
}

pub(crate) fn set_cookie_value(response: &reqwest::Response, name: &str) -> String {
    let header = avatar_tests::set_cookie(response, name).expect("the cookie is set");
    let pair = header.split(';').next().unwrap_or_default();
    pair[name.len() + 1..].to_owned()
}

#[tokio::test]
async fn forged_and_tampered_session_cookies_are_refused() {
    let app = TestApp::spawn(&[]).await;
    let genuine = session_cookie(&app).await;
    let mut tampered = genuine.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (id, _) = genuine.split_once('.').unwrap();
    for cookie in [
        "garbage".to_owned(),
        format!("{id}.AAAA"),
        tampered,
        format!("{}.{}", "x".repeat(43), genuine.split_once('.').unwrap().1),
    ] {
        let status = app
            .status_with_cookie(&format!("avatar_session={cookie}"))
            .await;
        assert_eq!(status["authenticated"], false, "{cookie}");
    }
    let ok = app
        .status_with_cookie(&format!("avatar_session={genuine}"))
        .await;
    assert_eq!(ok["authenticated"], true);
}

#[tokio::test]
async fn a_cross_site_post_to_logout_is_refused() {
    let app = TestApp::spawn(&[]).await;
    let browser = app.browser();
    browser.log_in().await;

    // Another site's page posting to logout: its Origin gives it away, and it has no token.
    let from_evil = browser
        .client
        .post(format!("{}/auth/logout", app.address))
        .header("Origin", "https://evil.example")
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    let without_token = browser
        .client
        .post(format!("{}/auth/logout", app.address))
        .send()
        .await
        .unwrap();

    assert_refused(from_evil, 403, "cross_site_origin").await;
    assert_refused(without_token, 403, "csrf_token_invalid").await;
    assert_eq!(
        browser.status().await["authenticated"],
        true,
        "still logged in"
    );

    // Our own page posting, with our Origin and the token, is accepted.
    let dashboard = browser.get("/success").await.text().await.unwrap();
    let ours = browser
        .client
        .post(format!("{}/auth/logout", app.address))
        .header("Origin", app.address.clone())
        .form(&[("csrf", avatar_tests::csrf_field(&dashboard))])
        .send()
        .await
        .unwrap();
    assert_eq!(ours.status(), 303);
    assert_eq!(browser.status().await["authenticated"], false);
}

#[tokio::test]
async fn disconnect_revokes_both_tokens_at_twitch_deletes_them_and_ends_sessions() {
    let app = TestApp::spawn(&[]).await;
    let browser = app.browser();
    browser.log_in().await;
    let other_device = app.browser();
    other_device.log_in().await;
    // The second login's pair is the one stored.
    let issued = app.twitch.issued_tokens();
    let (access, refresh) = (issued[2].clone(), issued[3].clone());
    assert_eq!(app.twitch_validate_status(&access).await, 200);

    let response = browser.post_from_dashboard("/auth/twitch/disconnect").await;

    assert_eq!(response.status(), 303);
    assert_eq!(
        app.twitch.revoked_tokens(),
        [access.clone(), refresh.clone()]
    );
    assert_eq!(app.twitch_validate_status(&access).await, 401);
    assert_eq!(app.twitch_refresh_status(&refresh).await, 400);
    assert_eq!(app.rows("provider_tokens"), 0);
    assert_eq!(browser.status().await["authenticated"], false);
    assert_eq!(other_device.status().await["authenticated"], false);
}

#[tokio::test]
async fn a_display_name_with_markup_is_shown_escaped() {
    let user = FakeUser {
        display_name: "<script>alert(1)</script>&\"".into(),
        ..FakeUser::demo()
    };
    let app = TestApp::spawn_in(tempfile::tempdir().unwrap(), &[], user).await;
    let browser = app.browser();
    browser.log_in().await;
    let html = browser.get("/success").await.text().await.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#38;&#34;"),
        "{html}"
    );
}

#[tokio::test]
async fn tokens_sealed_under_a_retired_key_stay_readable_and_are_resealed_on_the_next_login() {
    // Arrange: log in under key A.
    let key_a = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
    let key_b = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
    let first = TestApp::spawn(&[("TOKEN_ENCRYPTION_KEY", key_a)]).await;
    first.browser().log_in().await;
    let issued_under_a = first.twitch.issued_tokens();
    let dir = first.stop();

    // Act: restart with key B current and A retired.
    let rotated = TestApp::spawn_in(
        dir,
        &[
            ("TOKEN_ENCRYPTION_KEY", key_b),
            ("TOKEN_ENCRYPTION_OLD_KEYS", key_a),
        ],
        FakeUser::demo(),
    )
    .await;
    let stored = rotated.demo_user_tokens().await;

    // Assert: still readable, though not under the current key...
    assert!(!rotated.app.cipher.is_current(&stored.access_token_sealed));
    let opened = stored.open_access(&rotated.app.cipher).unwrap();
    assert!(issued_under_a.contains(opened.expose()));

    // ...and the next update seals under B.
    rotated.browser().log_in().await;
    let stored = rotated.demo_user_tokens().await;
    assert!(rotated.app.cipher.is_current(&stored.access_token_sealed));
    assert!(stored.open_access(&rotated.app.cipher).is_ok());
}

#[tokio::test]
async fn the_full_login_against_avatar_local_leaks_no_token_into_the_database_logs_or_pages() {
    // Arrange: the fake Twitch here (so its issued tokens are known), avatar-local as a
    // separate process logging everything.
    let port = avatar_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let twitch = fake_providers::twitch::FakeTwitch::new(
        fake_providers::twitch::FakeTwitchConfig::demo(&format!("{base}/auth/twitch/callback")),
    );
    let (twitch_address, _twitch_task) = twitch.spawn(0).await.unwrap();
    let mut vars = twitch.app_variables(twitch_address);
    vars.push(("PUBLIC_BASE_URL".into(), base.clone()));
    let server =
        avatar_tests::LocalServer::start(&["--port", &port.to_string()], &vars, "trace").await;
    let browser = Browser::new(&base);

    // Act: every page a user sees along the way.
    let mut pages = vec![browser.get("/").await.text().await.unwrap()];
    let page = browser.start_login().await;
    let callback = browser.decide(&page, "authorize").await;
    let finished = browser.get(&callback).await;
    assert_eq!(location(&finished), "/success");
    pages.push(finished.text().await.unwrap());
    pages.push(browser.get("/success").await.text().await.unwrap());
    pages.push(browser.get("/auth/status").await.text().await.unwrap());
    pages.push(browser.get("/health").await.text().await.unwrap());
    let (log, dir) = server.stop();

    // Assert: the login happened...
    assert!(pages[2].contains("Demo Streamer"));
    let conn = rusqlite::Connection::open(dir.path().join("data.sqlite")).unwrap();
    let sealed: i64 = conn
        .query_row(
            "SELECT count(*) FROM provider_tokens WHERE length(access_token_enc) > 30",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sealed, 1);
    drop(conn);
    // ...and not one token string is anywhere.
    let tokens = twitch.issued_tokens();
    assert_eq!(tokens.len(), 2, "one access and one refresh token");
    let mut database = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("data.sqlite") {
            database.extend(std::fs::read(&path).unwrap());
        }
    }
    let log = log.join("\n");
    assert!(log.len() > 1000, "TRACE logging captured: {log}");
    for token in &tokens {
        let needle = token.as_bytes();
        assert!(
            !database.windows(needle.len()).any(|w| w == needle),
            "a token is in the database file"
        );
        assert!(!log.contains(token.as_str()), "a token is in the logs");
        for page in &pages {
            assert!(!page.contains(token.as_str()), "a token is in a page");
        }
    }
}

#[tokio::test]
async fn the_demo_mode_logs_in_connects_donationalerts_and_shows_a_donation_with_no_network() {
    let twitch_port = avatar_tests::free_port().to_string();
    let da_port = avatar_tests::free_port().to_string();
    let server = avatar_tests::LocalServer::start(
        &[
            "--demo",
            "--port",
            "0",
            "--demo-ports",
            &format!("{twitch_port},{da_port}"),
        ],
        // Polled once an hour at most: only the realtime push can bring the donation.
        &[("DA_POLL_INTERVAL_MS".to_owned(), "3600000".to_owned())],
        "info",
    )
    .await;
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains(&format!("fake Twitch at http://127.0.0.1:{twitch_port}"))),
        "the startup log names the fake: {:?}",
        server.log
    );
    let browser = Browser::new(&server.base);

    let callback = browser.log_in().await;

    assert_eq!(location(&callback), "/success");
    let dashboard = browser.get("/success").await.text().await.unwrap();
    assert!(dashboard.contains("Demo Streamer"), "{dashboard}");
    assert!(dashboard.contains(&format!("http://127.0.0.1:{twitch_port}/avatar.svg")));

    // Connect the fake DonationAlerts and make a donation happen: it reaches the dashboard.
    let connected = browser.connect_donationalerts().await;
    assert_eq!(location(&connected), "/success");
    wait_until(
        "the in-process bridge subscribed the demo streamer",
        Duration::from_secs(30),
        || async {
            let health: serde_json::Value = browser.get("/health").await.json().await.unwrap();
            health["realtime"]["subscribed"] == 1
        },
    )
    .await;
    let donated = avatar_tests::donate_at_fake(
        &da_port,
        serde_json::json!({"username": "Viewer", "message": "Hello from the demo!",
                           "amount": 100, "currency": "RUB"}),
    )
    .await;
    assert_eq!(donated, 201);
    wait_until(
        "the demo donation on the dashboard",
        Duration::from_secs(30),
        || async {
            let html = browser.get("/success").await.text().await.unwrap();
            html.contains("Hello from the demo!")
        },
    )
    .await;
    server.stop();
}

/// `GET path` as a browser on `localhost:PORT` sends it, while the app is configured as
/// `127.0.0.1:PORT`.
async fn get_on_another_loopback_name(app: &TestApp, path: &str) -> reqwest::Response {
    let port = app.address.rsplit(':').next().unwrap();
    app.http
        .get(format!("{}{path}", app.address))
        .header("Host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_login_started_on_another_loopback_name_is_sent_to_the_configured_host_first() {
    // The app is configured as 127.0.0.1:PORT; a browser arrives as localhost:PORT.
    let app = TestApp::spawn(&[]).await;
    let response = get_on_another_loopback_name(&app, "/auth/twitch").await;
    assert_eq!(response.status(), 302);
    assert_eq!(location(&response), format!("{}/auth/twitch", app.address));
    assert!(
        response.headers().get("set-cookie").is_none(),
        "no state was started"
    );
}

#[tokio::test]
async fn the_log_in_again_button_keeps_its_reauth_across_the_redirect_to_the_configured_host() {
    // The dashboard's «log in again» button is `/auth/twitch?reauth=1`; the browser is on
    // localhost:PORT while the app is configured as 127.0.0.1:PORT.
    let app = TestApp::spawn(&[]).await;
    let on_other_host = get_on_another_loopback_name(&app, "/auth/twitch?reauth=1").await;
    assert_eq!(on_other_host.status(), 302);
    let canonical = location(&on_other_host);
    assert_eq!(canonical, format!("{}/auth/twitch?reauth=1", app.address));

    // Followed on the configured host, it shows Twitch's consent screen.
    let start = app.http.get(&canonical).send().await.unwrap();
    let authorize = reqwest::Url::parse(&location(&start)).unwrap();
    assert!(
        authorize
            .query_pairs()
            .any(|(k, v)| k == "force_verify" && v == "true"),
        "{authorize}"
    );
}

#[tokio::test]
async fn on_https_every_cookie_is_secure_and_the_session_cookie_is_host_prefixed() {
    // The public URL is https (a TLS proxy in front); the test talks to the app directly.
    let app = TestApp::spawn(&[("PUBLIC_BASE_URL", "https://avatar.example")]).await;

    let start = app.get("/auth/twitch").await;
    let session = shared::web::session::NewSession::generate().cookie(&app.app);

    let binding = start.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        binding.contains("HttpOnly; SameSite=Lax; Secure"),
        "{binding}"
    );
    let session = session.to_str().unwrap();
    assert!(session.starts_with("__Host-avatar_session="), "{session}");
    assert!(
        session.contains("; Path=/;") && session.ends_with("HttpOnly; SameSite=Lax; Secure"),
        "{session}"
    );
    let authorize = reqwest::Url::parse(&location(&start)).unwrap();
    assert_eq!(
        authorize
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .unwrap()
            .1,
        "https://avatar.example/auth/twitch/callback"
    );
}

#[tokio::test]
async fn an_unknown_path_gets_a_friendly_404_page() {
    let app = TestApp::spawn(&[]).await;
    let response = app.get("/no/such/page").await;
    assert_eq!(response.status(), 404);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("Страница не найдена") && html.contains("href=\"/\""),
        "{html}"
    );
}

#[tokio::test]
async fn without_twitch_credentials_the_landing_page_and_the_login_say_both_ways_forward() {
    use tower::ServiceExt as _;
    // Arrange: no TWITCH_CLIENT_ID / TWITCH_CLIENT_SECRET at all
    let dir = tempfile::tempdir().unwrap();
    let config = shared::config::Config::from_vars(&avatar_tests::base_vars(dir.path())).unwrap();
    let app = shared::app::App::build(config).await.unwrap();
    let get = |path: &'static str| {
        let router = shared::web::routes::router(app.clone());
        async move {
            let request = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };

    // Act
    let (landing_status, landing) = get("/").await;
    let (login_status, login) = get("/auth/twitch").await;

    // Assert
    assert_eq!(landing_status, 200);
    assert!(landing.contains("id=\"not-configured\""), "{landing}");
    for page in [&landing, &login] {
        assert!(
            page.contains("dev.twitch.tv/console"),
            "register an app: {page}"
        );
        assert!(page.contains("TWITCH_CLIENT_ID"), "the variables: {page}");
        assert!(
            page.contains("avatar-local -- --demo"),
            "or the demo: {page}"
        );
    }
    assert_eq!(login_status, 503);
    assert_eq!(error_code(&login), "not_configured");
}

#[tokio::test]
async fn the_dashboard_offers_a_consent_login_when_the_token_lacks_a_configured_scope() {
    let app = TestApp::spawn(&[("TWITCH_SCOPES", "chat:read chat:edit")]).await;
    let browser = app.browser();
    browser.log_in().await;
    let page = browser.get("/success").await.text().await.unwrap();
    assert!(!page.contains("missing-scopes"), "all scopes granted");

    // The token was issued before chat:edit was configured.
    app.app
        .store
        .write(|conn| {
            conn.execute("UPDATE provider_tokens SET scopes = 'chat:read'", [])
                .map(|_| ())
        })
        .await
        .unwrap();
    let page = browser.get("/success").await.text().await.unwrap();

    assert!(page.contains("id=\"missing-scopes\""), "{page}");
    assert!(page.contains("<code>chat:edit</code>"), "{page}");
    assert!(page.contains("href=\"/auth/twitch?reauth=1\""), "{page}");
    let start = app.get("/auth/twitch?reauth=1").await;
    assert_eq!(start.status(), 302);
    assert!(location(&start).contains("force_verify=true"));
    let plain = app.get("/auth/twitch").await;
    assert!(!location(&plain).contains("force_verify"));

    browser.log_in().await;
    let page = browser.get("/success").await.text().await.unwrap();
    assert!(
        !page.contains("missing-scopes"),
        "granted again at the new login"
    );
}
