//! `GET /internal/chat-token/{twitchUserId}` on the local server: the token, its refresh when
//! it is about to expire, the refusals, the bearer check, a bot using it across an expiry,
//! and eight instances racing over one expired token. `POST …/refused`: a bot reporting a
//! token Twitch refused gets one Twitch accepts (or 409 and `token.revoked` when the
//! connection is over), an old copy gets the stored token without a Twitch call, and many
//! reports of one token cause one validation.

use std::time::Duration;

use avatar_tests::{LocalServer, RedisServer, TestApp, base_vars};
use fake_providers::twitch::{DEFAULT_ACCESS_TOKEN_TTL, FakeUser, TokenFailure};
use shared::domain::now_ms;

use crate::bus::stream_entries;

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

/// Writes to the database and `/validate` requests at Twitch so far.
fn footprint(app: &TestApp) -> (u64, usize) {
    (app.writes(), app.twitch.validate_requests())
}

/// The body a bot sends to report `access_token` refused.
fn refused(access_token: &str) -> String {
    serde_json::json!({ "accessToken": access_token }).to_string()
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
    let before = footprint(&app);

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
    // The report of a refused token: the same check, before the body is read.
    let issued_access = app.twitch.issued_tokens()[0].clone();
    app.twitch.invalidate_access_token(&issued_access);
    for bearer in [None, Some("wrong"), Some("")] {
        let response = app
            .chat_token_refused(&demo_id(), bearer, refused(&issued_access))
            .await;
        assert_eq!(response.status(), 401, "{bearer:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(json(response).await["error"], "unauthorized");
    }
    assert_eq!(footprint(&app), before, "nothing written, Twitch not asked");
}

#[tokio::test]
async fn without_an_internal_api_token_the_route_does_not_exist() {
    let app = TestApp::spawn(&[]).await;
    app.browser().log_in().await;

    let response = app.chat_token(&demo_id(), Some("anything")).await;
    let report = app
        .chat_token_refused(&demo_id(), Some("anything"), refused("a-token"))
        .await;
    let unknown_path = app.get("/internal/no-such-route").await;

    assert_eq!(response.status(), 404);
    assert_eq!(report.status(), 404);
    assert_eq!(unknown_path.status(), 404);
    let unknown_page = unknown_path.text().await.unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        unknown_page,
        "indistinguishable from a path that does not exist"
    );
    assert_eq!(report.text().await.unwrap(), unknown_page);
}

/// What a chat bot does: ask for the streamer's token, use it, and when Twitch refuses it,
/// report it refused and use the token it gets back.
struct Bot<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl Bot<'_> {
    /// Validates its token at Twitch, fetching one first when it has none; `Err` is any error
    /// the bot would see.
    async fn chat(&mut self) -> Result<String, String> {
        let mut token = match self.token.take() {
            Some(token) => token,
            None => {
                handed_token(self.app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await).await?
            }
        };
        for _ in 0..2 {
            self.token = Some(token.clone());
            match self.app.twitch_validate_status(&token).await {
                200 => return Ok(token),
                401 => {
                    let report = self
                        .app
                        .chat_token_refused(&demo_id(), Some(INTERNAL_TOKEN), refused(&token))
                        .await;
                    token = handed_token(report).await?;
                }
                other => return Err(format!("Twitch answered {other}")),
            }
        }
        Err("the token handed out for a refused one was refused too".into())
    }
}

/// The token of a 200 chat-token answer; `Err` names any other status.
async fn handed_token(response: reqwest::Response) -> Result<String, String> {
    let status = response.status();
    if status != 200 {
        return Err(format!("chat-token answered {status}"));
    }
    let body = json(response).await;
    Ok(body["accessToken"]
        .as_str()
        .ok_or("no accessToken")?
        .to_owned())
}

