//! Private `redis-server` processes on free loopback ports (never the machine's shared
//! 6379), and coordinators pointed at them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// A private redis-server on a free loopback port, without persistence.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Appends every write to a file synced at once, so a killed server comes back with
    /// its data (the default keeps nothing, like the machine's shared Redis).
    durable: bool,
    /// A local address it listens on besides loopback (the Docker bridge's, for containers).
    also_on: Option<Ipv4Addr>,
    _dir: TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(false, None)
    }

    /// A server that keeps its data across a kill and restart (append-only file, fsync on
    /// every write).
    pub fn start_durable() -> Self {
        Self::start_with(true, None)
    }

    /// A server that also listens on `address`, one of this machine's (the Docker bridge's
    /// gateway, where functions running in containers reach the host; see [`Self::url_on`]).
    pub fn start_also_on(address: Ipv4Addr) -> Self {
        Self::start_with(false, Some(address))
    }

    fn start_with(durable: bool, also_on: Option<Ipv4Addr>) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                port,
                child: None,
                durable,
                also_on,
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
        // Protected mode refuses clients from any address but loopback; the other address
        // is one only this machine's containers reach.
        let (bind, protected_mode) = match self.also_on {
            Some(address) => (format!("127.0.0.1 {address}"), "no"),
            None => ("127.0.0.1".to_owned(), "yes"),
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", &bind])
            .args(["--protected-mode", protected_mode])
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

    /// The URL at `address`, which must be the one given to [`Self::start_also_on`].
    pub fn url_on(&self, address: Ipv4Addr) -> String {
        assert_eq!(self.also_on, Some(address), "not listening on {address}");
        format!("redis://{address}:{}", self.port)
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
