//! Test harness: private `redis-server` processes on free loopback ports (never the
//! machine's shared 6379), temporary SQLite directories, the app served on port 0, and
//! helpers to run this crate's child-process binaries. Everything it starts is stopped on
//! drop, also when a test fails.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    _dir: TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                port,
                child: None,
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
            .args(["--save", "", "--appendonly", "no"])
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

    /// Starts again on the same port, empty.
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

    /// A new async connection for assertions.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
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

/// The app served in-process on a free port, with its own temporary database.
pub struct TestApp {
    pub address: String,
    pub app: App,
    pub dir: TempDir,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    /// Spawns the app with the base configuration plus `extra` variables.
    pub async fn spawn(extra: &[(&str, &str)]) -> Self {
        init_test_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut vars = base_vars(dir.path());
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_vars(&vars).expect("test configuration is valid");
        let app = App::build(config).await.expect("app builds");
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind port 0");
        let address = format!("http://{}", listener.local_addr().expect("local addr"));
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
            shutdown: Some(shutdown),
        }
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
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
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
