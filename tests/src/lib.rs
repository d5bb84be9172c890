//! Test harness: private `redis-server` processes on free loopback ports (never the
//! machine's shared 6379), temporary SQLite directories, the app served on port 0, and
//! helpers to run this crate's child-process binaries. Everything it starts is stopped on
//! drop, also when a test fails.

pub mod runtime_api;
pub mod streamers;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig};
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig, FakeUser};
use shared::app::App;
use shared::config::Config;
use tempfile::TempDir;

/// Waits for `condition` to hold, checking every few milliseconds, and panics with `what`
/// when `deadline` passes. Tests wait on conditions, never on fixed sleeps.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A private redis-server on a free loopback port, without persistence.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Appends every write to a file synced at once, so a killed server comes back with
    /// its data (the default keeps nothing, like the machine's shared Redis).
    durable: bool,
    _dir: TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that keeps its data across a kill and restart (append-only file, fsync on
    /// every write).
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                port,
                child: None,
                durable,
                _dir: tempfile::tempdir().expect("temp dir for redis"),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start a private redis-server");
    }

    /// Starts the process on `self.port`; false if it did not come up (port taken).
    fn spawn(&mut self) -> bool {
        assert_ne!(self.port, 6379, "tests never use the shared Redis");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .args(["--dir", &self._dir.path().display().to_string()])
            .args(["--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test.sh, which installs it");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if self.answers_ping() {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: the server vanishes with everything it held.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port: empty, or with its data when durable.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    /// `GET key`, for assertions on what is stored.
    pub async fn get(&self, key: &str) -> Option<String> {
        let mut conn = self.connection().await;
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("GET")
    }

    /// `PTTL key` in milliseconds (-2 when the key does not exist).
    pub async fn pttl(&self, key: &str) -> i64 {
        let mut conn = self.connection().await;
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("PTTL")
    }

    /// A new async connection for assertions. Its answers may take up to 30 s: a test's
    /// check must not fail because a loaded machine was slow to answer it.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let patient = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(30)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection_with_config(&patient)
            .await
            .expect("connect to the private redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a signal to a process (SIGSTOP/SIGCONT for pause tests, SIGKILL for crashes).
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned; failure (already gone) is harmless here.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

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
    shared::telemetry::init(&Config {
        log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
        ..config
    });
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
            let _ = shared::http::serve(listener, served, async move {
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
            .twitch_tokens(FakeUser::demo().id)
            .await
            .expect("store read")
            .expect("the demo user has Twitch tokens")
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

/// A browser without JavaScript: a cookie jar, redirects followed by hand so each hop can
/// be checked.
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
}

/// One step of a login, for tests that stop or tamper half-way.
pub struct AuthorizePage {
    /// The Twitch authorize URL the app redirected to.
    pub url: reqwest::Url,
    /// Its query parameters (what the consent form posts back).
    pub params: HashMap<String, String>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .build()
                .expect("http client"),
        }
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_owned()
        };
        self.client.get(url).send().await.expect("request")
    }

    /// GET /auth/twitch and then the authorize page it redirects to.
    pub async fn start_login(&self) -> AuthorizePage {
        let start = self.get("/auth/twitch").await;
        assert_eq!(start.status(), 302, "GET /auth/twitch");
        let location = location(&start);
        let page = self.get(&location).await;
        assert_eq!(page.status(), 200, "the authorize page");
        let url = reqwest::Url::parse(&location).expect("authorize URL");
        let params = url.query_pairs().into_owned().collect();
        AuthorizePage { url, params }
    }

    /// Clicks Authorize or Cancel on the consent page; returns the callback URL Twitch
    /// redirects to.
    pub async fn decide(&self, page: &AuthorizePage, decision: &str) -> String {
        let mut form = page.params.clone();
        form.insert("decision".into(), decision.into());
        let mut post_url = page.url.clone();
        post_url.set_query(None);
        let response = self
            .client
            .post(post_url)
            .form(&form)
            .send()
            .await
            .expect("consent");
        assert_eq!(response.status(), 302, "the consent form redirects");
        location(&response)
    }

    /// The whole login: start, authorize, callback. Returns the callback's response.
    pub async fn log_in(&self) -> reqwest::Response {
        let page = self.start_login().await;
        let callback = self.decide(&page, "authorize").await;
        self.get(&callback).await
    }

    /// GET /auth/donationalerts and the fake DonationAlerts' authorize page it leads to.
    pub async fn start_connect(&self) -> AuthorizePage {
        let start = self.get("/auth/donationalerts").await;
        assert_eq!(start.status(), 302, "GET /auth/donationalerts");
        let location = location(&start);
        let page = self.get(&location).await;
        assert_eq!(page.status(), 200, "the DonationAlerts authorize page");
        let url = reqwest::Url::parse(&location).expect("authorize URL");
        let params = url.query_pairs().into_owned().collect();
        AuthorizePage { url, params }
    }

    /// The whole DonationAlerts connection (the browser must be logged in): start,
    /// authorize, callback. Returns the callback's response.
    pub async fn connect_donationalerts(&self) -> reqwest::Response {
        let page = self.start_connect().await;
        let callback = self.decide(&page, "authorize").await;
        self.get(&callback).await
    }

    /// POSTs a form to `path` with the CSRF token read from the dashboard.
    pub async fn post_from_dashboard(&self, path: &str) -> reqwest::Response {
        let dashboard = self.get("/success").await.text().await.expect("dashboard");
        let csrf = csrf_field(&dashboard);
        self.client
            .post(format!("{}{path}", self.base))
            .form(&[("csrf", csrf)])
            .send()
            .await
            .expect("post")
    }

    /// `/auth/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        self.get("/auth/status")
            .await
            .json()
            .await
            .expect("status JSON")
    }
}

/// The status code of a GET sent over a plain socket (for requests an HTTP client refuses
/// to build, like a 100 KB URL).
pub async fn raw_get_status(base: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .expect("an answer within 10 s")
        .expect("a status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("a status code")
}

/// The value of the hidden `csrf` field of a page's forms.
pub fn csrf_field(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field on the page")
        .to_owned()
}

/// The Location header of a redirect.
pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned()
}

/// Path of a binary built from this workspace (`avatar-local`), next to the test binary.
/// `cargo test --workspace` builds it because the avatar-local package has tests of its own.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/it-<hash> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or scripts/test.sh), which builds it",
        path.display()
    );
    path
}

