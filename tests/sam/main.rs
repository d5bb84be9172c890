//! The functions as `sam local start-api` serves them: the bootstraps `sam build` made, each
//! in its Docker container behind SAM's local API Gateway, against a private Redis and the
//! fake Twitch listening on the Docker bridge. Ignored by plain `cargo test` (it needs
//! Docker and `scripts/sam-local.sh prepare`); scripts/test.sh runs it as its own step. The
//! realtime bridge's image (`realtime_image`) is the other test of that Docker step.

mod realtime_image;

use avatar_tests::{
    AuthorizePage, Browser, RedisServer, SamLocal, docker_bridge_address, free_port, location,
    set_cookie,
};
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig};

#[tokio::test]
#[ignore = "needs Docker and scripts/sam-local.sh prepare; scripts/test.sh runs it"]
async fn health_and_the_twitch_login_work_through_sam_local_start_api() {
    avatar_tests::init_test_logging();
    // Arrange: Redis and the fake Twitch where the containers reach this machine.
    let bridge = docker_bridge_address();
    let redis = RedisServer::start_also_on(bridge);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(&format!(
        "{base}/auth/twitch/callback"
    )));
    let (twitch_address, _twitch_server) = twitch
        .spawn_on((bridge, 0).into())
        .await
        .expect("the fake Twitch on the Docker bridge");
    let mut vars = twitch.app_variables(twitch_address);
    vars.push(("REDIS_URL".into(), redis.url_on(bridge)));
    vars.push(("PROVIDER_TIMEOUT_MS".into(), "5000".into()));
    let sam = SamLocal::start(port, &vars).await;
    assert_eq!(sam.base, base);
    let browser = Browser::new(&sam.base);

    // /health: the health function, in its container, reached our Redis and its SQLite.
    let health = browser.get("/health").await;
    assert_eq!(health.status(), 200);
    let report: serde_json::Value = health.json().await.expect("health is JSON");
    assert_eq!(report["redis"]["status"], "enabled", "{report}");
    assert_eq!(report["scalability"]["mode"], "distributed", "{report}");
    assert_eq!(report["sqlite"]["status"], "ok", "{report}");
    let instances: usize = redis::cmd("ZCARD")
        .arg("avatar:instances")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert!(instances >= 1, "the function's heartbeat is in this Redis");

    // GET /auth/twitch: 302 to the fake's authorize page, the state in a signed cookie.
    let start = browser.get("/auth/twitch").await;
    assert_eq!(start.status(), 302);
    let state_cookie = set_cookie(&start, "avatar_oauth_twitch").expect("the state cookie");
    assert!(state_cookie.contains("HttpOnly"), "{state_cookie}");
    assert!(
        state_cookie.contains("Path=/auth/twitch/callback"),
        "{state_cookie}"
    );
    let authorize = reqwest::Url::parse(&location(&start)).expect("authorize URL");
    assert!(
        authorize.as_str().starts_with(&format!(
            "{}/authorize?",
            FakeTwitch::auth_base_url(twitch_address)
        )),
        "{authorize}"
    );
    let params: std::collections::HashMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert_eq!(
        params["redirect_uri"],
        format!("{base}/auth/twitch/callback")
    );
    let state = params["state"].clone();

    // Consent on the fake Twitch, which sends the browser back with a code.
    assert_eq!(browser.get(authorize.as_str()).await.status(), 200);
    let page = AuthorizePage {
        url: authorize,
        params,
    };
    let callback = browser.decide(&page, "authorize").await;
    assert!(
        callback.starts_with(&format!("{base}/auth/twitch/callback?code=")),
        "{callback}"
    );

    // Act: the callback, through SAM, in the auth-callback container.
    let response = browser.get(&callback).await;

    // Assert: the code was exchanged at the fake, the state marked used in Redis, and the
    // browser sent to the dashboard with a session.
    assert_eq!(response.status(), 302);
    assert_eq!(location(&response), "/success");
    let session = set_cookie(&response, "avatar_session").expect("a session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert_eq!(twitch.token_requests(), 1, "one code exchange");
    assert_eq!(
        twitch.issued_tokens().len(),
        2,
        "one access and refresh token pair"
    );
    let key = format!("oauth:state:{state}");
    assert_eq!(redis.get(&key).await.as_deref(), Some("1"), "state used");
    assert!(redis.pttl(&key).await > 0);

    // The same callback with the same state cookie again is refused as a replay: the state
    // is marked used in Redis, shared by every container.
    let binding = state_cookie.split(';').next().unwrap();
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&callback)
        .header("Cookie", binding)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    let page = replay.text().await.unwrap();
    assert!(page.contains("state_replayed"), "{page}");
    assert_eq!(twitch.token_requests(), 1, "no second exchange");

    // Stopping SAM stops every container it started.
    let left = sam.stop();
    assert!(left.is_empty(), "containers left running: {left:?}");
}
