//! The floor everything else stands on: what the application is about, in types that know
//! no storage, no network and no framework. It imports nothing else of the crate but the
//! floor-0 helper `text`.
//!
//! - [`ids`]: a Twitch user id (every streamer's id), a DonationAlerts user id, the two
//!   providers and the status of a stored connection.
//! - [`clock`]: the one clock (`now_ms`) and the one way times are written (RFC 3339 UTC).
//! - [`donation`]: a donation, as the provider client parses it and every later step keeps
//!   it, with its fields bounded.
//! - [`event`]: the events the application publishes (`donation`, `token.revoked`) and their
//!   form on the bus.

pub mod clock;
pub mod donation;
pub mod event;
pub mod ids;

pub use clock::{now_ms, rfc3339_utc};
pub use donation::Donation;
pub use ids::{DaUserId, Provider, TokenStatus, TwitchUserId};
