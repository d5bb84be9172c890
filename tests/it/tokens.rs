//! The token module against the fake DonationAlerts, real SQLite and a private Redis:
//! racing refreshes ask the provider once, a refused refresh ends in `need_reauth`.

use avatar_tests::RedisServer;
use avatar_tests::streamers::DonationAlertsTestbed;
use fake_providers::donationalerts::{ApiFailure, FakeDonationAlerts, RequestKind};
use shared::app::App;
use shared::config::Config;
use shared::domain::{Provider, TwitchUserId, now_ms};
use shared::store::accounts::{TokenKind, seal_token};
use shared::store::donationalerts::DonationAlertsConnection;
use shared::tokens::{self, TokenError};

/// `text` as a Twitch user id (the tests' ids are well formed).
fn user_id(text: &str) -> shared::domain::TwitchUserId {
    shared::domain::TwitchUserId::parse(text).expect("a Twitch user id")
}

const STREAMER: &str = "141981764";
const SCOPES: &[&str] = &["oauth-user-show", "oauth-donation-index"];

/// The demo streamer's DonationAlerts tokens as stored.
async fn stored_tokens(app: &App) -> shared::store::accounts::StoredTokens {
    app.store
        .provider_tokens(&streamer(), Provider::DonationAlerts)
        .await
        .unwrap()
        .expect("tokens stored")
}

struct Setup {
    apps: Vec<App>,
    fake: FakeDonationAlerts,
    _redis: RedisServer,
    _testbed: DonationAlertsTestbed,
}

/// `instances` apps sharing one database and one Redis, with the demo streamer's
/// DonationAlerts tokens stored (expired when `expired`).
async fn setup(instances: usize, expired: bool) -> Setup {
    let redis = RedisServer::start();
    let mut testbed = DonationAlertsTestbed::start(&redis.url()).await;
    testbed
        .vars
        .insert("PROVIDER_TIMEOUT_MS".into(), "2000".into());
    let (vars, fake) = (&testbed.vars, testbed.fake.clone());
    let mut apps = Vec::new();
    for _ in 0..instances {
        let config = Config::from_vars(vars).expect("valid configuration");
        apps.push(App::build(config).await.expect("app builds"));
    }
    let app = &apps[0];
    app.store
        .write(|conn| {
            conn.execute(
                "INSERT INTO users (twitch_user_id, login, display_name, created_at, updated_at)
                 VALUES ('141981764', 'demo_streamer', 'Demo Streamer', 0, 0)",
                [],
            )
            .map(|_| ())
        })
        .await
        .unwrap();
    let issued = fake.issue_tokens(7_130_000, SCOPES);
    let seal = |kind, token: &str| {
        seal_token(
            &app.cipher,
            &user_id(STREAMER),
            "donationalerts",
            kind,
            token,
        )
    };
    app.store
        .connect_donationalerts(DonationAlertsConnection {
            streamer_twitch_id: user_id(STREAMER),
            da_user_id: shared::domain::DaUserId(7_130_000),
            da_name: Some("Demo Streamer".into()),
            access_token_sealed: seal(TokenKind::Access, &issued.access_token),
            refresh_token_sealed: Some(seal(TokenKind::Refresh, &issued.refresh_token)),
            scopes: SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: Some(if expired {
                now_ms() - 1
            } else {
                now_ms() + 3_600_000
            }),
            initial_cursor: Some(0),
        })
        .await
        .unwrap();
    if expired {
        fake.expire_access_tokens_of(7_130_000);
    }
    Setup {
        apps,
        fake,
        _redis: redis,
        _testbed: testbed,
    }
}

fn streamer() -> TwitchUserId {
    TwitchUserId::parse(STREAMER).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_instances_racing_over_an_expired_token_refresh_it_once_and_share_the_result() {
    // Arrange
    let setup = setup(4, true).await;
    let margin = std::time::Duration::from_secs(300);

    // Act
    let racers = setup.apps.iter().cloned().map(|app| {
        tokio::spawn(async move {
            tokens::fresh(&app.tokens, &streamer(), Provider::DonationAlerts, margin)
                .await
                .map(|t| t.access_token.expose().clone())
        })
    });
    let results: Vec<String> = futures_util::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("fresh tokens"))
        .collect();

    // Assert
    assert_eq!(setup.fake.request_count(RequestKind::Token), 1);
    assert!(results.iter().all(|t| *t == results[0]), "{results:?}");
    let issued = setup.fake.issued_tokens();
    assert_eq!(results[0], issued[issued.len() - 2], "the new access token");
    let stored = stored_tokens(&setup.apps[0]).await;
    let refresh = stored.open_refresh(&setup.apps[0].cipher).unwrap().unwrap();
    assert_eq!(
        refresh.expose(),
        &issued[issued.len() - 1],
        "the rotated refresh token is stored"
    );
}

