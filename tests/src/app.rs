//! The app served in-process with its own temporary database, fake Twitch and fake
//! DonationAlerts, and the configuration and logging tests share.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig};
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig, FakeUser};
use shared::app::App;
use shared::config::Config;
use tempfile::TempDir;

use crate::browser::Browser;

/// Variables for a complete local configuration in `dir` (keys given, so no key file).
pub fn base_vars(dir: &Path) -> HashMap<String, String> {
    let key = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="; // 32 bytes
    [
        ("SQLITE_PATH", dir.join("data.sqlite").display().to_string()),
        ("TOKEN_ENCRYPTION_KEY", key.to_owned()),
        ("SESSION_SECRET", key.to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Logs go to the test output only with TEST_LOG set.
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber_init();
    }
}

fn tracing_subscriber_init() -> Result<(), ()> {
    let config = Config::from_vars(&base_vars(Path::new("/tmp"))).map_err(|_| ())?;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into());
    shared::telemetry::init(&filter, config.deployment.log_format());
    Ok(())
}

/// The app served in-process on a free port, with its own temporary database, and a fake
/// Twitch it logs in with.
pub struct TestApp {
    pub address: String,
    pub app: App,
    pub dir: TempDir,
    pub http: reqwest::Client,
    pub twitch: FakeTwitch,
    pub twitch_address: std::net::SocketAddr,
    pub donationalerts: FakeDonationAlerts,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    twitch_task: tokio::task::JoinHandle<()>,
    donationalerts_task: tokio::task::JoinHandle<()>,
}

impl TestApp {
    /// Spawns the app with the base configuration plus `extra` variables.
    pub async fn spawn(extra: &[(&str, &str)]) -> Self {
        Self::spawn_in(
            tempfile::tempdir().expect("temp dir"),
            extra,
            FakeUser::demo(),
        )
        .await
    }

    /// Spawns the app on an existing directory (a restart over the same database) with a
    /// fake Twitch whose user is `user`.
    pub async fn spawn_in(dir: TempDir, extra: &[(&str, &str)], user: FakeUser) -> Self {
        init_test_logging();
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind port 0");
        let address = format!("http://{}", listener.local_addr().expect("local addr"));
        let mut vars = base_vars(dir.path());
        vars.insert("PUBLIC_BASE_URL".into(), address.clone());
        vars.insert("PROVIDER_TIMEOUT_MS".into(), "1500".into());
        let twitch = FakeTwitch::new(FakeTwitchConfig {
            user,
            ..FakeTwitchConfig::demo(&format!("{address}/auth/twitch/callback"))
        });
        let (twitch_address, twitch_task) = twitch.spawn(0).await.expect("fake twitch");
        vars.extend(twitch.app_variables(twitch_address));
        let donationalerts = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(&format!(
            "{address}/auth/donationalerts/callback"
        )));
        let (da_address, donationalerts_task) =
            donationalerts.spawn(0).await.expect("fake DonationAlerts");
        vars.extend(donationalerts.app_variables(da_address));
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_vars(&vars).expect("test configuration is valid");
        let app = App::build(config).await.expect("app builds");
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = app.clone();
        tokio::spawn(async move {
            let _ = shared::web::routes::serve(listener, served, async move {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            address,
            app,
            dir,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(crate::REQUEST_DEADLINE)
                .build()
                .expect("http client"),
            twitch,
            twitch_address,
            donationalerts,
            shutdown: Some(shutdown),
            twitch_task,
            donationalerts_task,
        }
    }

    /// Stops the app (keeping its directory for a restart).
    pub fn stop(mut self) -> TempDir {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.twitch_task.abort();
        self.donationalerts_task.abort();
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the app")
    }

    /// GET /health: (status code, JSON body).
    pub async fn health(&self) -> (u16, serde_json::Value) {
        let response = self.get("/health").await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("health is JSON"))
    }

    /// `/auth/status` as JSON for a request carrying exactly `cookie` (a `Cookie` header).
    pub async fn status_with_cookie(&self, cookie: &str) -> serde_json::Value {
        self.http
            .get(format!("{}/auth/status", self.address))
            .header("Cookie", cookie)
            .send()
            .await
            .expect("request reaches the app")
            .json()
            .await
            .expect("status JSON")
    }

    /// The demo user's stored Twitch tokens (still sealed); panics if there are none.
    pub async fn demo_user_tokens(&self) -> shared::store::accounts::StoredTokens {
        self.app
            .store
            .twitch_tokens(&shared::domain::TwitchUserId::parse(&FakeUser::demo().id).unwrap())
            .await
            .expect("store read")
            .expect("the demo user has Twitch tokens")
    }

    /// `GET /internal/chat-token/{user}`, with `Authorization: Bearer {bearer}` when given.
    pub async fn chat_token(&self, user: &str, bearer: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .get(format!("{}/internal/chat-token/{user}", self.address));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send().await.expect("request reaches the app")
    }

    /// `POST /internal/chat-token/{user}/refused` with `body` as sent (JSON for a real bot),
    /// with `Authorization: Bearer {bearer}` when given.
    pub async fn chat_token_refused(
        &self,
        user: &str,
        bearer: Option<&str>,
        body: String,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!(
                "{}/internal/chat-token/{user}/refused",
                self.address
            ))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send().await.expect("request reaches the app")
    }

    /// Status of the fake Twitch's `/validate` for `access_token` (200 live, 401 dead).
    pub async fn twitch_validate_status(&self, access_token: &str) -> u16 {
        self.http
            .get(format!(
                "{}/validate",
                FakeTwitch::auth_base_url(self.twitch_address)
            ))
            .header("Authorization", format!("OAuth {access_token}"))
            .send()
            .await
            .expect("request reaches the fake Twitch")
            .status()
            .as_u16()
    }

    /// Status of a refresh at the fake Twitch with `refresh_token` (200 works, 400 dead).
    pub async fn twitch_refresh_status(&self, refresh_token: &str) -> u16 {
        self.http
            .post(format!(
                "{}/token",
                FakeTwitch::auth_base_url(self.twitch_address)
            ))
            .form(&[
                ("client_id", "demo0client0id0000000000000000"),
                ("client_secret", "demo-client-secret"),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .expect("request reaches the fake Twitch")
            .status()
            .as_u16()
    }

    /// Moves the stored expiry of `user`'s Twitch token (to make it "almost expired").
    pub async fn set_twitch_token_expiry(&self, user: &str, expires_at: i64) {
        let user = user.to_owned();
        self.app
            .store
            .write(move |conn| {
                conn.execute(
                    "UPDATE provider_tokens SET expires_at = ?2
                     WHERE twitch_user_id = ?1 AND provider = 'twitch'",
                    rusqlite::params![user, expires_at],
                )
                .map(|_| ())
            })
            .await
            .expect("expiry moved");
    }

    /// A new browser (its own cookie jar) for this app.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.address)
    }

    /// Writes committed so far (to prove a refused request wrote nothing).
    pub fn writes(&self) -> u64 {
        self.app
            .store
            .writer_stats()
            .writes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rows in `table`, read straight from the database file.
    pub fn rows(&self, table: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.dir.path().join("data.sqlite")).expect("open");
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.twitch_task.abort();
        self.donationalerts_task.abort();
    }
}