#[tokio::test]
async fn eight_instances_asking_for_one_expired_token_refresh_it_once_and_agree() {
    let redis = RedisServer::start();
    let app = logged_in_app(&[("REDIS_URL", &redis.url())]).await;
    app.set_twitch_token_expiry(&demo_id(), now_ms() - 1000)
        .await;
    let servers = local_servers(&app, &redis, 8).await;
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

/// `count` `avatar-local` processes over `app`'s database and fake Twitch, sharing `redis`.
async fn local_servers(app: &TestApp, redis: &RedisServer, count: usize) -> Vec<LocalServer> {
    let mut vars: Vec<(String, String)> = base_vars(app.dir.path()).into_iter().collect();
    vars.extend(app.twitch.app_variables(app.twitch_address));
    vars.push(("REDIS_URL".into(), redis.url()));
    vars.push(("INTERNAL_API_TOKEN".into(), INTERNAL_TOKEN.into()));
    let mut servers = Vec::new();
    for _ in 0..count {
        servers.push(LocalServer::start(&["--port", "0"], &vars, "info").await);
    }
    servers
}

#[tokio::test]
async fn a_bot_keeps_using_the_streamers_token_across_its_expiry_and_a_revocation() {
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

    // Then Twitch revokes the token (the streamer changed their password) while the stored
    // expiry still says it has hours left: the bot reports it and gets a fresh one.
    app.twitch.invalidate_access_token(&second);
    let third = bot
        .chat()
        .await
        .expect("the bot chats after the revocation");
    assert_ne!(third, second);
    assert!(app.twitch.access_token_is_live(&third));
    assert_eq!(
        app.twitch.token_requests(),
        3,
        "one refresh for the revocation"
    );
    // The GET hands out the same one from now on.
    let again = json(app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await).await;
    assert_eq!(again["accessToken"], third.as_str());
    assert_eq!(again["login"], "demo_streamer");
}

#[tokio::test]
async fn a_report_whose_refresh_is_refused_too_is_409_and_token_revoked_is_published() {
    // Arrange: Twitch revoked the whole grant (the app was removed in the streamer's
    // settings): the access token and the refresh token are dead.
    let redis = RedisServer::start();
    let app = logged_in_app(&[("REDIS_URL", &redis.url())]).await;
    let issued = app.twitch.issued_tokens();
    app.twitch.invalidate_access_token(&issued[0]);
    app.twitch.invalidate_refresh_token(&issued[1]);

    // Act
    let response = app
        .chat_token_refused(&demo_id(), Some(INTERNAL_TOKEN), refused(&issued[0]))
        .await;

    // Assert: 409, the connection ended, and the bots told on the bus.
    assert_eq!(response.status(), 409);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(json(response).await["error"], "need_reauth");
    let stored = app.demo_user_tokens().await;
    assert_eq!(stored.status, "need_reauth");
    assert!(stored.access_token_sealed.is_empty() && stored.refresh_token_sealed.is_none());
    let revoked: Vec<_> = stream_entries(&redis)
        .await
        .into_iter()
        .map(|(_, fields)| {
            fields
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>()
        })
        .filter(|fields| fields["type"] == "token.revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["streamerId"], demo_id());
    let data: serde_json::Value = serde_json::from_str(&revoked[0]["data"]).unwrap();
    assert_eq!(data["provider"], "twitch");
    assert_eq!(data["reason"], "refresh_refused");
    let get = app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await;
    assert_eq!(get.status(), 409, "the GET says so too");
}

#[tokio::test]
async fn an_old_token_reported_after_a_refresh_gets_the_stored_one_without_asking_twitch() {
    // Arrange: a bot holds the first token; meanwhile another bot's GET refreshed it.
    let app = logged_in_app(&[]).await;
    let old = app.twitch.issued_tokens()[0].clone();
    app.set_twitch_token_expiry(&demo_id(), now_ms()).await;
    let newer = handed_token(app.chat_token(&demo_id(), Some(INTERNAL_TOKEN)).await)
        .await
        .expect("a refreshed token");
    assert_ne!(newer, old);
    let (validations, token_requests) =
        (app.twitch.validate_requests(), app.twitch.token_requests());

    // Act
    let response = app
        .chat_token_refused(&demo_id(), Some(INTERNAL_TOKEN), refused(&old))
        .await;

    // Assert
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = json(response).await;
    assert_eq!(body["accessToken"], newer.as_str());
    assert_eq!(body["login"], "demo_streamer");
    assert_eq!(app.twitch.validate_requests(), validations, "no validation");
    assert_eq!(app.twitch.token_requests(), token_requests, "no refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_bots_reporting_one_revoked_token_at_once_cause_one_validation_and_one_refresh() {
    // Arrange: four instances sharing Redis; Twitch revoked the token every bot holds, and
    // answers /validate slowly enough for all the reports to arrive during the first one.
    let redis = RedisServer::start();
    let app = logged_in_app(&[("REDIS_URL", &redis.url())]).await;
    let revoked = app.twitch.issued_tokens()[0].clone();
    app.twitch.invalidate_access_token(&revoked);
    app.twitch.set_validate_latency(Duration::from_millis(300));
    let servers = local_servers(&app, &redis, 4).await;
    let http = reqwest::Client::new();
    let validations = app.twitch.validate_requests();

    // Act: two bots on each instance report it at once.
    let answers = futures_util::future::join_all(servers.iter().cycle().take(8).map(|server| {
        http.post(format!(
            "http://127.0.0.1:{}/internal/chat-token/{}/refused",
            server.port,
            demo_id()
        ))
        .bearer_auth(INTERNAL_TOKEN)
        .header("Content-Type", "application/json")
        .body(refused(&revoked))
        .timeout(Duration::from_secs(20))
        .send()
    }))
    .await;

    // Assert: one validation, one refresh, and every bot has the new token.
    let mut tokens = Vec::new();
    for answer in answers {
        let token = handed_token(answer.expect("every instance answers")).await;
        tokens.push(token.expect("a token"));
    }
    assert_eq!(
        app.twitch.validate_requests(),
        validations + 1,
        "one validation"
    );
    assert_eq!(
        app.twitch.token_requests(),
        2,
        "the login's exchange and one refresh"
    );
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    assert_ne!(tokens[0], revoked);
    assert!(app.twitch.access_token_is_live(&tokens[0]));
    for server in servers {
        server.stop();
    }
}

#[tokio::test]
async fn a_report_takes_the_word_of_a_validation_asked_after_it_arrived() {
    // Arrange: bots reported a token Twitch still accepts (their 401 had another cause). One
    // report validated it while this one waited for the lock, so the stored validation was
    // asked after this report arrived (here: a minute from now).
    let app = logged_in_app(&[]).await;
    let issued = app.twitch.issued_tokens()[0].clone();
    let validated_at = |at: i64| {
        app.app.store.write(move |conn| {
            conn.execute(
                "UPDATE provider_tokens SET last_validated_at = ?1 WHERE provider = 'twitch'",
                [at],
            )
            .map(|_| ())
        })
    };
    validated_at(now_ms() + 60_000).await.unwrap();
    let validations = app.twitch.validate_requests();
    let user = demo_id();
    let report = || app.chat_token_refused(&user, Some(INTERNAL_TOKEN), refused(&issued));

    // Act and assert: the token comes back without asking Twitch again…
    let answer = handed_token(report().await).await;
    assert_eq!(answer.as_deref(), Ok(issued.as_str()));
    assert_eq!(app.twitch.validate_requests(), validations);

    // … while a validation asked before the report arrived does not answer it.
    validated_at(now_ms() - 1).await.unwrap();
    let answer = handed_token(report().await).await;
    assert_eq!(answer.as_deref(), Ok(issued.as_str()));
    assert_eq!(app.twitch.validate_requests(), validations + 1);
    assert_eq!(app.twitch.token_requests(), 1, "no refresh");
}

#[tokio::test]
async fn a_reported_token_twitch_still_accepts_comes_back_with_the_expiry_twitch_reports() {
    // Arrange: the stored expiry says a month; Twitch says four hours from the login.
    let before = now_ms();
    let app = logged_in_app(&[]).await;
    let issued = app.twitch.issued_tokens()[0].clone();
    app.set_twitch_token_expiry(&demo_id(), now_ms() + 30 * 24 * 3_600_000)
        .await;
    let validations = app.twitch.validate_requests();

    // Act
    let response = app
        .chat_token_refused(&demo_id(), Some(INTERNAL_TOKEN), refused(&issued))
        .await;

    // Assert: the same token (Twitch accepts it), with Twitch's expiry, stored too.
    let after = now_ms();
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["accessToken"], issued.as_str());
    let ttl = DEFAULT_ACCESS_TOKEN_TTL.as_millis() as i64;
    let expires_at = expires_at_ms(&body);
    assert!(
        (before + ttl - 2_000..=after + ttl).contains(&expires_at),
        "{expires_at} is not four hours after the login ({before})"
    );
    let stored = app.demo_user_tokens().await.expires_at.expect("an expiry");
    assert_eq!(
        stored / 1000,
        expires_at / 1000,
        "the answer's expiry is stored"
    );
    assert_eq!(app.twitch.validate_requests(), validations + 1);
    assert_eq!(app.twitch.token_requests(), 1, "no refresh");
}

#[tokio::test]
async fn a_malformed_report_is_400_and_writes_nothing_and_unknown_users_are_404() {
    let app = logged_in_app(&[]).await;
    let issued = app.twitch.issued_tokens()[0].clone();
    let before = footprint(&app);

    for body in [
        String::new(),
        "not json".to_owned(),
        "{}".to_owned(),
        r#"{"accessToken":5}"#.to_owned(),
        r#"{"accessToken":""}"#.to_owned(),
        format!(r#"{{"access_token":"{issued}"}}"#),
        format!(r#"{{"accessToken":"{}"}}"#, "a".repeat(5_000)),
    ] {
        let response = app
            .chat_token_refused(&demo_id(), Some(INTERNAL_TOKEN), body.clone())
            .await;
        assert_eq!(response.status(), 400, "{body:.40}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let error = json(response).await;
        assert_eq!(error["error"], "invalid_body", "{body:.40}");
        assert!(
            !error.to_string().contains(&issued),
            "the token is not echoed"
        );
    }
    let malformed = app
        .chat_token_refused("12ab", Some(INTERNAL_TOKEN), refused(&issued))
        .await;
    assert_eq!(malformed.status(), 400);
    assert_eq!(json(malformed).await["error"], "invalid_user_id");
    let unknown = app
        .chat_token_refused("999999", Some(INTERNAL_TOKEN), refused(&issued))
        .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(json(unknown).await["error"], "unknown_user");
    assert_eq!(footprint(&app), before, "nothing written, Twitch not asked");
}

#[tokio::test]
async fn a_report_is_502_or_504_when_twitch_fails_and_503_while_another_refresh_holds_the_lock() {
    let app = logged_in_app(&[("PROVIDER_TIMEOUT_MS", "300")]).await;
    let issued = app.twitch.issued_tokens();
    let user = demo_id();
    let report = || app.chat_token_refused(&user, Some(INTERNAL_TOKEN), refused(&issued[0]));

    // /validate does not answer in time: 504.
    app.twitch.set_validate_latency(Duration::from_secs(3));
    let slow = report().await;
    assert_eq!(slow.status(), 504);
    assert_eq!(json(slow).await["error"], "provider_timeout");
    app.twitch.set_validate_latency(Duration::ZERO);

    // The token is revoked and the refresh fails at Twitch: 502, the tokens kept.
    app.twitch.invalidate_access_token(&issued[0]);
    app.twitch.set_token_failure(TokenFailure::ServerError);
    let failed = report().await;
    assert_eq!(failed.status(), 502);
    assert_eq!(json(failed).await["error"], "provider_failed");
    assert_eq!(app.demo_user_tokens().await.status, "active");
    app.twitch.set_token_failure(TokenFailure::None);

    // Another instance holds the refresh lock past the wait: 503 with Retry-After.
    let lock = app
        .app
        .coordinator
        .locks()
        .try_lock(
            &format!("locks:tokens:twitch:{}", demo_id()),
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .expect("the lock is free");
    let busy = report().await;
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(json(busy).await["error"], "refresh_busy");
    app.app.coordinator.locks().release(&lock).await.unwrap();

    // Once Twitch works again, the same report gets a fresh token.
    let fresh = handed_token(report().await).await.expect("a fresh token");
    assert!(app.twitch.access_token_is_live(&fresh));
}
