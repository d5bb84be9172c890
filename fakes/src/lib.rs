//! Local fakes of the providers the application talks to, for integration tests and for
//! `avatar-local --demo`, where a newcomer clicks through a login with no credentials and
//! no network.
//!
//! - [`twitch`]: Twitch's OAuth server (`/oauth2/authorize`, `/token`, `/validate`,
//!   `/revoke`) and Helix Get Users, with the documented error bodies.
//! - [`donationalerts`]: DonationAlerts' OAuth server, `/api/v1/user/oauth` and the paged
//!   donation list, with `POST /_control/donations` to make a donation happen, injectable
//!   failures and latency, and a log of every request for budget checks; and its
//!   Centrifugo push server ([`donationalerts::centrifugo`]), with knobs for drops,
//!   duplicates, reordering, delays and expired tokens.
//!
//! Each fake is an axum router over in-memory state, served on loopback. Tests steer a
//! fake through methods on it (inject failures, invalidate tokens) and read what it saw
//! (requests, issued tokens). This crate is never linked into a Lambda function.

pub mod donationalerts;
mod html;
mod random;
mod request;
pub mod twitch;

/// Binds `address` (port 0 picks a free port) and serves `router` in a spawned task until
/// the task is aborted or its runtime shuts down; returns the bound address and the task.
async fn spawn_router(
    router: axum::Router,
    address: std::net::SocketAddr,
    name: &'static str,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the fake {name} server stopped");
        }
    });
    Ok((addr, task))
}
