//! Test harness: private `redis-server` processes on free loopback ports (never the
//! machine's shared 6379), temporary SQLite directories, the app served on port 0, and
//! helpers to run this crate's child-process binaries. Everything it starts is stopped on
//! drop, also when a test fails. Every wait it offers (for a line, a port, a process, an
//! answer, a condition) has a deadline it checks itself, so a test fails rather than hangs.
//!
//! - `redis_server`: [`RedisServer`], a private Redis, and [`redis_coordinator`].
//! - `app`: [`TestApp`], the app served in-process, and [`base_vars`], a valid configuration.
//! - `browser`: [`Browser`] and the page helpers ([`location`], [`csrf_field`],
//!   [`raw_get_status`]).
//! - `process`: [`ChildProcess`], [`LocalServer`] (`avatar-local` as a user starts it),
//!   [`workspace_binary`] and [`signal`].
//! - `aws`: [`MotoServer`], a local Secrets Manager.
//! - `samples`: donation rows and bus events.
//! - [`runtime_api`]: a Lambda Runtime API emulator; [`streamers`]: connected streamers.
//! - `sam_local`: [`SamLocal`], `sam local start-api` serving the built functions in
//!   Docker, and [`docker_bridge_address`], where its containers reach this machine.
//! - [`emf`]: the checks CloudWatch applies to an Embedded Metric Format record.

pub mod emf;
pub mod runtime_api;
pub mod streamers;
pub mod twitch_users;

mod app;
mod aws;
mod browser;
mod process;
mod redis_server;
mod sam_local;
mod samples;

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

pub use self::app::{TestApp, base_vars, init_test_logging};
pub use self::aws::MotoServer;
pub use self::browser::{AuthorizePage, Browser, csrf_field, location, raw_get_status, set_cookie};
pub use self::process::{
    ChildProcess, LocalServer, output_within, signal, signal_group, workspace_binary,
};
pub use self::redis_server::{RedisServer, redis_coordinator};
pub use self::sam_local::{SamLocal, docker_bridge_address};
pub use self::samples::{donate_at_fake, insert_test_donation, sample_donation_event};

/// The longest one HTTP request of the harness's clients may take: far beyond any answer a
/// test expects, so a server that never answers fails the test instead of hanging it.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// Waits for `condition` to hold, checking every few milliseconds, and panics with `what`
/// when `deadline` passes, also while one check of the condition is still running. Tests
/// wait on conditions, never on fixed sleeps.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, condition()).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => panic!(
                "timed out after {deadline:?} waiting for {what} (its last check was still running)"
            ),
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
