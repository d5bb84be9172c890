//! `GET /internal/chat-token/{twitchUserId}` on the local server: the token, its refresh when
//! it is about to expire, the refusals, the bearer check, a bot using it across an expiry,
//! and eight instances racing over one expired token.

use std::time::Duration;

use avatar_tests::{LocalServer, RedisServer, TestApp, base_vars};
use fake_providers::twitch::FakeUser;
use shared::store::now_ms;

const INTERNAL_TOKEN: &str = "internal-api-token-for-tests-0123456789";

fn demo_id() -> String {
    FakeUser::demo().id
}

async fn logged_in_app(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("INTERNAL_API_TOKEN", INTERNAL_TOKEN)];
    vars.extend_from_slice(extra);
    let app = TestApp::spawn(&vars).await;
    app.browser().log_in().await;
    app
}

async fn json(response: reqwest::Response) -> serde_json::Value {
    response.json().await.expect("JSON body")
}

fn expires_at_ms(body: &serde_json::Value) -> i64 {
    let text = body["expiresAt"].as_str().expect("expiresAt is a string");
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("expiresAt is RFC 3339");
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn a_valid_token_is_handed_out_with_its_scopes_and_login_and_never_cached() {
    let app = logged_in_app(&[]).await;
    let issued_access = app.twitch.issued_tokens()[0].clone();

    let response = app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = json(response).await;
    assert_eq!(body["accessToken"], issued_access.as_str());
    assert_eq!(body["scopes"], serde_json::json!(["chat:read"]));
    assert_eq!(body["login"], "demo_streamer");
    assert!(expires_at_ms(&body) > now_ms() + 5 * 60 * 1000);
    assert_eq!(app.twitch.token_requests(), 1, "only the login's exchange");
    assert_eq!(app.twitch_validate_status(&issued_access).await, 200);
}

#[tokio::test]
async fn an_almost_expired_token_is_refreshed_first_and_the_rotated_refresh_token_stored() {
    let app = logged_in_app(&[]).await;
    let issued = app.twitch.issued_tokens();
    let (old_access, old_refresh) = (issued[0].clone(), issued[1].clone());
    app.set_twitch_token_expiry(&demo_id(), now_ms() + 60_000)
        .await;

    let body = json(app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await).await;

    let new_access = body["accessToken"].as_str().expect("a token").to_owned();
    assert_ne!(new_access, old_access);
    assert_eq!(app.twitch.token_requests(), 2, "one refresh");
    assert!(expires_at_ms(&body) > now_ms() + 5 * 60 * 1000);
    assert_eq!(app.twitch_validate_status(&new_access).await, 200);
    assert_eq!(
        app.twitch_refresh_status(&old_refresh).await,
        400,
        "rotated"
    );
    // The new refresh token was stored: it opens and still works at Twitch.
    let stored = app.demo_user_tokens().await;
    let refresh = stored
        .open_refresh(&app.app.cipher)
        .expect("a refresh token is stored")
        .expect("it opens");
    assert!(app.twitch.refresh_token_is_live(refresh.expose()));
    // Asked again, the fresh token comes back without another refresh.
    let requests = app.twitch.token_requests();
    let again = json(app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await).await;
    assert_eq!(again["accessToken"], new_access.as_str());
    assert_eq!(app.twitch.token_requests(), requests);
}

#[tokio::test]
async fn unknown_users_are_404_disconnected_ones_409_and_malformed_ids_400() {
    let app = logged_in_app(&[]).await;

    let unknown = app.chat_token("999999", Some(INTERNAL_TOKEN)).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(json(unknown).await["error"], "unknown_user");

    let malformed = app.chat_token("12ab", Some(INTERNAL_TOKEN)).await;
    assert_eq!(malformed.status(), 400);
    assert_eq!(json(malformed).await["error"], "invalid_user_id");

    // The refresh is refused: the connection ends and the bot is told to stop.
    let issued = app.twitch.issued_tokens();
    app.twitch.invalidate_refresh_token(&issued[1]);
    app.set_twitch_token_expiry(&demo_id(), now_ms()).await;
    let refused = app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    assert_eq!(json(refused).await["error"], "need_reauth");
    let again = app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await;
    assert_eq!(again.status(), 409, "need_reauth stays until a new login");
}

#[tokio::test]
async fn a_missing_or_wrong_bearer_is_401_and_writes_nothing() {
    let app = logged_in_app(&[]).await;
    let writes = app.writes();

    for bearer in [
        None,
        Some("wrong"),
        Some(""),
        Some(&INTERNAL_TOKEN[..INTERNAL_TOKEN.len() - 1]),
    ] {
        let response = app.chat_token(&demo_id(), bearer).await;
        assert_eq!(response.status(), 401, "{bearer:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(json(response).await["error"], "unauthorized");
    }
    let basic = app
        .http
        .get(format!("{}/internal/chat-token/{}", app.address, demo_id()))
        .header("Authorization", format!("Basic {INTERNAL_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    assert_eq!(app.writes(), writes);
}

#[tokio::test]
async fn without_an_internal_api_token_the_route_does_not_exist() {
    let app = TestApp::spawn(&[]).await;
    app.browser().log_in().await;

    let response = app.chat_token(&demo_id(), Some("anything")).await;
    let unknown_path = app.get("/internal/no-such-route").await;

    assert_eq!(response.status(), 404);
    assert_eq!(unknown_path.status(), 404);
    assert_eq!(
        response.text().await.unwrap(),
        unknown_path.text().await.unwrap(),
        "indistinguishable from a path that does not exist"
    );
}

/// What a chat bot does: ask for the streamer's token, use it, and when Twitch refuses it,
/// ask again.
struct Bot<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl Bot<'_> {
    /// Validates its token at Twitch, fetching one first when it has none or Twitch refused
    /// the one it had; `Err` is any error the bot would see.
    async fn chat(&mut self) -> Result<String, String> {
        for _ in 0..2 {
            let token = match &self.token {
                Some(token) => token.clone(),
                None => {
                    let response = self.app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await;
                    if response.status() != 200 {
                        return Err(format!("chat-token answered {}", response.status()));
                    }
                    let body = json(response).await;
                    let token = body["accessToken"].as_str().ok_or("no accessToken")?;
                    self.token = Some(token.to_owned());
                    token.to_owned()
                }
            };
            match self.app.twitch_validate_status(&token).await {
                200 => return Ok(token),
                401 => self.token = None,
                other => return Err(format!("Twitch answered {other}")),
            }
        }
        Err("a fresh token was refused".into())
    }
}

#[tokio::test]
async fn a_bot_keeps_using_the_streamers_token_across_its_expiry() {
    let app = logged_in_app(&[]).await;
    let mut bot = Bot {
        app: &app,
        token: None,
    };

    let first = bot.chat().await.expect("the bot chats");
    // Four hours later: the token expires at Twitch and by the stored expiry alike.
    app.twitch.expire_access_token(&first);
    app.set_twitch_token_expiry(&demo_id(), now_ms()).await;
    let second = bot.chat().await.expect("the bot chats after the expiry");

    assert_ne!(first, second);
    assert_eq!(app.twitch.token_requests(), 2, "one refresh for the expiry");
}

#[tokio::test]
async fn eight_instances_asking_for_one_expired_token_refresh_it_once_and_agree() {
    let redis = RedisServer::start();
    let app = logged_in_app(&[("REDIS_URL", &redis.url())]).await;
    app.set_twitch_token_expiry(&demo_id(), now_ms() - 1000)
        .await;
    let mut vars: Vec<(String, String)> = base_vars(app.dir.path()).into_iter().collect();
    vars.extend(app.twitch.app_variables(app.twitch_address));
    vars.push(("REDIS_URL".into(), redis.url()));
    vars.push(("INTERNAL_API_TOKEN".into(), INTERNAL_TOKEN.into()));
    let mut servers = Vec::new();
    for _ in 0..8 {
        servers.push(LocalServer::start(&["--port", "0"], &vars, "info").await);
    }
    let http = reqwest::Client::new();

    let answers = futures_util::future::join_all(servers.iter().map(|server| {
        http.get(format!(
            "http://127.0.0.1:{}/internal/chat-token/{}",
            server.port,
            demo_id()
        ))
        .bearer_auth(INTERNAL_TOKEN)
        .timeout(Duration::from_secs(20))
        .send()
    }))
    .await;

    let mut tokens = Vec::new();
    for answer in answers {
        let response = answer.expect("every instance answers");
        assert_eq!(response.status(), 200);
        tokens.push(
            json(response).await["accessToken"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        app.twitch.token_requests(),
        2,
        "the login's exchange and one refresh"
    );
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    assert_ne!(tokens[0], app.twitch.issued_tokens()[0]);
    assert!(app.twitch.access_token_is_live(&tokens[0]));
    for server in servers {
        server.stop();
    }
}
