//! Local fakes of the providers the application talks to, for integration tests and for
//! `avatar-local --demo`, where a newcomer clicks through a login with no credentials and
//! no network.
//!
//! - [`twitch`]: Twitch's OAuth server (`/oauth2/authorize`, `/token`, `/validate`,
//!   `/revoke`) and Helix Get Users, with the documented error bodies.
//!
//! Each fake is an axum router over in-memory state, served on loopback. Tests steer a
//! fake through methods on it (inject failures, invalidate tokens) and read what it saw
//! (requests, issued tokens). This crate is never linked into a Lambda function.

mod html;
mod random;
pub mod twitch;