#[tokio::test]
async fn a_streamer_connected_with_the_old_scopes_is_refreshed_with_those_scopes_every_time() {
    // Arrange: the grant holds the two scopes of before, while DA_SCOPES now asks for
    // oauth-donation-subscribe too. DonationAlerts (and the fake) refuse a refresh whose
    // scopes are not the granted ones.
    let setup = setup(1, true).await;
    let app = &setup.apps[0];
    assert!(
        app.config
            .donationalerts
            .scopes
            .iter()
            .any(|s| s == shared::config::DONATION_SUBSCRIBE_SCOPE),
        "the configured scopes are wider than the grant"
    );
    let margin = std::time::Duration::from_secs(300);

    // Act: two refreshes in a row (the second resends what the first stored).
    let first = tokens::fresh(&app.tokens, &streamer(), Provider::DonationAlerts, margin).await;
    setup.fake.expire_access_tokens_of(7_130_000);
    app.store
        .write(|conn| {
            conn.execute(
                "UPDATE provider_tokens SET expires_at = 1 WHERE provider = 'donationalerts'",
                [],
            )
            .map(|_| ())
        })
        .await
        .unwrap();
    let second = tokens::fresh(&app.tokens, &streamer(), Provider::DonationAlerts, margin).await;

    // Assert: both accepted, and the stored grant still names the two scopes.
    assert!(first.is_ok(), "{first:?}");
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(setup.fake.request_count(RequestKind::Token), 2);
    let stored = stored_tokens(app).await;
    assert_eq!(stored.status, "active");
    assert_eq!(stored.scopes, SCOPES);
}

#[tokio::test]
async fn a_refresh_the_provider_refuses_marks_the_connection_need_reauth() {
    // Arrange
    let setup = setup(1, true).await;
    let app = &setup.apps[0];
    setup.fake.revoke_tokens_of(7_130_000);
    let margin = std::time::Duration::from_secs(300);

    // Act
    let refused = tokens::fresh(&app.tokens, &streamer(), Provider::DonationAlerts, margin).await;
    let afterwards = tokens::load(&app.tokens, &streamer(), Provider::DonationAlerts).await;

    // Assert
    assert!(
        matches!(refused, Err(TokenError::NeedsReauth("donationalerts"))),
        "{refused:?}"
    );
    assert!(matches!(afterwards, Err(TokenError::NeedsReauth(_))));
    let stored = stored_tokens(app).await;
    assert_eq!(stored.status, "need_reauth");
    assert_eq!(setup.fake.request_count(RequestKind::Token), 1);
}

#[tokio::test]
async fn a_provider_failing_during_a_refresh_leaves_the_connection_active() {
    // Arrange
    let setup = setup(1, true).await;
    let app = &setup.apps[0];
    setup.fake.set_failure(None, ApiFailure::ServerError);
    let margin = std::time::Duration::from_secs(300);

    // Act
    let failed = tokens::fresh(&app.tokens, &streamer(), Provider::DonationAlerts, margin).await;
    setup.fake.set_failure(None, ApiFailure::None);
    let retried = tokens::fresh(&app.tokens, &streamer(), Provider::DonationAlerts, margin).await;

    // Assert
    assert!(matches!(failed, Err(TokenError::Provider(_))), "{failed:?}");
    assert!(retried.is_ok(), "{retried:?}");
    assert_eq!(setup.fake.request_count(RequestKind::Token), 2);
}

#[tokio::test]
async fn tokens_still_valid_for_the_margin_are_used_without_asking_the_provider() {
    let setup = setup(1, false).await;
    let app = &setup.apps[0];
    let margin = std::time::Duration::from_secs(300);
    let tokens = tokens::fresh(&app.tokens, &streamer(), Provider::DonationAlerts, margin)
        .await
        .unwrap();
    assert!(tokens.valid_for(margin));
    assert_eq!(setup.fake.request_count(RequestKind::Token), 0);
}
