//! Streamers with a DonationAlerts connection, made directly in the store (no browser), for
//! the poller's tests and benchmarks.

use fake_providers::donationalerts::{FakeDaUser, FakeDonationAlerts};
use shared::app::App;
use shared::store::accounts::{TokenKind, seal_token};
use shared::store::donationalerts::DonationAlertsConnection;

/// The scopes a connection is granted (the application's default `DA_SCOPES`).
pub const DA_SCOPES: &[&str] = &["oauth-user-show", "oauth-donation-index"];

/// Stores Twitch user `twitch_id` linked to DonationAlerts account `da_id` (added to the
/// fake, which issues its tokens), with the baseline taken (every donation from now on is
/// new).
pub async fn link_streamer(app: &App, fake: &FakeDonationAlerts, twitch_id: &str, da_id: i64) {
    link_streamer_with_scopes(app, fake, twitch_id, da_id, DA_SCOPES).await;
}

/// [`link_streamer`] with a grant of `scopes` (e.g. with `oauth-donation-subscribe`, which
/// the realtime bridge needs to subscribe to the streamer's donations).
pub async fn link_streamer_with_scopes(
    app: &App,
    fake: &FakeDonationAlerts,
    twitch_id: &str,
    da_id: i64,
    scopes: &[&str],
) {
    let user = twitch_id.to_owned();
    app.store
        .write(move |conn| {
            conn.execute(
                "INSERT INTO users (twitch_user_id, login, display_name, created_at, updated_at)
                 VALUES (?1, ?1, ?1, 0, 0) ON CONFLICT DO NOTHING",
                [&user],
            )
            .map(|_| ())
        })
        .await
        .expect("user stored");
    fake.add_account(FakeDaUser::numbered(da_id));
    let issued = fake.issue_tokens(da_id, scopes);
    let streamer = shared::domain::TwitchUserId::parse(twitch_id).expect("a Twitch user id");
    let seal =
        |kind, token: &str| seal_token(&app.cipher, &streamer, "donationalerts", kind, token);
    app.store
        .connect_donationalerts(DonationAlertsConnection {
            streamer_twitch_id: streamer.clone(),
            da_user_id: shared::domain::DaUserId(da_id),
            da_name: None,
            access_token_sealed: seal(TokenKind::Access, &issued.access_token),
            refresh_token_sealed: Some(seal(TokenKind::Refresh, &issued.refresh_token)),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: None,
            initial_cursor: Some(0),
        })
        .await
        .expect("connection stored");
}

/// A fake DonationAlerts on a free loopback port and the configuration of an app that uses
/// it, a private Redis (`redis_url`) and a fresh database: what the poller's tests share.
/// Add test-specific variables to `vars` before building apps from it.
pub struct DonationAlertsTestbed {
    pub fake: FakeDonationAlerts,
    pub vars: std::collections::HashMap<String, String>,
    pub dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl DonationAlertsTestbed {
    pub async fn start(redis_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = FakeDonationAlerts::new(
            fake_providers::donationalerts::FakeDonationAlertsConfig::demo(
                "http://localhost:3000/auth/donationalerts/callback",
            ),
        );
        let (address, server) = fake.spawn(0).await.expect("fake DonationAlerts");
        let mut vars = crate::base_vars(dir.path());
        vars.insert("REDIS_URL".into(), redis_url.to_owned());
        vars.extend(fake.app_variables(address));
        Self {
            fake,
            vars,
            dir,
            server,
        }
    }
}

impl Drop for DonationAlertsTestbed {
    fn drop(&mut self) {
        self.server.abort();
    }
}