/// `avatar-local` started as a user would, in a fresh directory, with only PATH, `RUST_LOG`
/// and `vars` in its environment; its log is kept for the test to search. Killed on drop.
pub struct LocalServer {
    process: ChildProcess,
    /// `http://localhost:PORT`, the default public URL (cookies are bound to it).
    pub base: String,
    pub port: u16,
    pub log: Vec<String>,
    dir: TempDir,
}

impl LocalServer {
    pub async fn start(args: &[&str], vars: &[(String, String)], log_filter: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(workspace_binary("avatar-local"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", log_filter)
            .envs(vars.iter().cloned())
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("avatar-local starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let process = ChildProcess::adopt(child, stderr);
        let mut log = Vec::new();
        let address = loop {
            let line = process
                .next_line(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("avatar-local did not start: {log:?}"));
            let found = line
                .split("listening on http://")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned());
            log.push(line);
            if let Some(address) = found {
                break address;
            }
        };
        let port: u16 = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the listening line");
        Self {
            process,
            base: format!("http://localhost:{port}"),
            port,
            log,
            dir,
        }
    }

    /// Stops the server (SIGTERM) and returns everything it logged.
    pub fn stop(mut self) -> (Vec<String>, TempDir) {
        signal(self.process.child.id(), libc::SIGTERM);
        self.log
            .extend(self.process.remaining_lines(Duration::from_secs(20)));
        let log = std::mem::take(&mut self.log);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        (log, dir)
    }
}

/// A child process whose stdout is read line by line; killed on drop.
pub struct ChildProcess {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildProcess {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child process starts");
        let stdout = child.stdout.take().expect("piped stdout");
        Self::adopt(child, stdout)
    }

    /// Wraps an already spawned child, reading lines from `output` (its stdout or stderr).
    pub fn adopt(child: Child, output: impl Read + Send + 'static) -> Self {
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next stdout line, or `None` when the child closed stdout or `deadline` passed.
    pub fn next_line(&self, deadline: Duration) -> Option<String> {
        self.lines.recv_timeout(deadline).ok()
    }

    /// Every remaining line until the child closes stdout (bounded by `deadline`).
    pub fn remaining_lines(&self, deadline: Duration) -> Vec<String> {
        let end = Instant::now() + deadline;
        let mut lines = Vec::new();
        while let Some(line) = self.next_line(end.saturating_duration_since(Instant::now())) {
            lines.push(line);
        }
        lines
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        let _ = writeln!(stdin, "{line}");
        let _ = stdin.flush();
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub fn wait(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Inserts a plain donation row: the write every store test and benchmark repeats.
pub fn insert_test_donation(
    conn: &rusqlite::Connection,
    streamer: &str,
    id: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO donations (streamer_twitch_id, da_donation_id, donor_name, message,
                                amount, currency, created_at, received_at)
         VALUES (?1, ?2, 'donor', 'thanks for the stream', '100.50', 'RUB',
                 '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z')",
    )?
    .execute(rusqlite::params![streamer, id])?;
    Ok(())
}

/// A Redis-backed coordinator for `urls` (the first is REDIS_URL, all are lock servers).
pub fn redis_coordinator(urls: &[String]) -> shared::coordination::Coordinator {
    use shared::config::RedisUrl;
    let parsed: Vec<RedisUrl> = urls
        .iter()
        .map(|u| RedisUrl::parse(u).expect("redis url"))
        .collect();
    shared::coordination::Coordinator::Redis(
        shared::coordination::redis::RedisCoordinator::new(&parsed[0], &parsed, false)
            .expect("coordinator"),
    )
}

/// The donation event the bus tests publish for donation `id` (streamer 42, DA user 7).
pub fn sample_donation_event(id: i64) -> shared::events::BusEvent {
    use shared::events::{BusEvent, Donation, DonationPayload};
    BusEvent::donation(&DonationPayload {
        event_id: DonationPayload::event_id_for(7, id),
        streamer_id: "42".into(),
        source: "donationalerts".into(),
        donation: Donation {
            id,
            username: Some("viewer".into()),
            message: format!("donation {id}"),
            amount: serde_json::Number::from(100),
            currency: "RUB".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        },
        received_at: "2026-01-01T00:00:01Z".into(),
    })
}

/// A private moto server (a local AWS API) for the Secrets Manager tests.
pub struct MotoServer {
    pub endpoint: String,
    child: Child,
}

impl MotoServer {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto is not installed: run scripts/test.sh, which installs it");
        let server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("moto server did not start on port {port}");
    }

    /// An AWS SDK configuration pointed at this server with throwaway credentials.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("test", "test", None, None, "tests"),
                ),
            )
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build()
    }

    /// The environment a process needs to reach this server through the default AWS chain.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            // Never fall through to the instance metadata address.
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Creates a secret holding `json`; returns its ARN.
    pub async fn create_secret(&self, name: &str, json: &str) -> String {
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk_config());
        client
            .create_secret()
            .name(name)
            .secret_string(json)
            .send()
            .await
            .expect("create secret in moto")
            .arn()
            .expect("secret arn")
            .to_owned()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
