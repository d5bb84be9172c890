//! Scheduled jobs: the work a scheduled function does on each invocation (the `da-poll`
//! poll, the `token-validate` validation). The Lambda entry point runs a job until shortly
//! before the invocation's deadline; `avatar-local` runs the same jobs on timers.

use std::future::Future;

use tokio::time::Instant;

/// A job of a scheduled function, built once per cold start (so what it learns, such as
/// which streamers are backing off, carries over between warm invocations).
pub trait ScheduledJob: Send + Sync + 'static {
    /// Works until `stop_at` at the latest, then returns what it did (the invocation's
    /// result, also logged).
    fn run(&self, stop_at: Instant) -> impl Future<Output = serde_json::Value> + Send;
}
