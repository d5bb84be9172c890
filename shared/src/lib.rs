//! Avatar Twitch OAuth: the whole application. Every Lambda function in `functions/` and the
//! local server `avatar-local` are thin mains over this crate, so they cannot drift apart.
//!
//! A tour:
//!
//! - [`config`]: every environment variable of the contract, typed and validated at start;
//!   a bad value names its variable and the process exits non-zero.
//! - [`secret`]: a wrapper that prints `[redacted]`, for tokens, keys and Redis passwords.
//! - [`secrets`]: `SECRETS_ARN`, secret settings read from AWS Secrets Manager at start, in
//!   one SigV4-signed request (`secrets::sigv4`) with no AWS SDK.
//! - [`store`]: SQLite. One writer thread owns the only write connection and commits queued
//!   writes in batches (group commit); callers return only once their batch is durable.
//!   Across instances the writer holds the fenced Redis lease `locks:sqlite:writer`. WAL on
//!   local disk, `delete` journal on EFS (WAL needs shared memory, which NFS cannot give).
//! - [`coordination`]: locks (node-redlock wire format, with fencing tokens), one-time
//!   state, the app-wide GCRA rate limiter, the event bus and heartbeats; Redis when
//!   `REDIS_URL` is set, in-process otherwise (single-instance mode).
//! - [`events`]: events as they cross processes (stream entry, broadcast): `donation` and
//!   `token.revoked`.
//! - [`crypto`]: AES-256-GCM sealing of tokens at rest (with key rotation) and HMAC signing
//!   of cookies and CSRF tokens.
//! - [`oauth`]: the provider clients (Twitch), pointed at configurable base URLs.
//! - [`outbox`]: the relay that publishes events recorded in SQLite to the bus, exactly once
//!   per eventId, also after Redis was down.
//! - [`poll`]: the DonationAlerts poller's schedule: live streamers and recent donors polled
//!   more often, idle ones backing off, failing ones backing off alone, nobody starving.
//! - [`tokens`]: stored provider tokens for both providers: open, refresh under a per-user
//!   lock (the rotated refresh token always stored), end a dead connection (`need_reauth`,
//!   tokens deleted, `token.revoked` published), the chat bots' token, revocation on
//!   disconnect, and the hourly validation of every Twitch token (`tokens::validation`).
//! - [`web`]: the pages and the login flow: OAuth state bound to the browser, sessions
//!   revocable server-side, CSRF checks, strict CSP, one place mapping errors to pages.
//! - [`health`]: the `/health` report; every figure in it is measured.
//! - [`http`]: the one route table, served by `avatar-local` and by the HTTP Lambdas, and
//!   the headers every response carries.
//! - [`server`]: `avatar-local`'s HTTP edge: header, idle and body timeouts, a connection cap.
//! - [`app`]: the state built once per process (per cold start).
//! - [`jobs`]: the work of a scheduled function (the DonationAlerts poll, the token
//!   validation), run by the Lambda
//!   runtime until shortly before each invocation's deadline, and by `avatar-local` on timers.
//! - `lambda` (feature `lambda`): the entry points every function's `main` calls (HTTP and
//!   scheduled).
//! - [`metrics`]: the figures (polls, tokens, the writer), counted once, read as Prometheus
//!   text by `avatar-local`'s `/metrics` and as CloudWatch EMF lines by the functions.
//! - [`text`]: cutting text a provider sent to a bounded length, marked where it was cut.
//! - [`telemetry`]: logging setup; in Lambda JSON lines carrying the request id, the function
//!   and the streamer of the spans they happen in.

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
pub mod secret;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tokens;
pub mod vars;
pub mod web;
