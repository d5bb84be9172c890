//! Avatar Twitch OAuth: the whole application. Every Lambda function in `functions/`, the
//! local server `avatar-local` and the tests are thin mains over this crate, so they cannot
//! drift apart.
//!
//! # Floors
//!
//! The modules stand on floors. An import points down a floor or along one, never up, and no
//! modules import each other round a circle; `shared/tests/floors.rs` reads the sources and
//! fails on either (its table is the one written here).
//!
//! | floor | modules |
//! |---|---|
//! | 6 | [`web`] (routes, edge, pages, `/health`), `lambda` |
//! | 5 | [`app`]: the composition root |
//! | 4 | [`tokens`], [`poll`], [`realtime`], [`outbox`], [`jobs`] |
//! | 3 | [`metrics`] |
//! | 2 | [`store`], [`coordination`], [`providers`] |
//! | 1 | [`config`], [`secrets`], [`crypto`] |
//! | 0 | [`domain`], [`secret`], [`text`], [`telemetry`], [`outbound`], [`vars`], [`bundle`] |
//!
//! - **0, what everything stands on.** [`domain`]: a streamer's [`domain::TwitchUserId`], a
//!   [`domain::DaUserId`], the two providers, the clock, the [`domain::Donation`] and the
//!   events on the bus. [`secret`]: a wrapper that prints `[redacted]`. [`text`]: provider
//!   text cut to a bound. [`telemetry`]: logging, and the one error-chain formatter every
//!   warning uses. [`outbound`]: the HTTP client for calls to other services. [`vars`]: an
//!   environment variable's value and the error naming it. [`bundle`]: the functions of the
//!   bundle.
//! - **1, settings.** [`config`]: every environment variable of the contract, typed and
//!   checked at start (a bad value names its variable). [`secrets`]: which secret each
//!   function is given, read from AWS Secrets Manager in one SigV4-signed request.
//!   [`crypto`]: tokens sealed at rest (AES-256-GCM, key rotation), cookies signed.
//! - **2, the outside world.** [`store`]: SQLite, written only by one writer thread in group
//!   commits, fenced across instances by the lease `locks:sqlite:writer`. [`coordination`]:
//!   Redis, or in-process in single-instance mode, split by concern into small handles:
//!   [`coordination::Locks`] (node-redlock format, fencing tokens),
//!   [`coordination::OneTimeStates`], [`coordination::Budget`] (the shared GCRA limiters),
//!   [`coordination::EventBus`] and [`coordination::Presence`] (heartbeats, poller figures).
//!   [`providers`]: the Twitch and DonationAlerts APIs, at configurable base URLs, every
//!   answer bounded, and DonationAlerts' realtime socket ([`providers::centrifugo`]).
//! - **3, figures.** [`metrics`]: polls, tokens and the writer's commits, counted once where
//!   they happen (the store reports commits through [`store::CommitObserver`]), read as
//!   Prometheus text and as CloudWatch EMF lines.
//! - **4, the work.** [`tokens`]: stored tokens kept alive through a
//!   [`tokens::TokenKeeper`] (open, refresh under a per-user lock, end a dead connection,
//!   the chat bots' token, the hourly validation). [`poll`]: the DonationAlerts poller over
//!   [`poll::PollParts`] (schedule, one poll of one streamer, bounded). [`realtime`]: the
//!   bridge holding one DonationAlerts socket per streamer of the shards it leases, recording
//!   pushed donations; the poller reconciles behind it. [`outbox`]: the relay
//!   that publishes recorded events, exactly once per eventId. [`jobs`]: what a scheduled
//!   function runs.
//! - **5, [`app`].** Builds every handle once per process (per Lambda cold start) and hands
//!   each job and route the parts it uses.
//! - **6, the edges.** [`web`]: the one route table, `avatar-local`'s HTTP edge, the headers
//!   every response carries, the pages, the login flows and `/health`. `lambda` (feature
//!   `lambda`): the entry points every function's `main` calls.
//!
//! # One donation, from the provider to the bus
//!
//! 1. [`realtime`] receives the donation pushed over the streamer's socket, or [`poll`]
//!    takes the streamer's lock and a grant of the shared budget and asks
//!    [`providers::donationalerts`] for a page; either way it is parsed into a
//!    [`domain::Donation`], its fields bounded.
//! 2. The finder makes each donation's event ([`domain::event::ReceivedDonation`]: the
//!    `donation` payload with eventId `da:{daUserId}:{donationId}`).
//! 3. [`store`] records the donations and queues their events in one fenced write
//!    ([`store::Store::record_donations`]), without knowing the event's form; the
//!    realtime bridge hands pushed donations to the same write.
//! 4. [`outbox`] publishes what was queued on the [`coordination::EventBus`], which appends
//!    each eventId once.

pub mod app;
pub mod bundle;
pub mod config;
pub mod coordination;
pub mod crypto;
pub mod domain;
pub mod jobs;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod metrics;
pub mod outbound;
pub mod outbox;
pub mod poll;
pub mod providers;
pub mod realtime;
pub mod secret;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tokens;
pub mod vars;
pub mod web;
