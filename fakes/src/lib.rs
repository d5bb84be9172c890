//! Local fakes of the providers the application talks to, for integration tests and for
//! `avatar-local --demo`, where a newcomer clicks through a login with no credentials and
//! no network.
//!
//! - [`twitch`]: Twitch's OAuth server (`/oauth2/authorize`, `/token`, `/validate`,
//!   `/revoke`) and Helix Get Users, with the documented error bodies.
//! - [`donationalerts`]: DonationAlerts' OAuth server, `/api/v1/user/oauth` and the paged
//!   donation list, with `POST /_control/donations` to make a donation happen, injectable
//!   failures and latency, and a log of every request for budget checks.
//!
//! Each fake is an axum router over in-memory state, served on loopback. Tests steer a
//! fake through methods on it (inject failures, invalidate tokens) and read what it saw
//! (requests, issued tokens). This crate is never linked into a Lambda function.

pub mod donationalerts;
mod html;
mod random;
mod request;
pub mod twitch;
