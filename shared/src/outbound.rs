//! The HTTP client for every call this application makes to another service.

use std::time::Duration;

/// The HTTP client for calls to other services (the providers, Secrets Manager at start):
/// bounded time, no redirects (none of their endpoints needs one, and following them could
/// leak a token to another host).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("avatar-twitch-oauth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}
