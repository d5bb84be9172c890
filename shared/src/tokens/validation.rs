//! The hourly validation of every stored Twitch token. Twitch requires an app to validate its
//! tokens at start and hourly, and to end every session that uses a token that became invalid
//! for reasons other than expiring; it audits apps that do not.
//!
//! A run validates the tokens that are due (last validated [`TokenLifecycleConfig::
//! validate_due_after`] ago, or never), least recently validated first, at the configured
//! request rate and concurrency. A token Twitch accepts gets the expiry Twitch reports (a
//! stored expiry may be wrong); a token Twitch refuses is refreshed; one whose refresh is
//! refused too ends its connection (see `tokens::connection_lost`): tokens deleted, sessions
//! ended, `token.revoked` published. A run stops at its deadline; since the order is "least
//! recently validated first", the next run starts with the tokens this one did not reach.
//! One validator runs at a time across instances (lock `locks:tokens:validate`).
//!
//! [`TokenLifecycleConfig::validate_due_after`]: crate::config::TokenLifecycleConfig

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument as _;

use super::{TokenError, TokenKeeper, expiry_from_validation, open_active, refresh};
use crate::domain::{Provider, now_ms};
use crate::jobs::ScheduledJob;
use crate::metrics::ValidationOutcome;
use crate::providers::twitch::TwitchClient;
use crate::store::accounts::StoredTokens;
use crate::telemetry::error_chain;

/// The lock that keeps validation runs from overlapping across instances.
pub(crate) const VALIDATION_LOCK: &str = "locks:tokens:validate";

/// Due tokens read from the store at a time.
const PAGE: usize = 256;

/// The validation job: `token-validate`'s work, and `avatar-local`'s on a timer.
pub struct TokenValidator {
    keeper: TokenKeeper,
    twitch: Arc<TwitchClient>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "Twitch is not configured (TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET): no token to validate"
)]
pub struct ValidatorNotConfigured;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    /// Twitch accepted the token.
    pub validated: usize,
    /// Twitch refused the token and a refresh replaced it.
    pub refreshed: usize,
    /// The refresh was refused too: the connection ended (`need_reauth`).
    pub revoked: usize,
    /// Failed this time (Twitch unreachable, a token that does not open…); due again next run.
    pub errors: usize,
    /// The deadline came before every due token was validated; the next run continues.
    pub cut_off: bool,
    /// Another instance was validating; this run did nothing.
    pub skipped: bool,
    /// Wall time of the run.
    pub duration_ms: u64,
}

/// How one token's validation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Validated,
    Refreshed,
    Revoked,
    Error,
    /// Not finished before the deadline; still due.
    CutOff,
}

impl ValidationReport {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Validated => self.validated += 1,
            Outcome::Refreshed => self.refreshed += 1,
            Outcome::Revoked => self.revoked += 1,
            Outcome::Error => self.errors += 1,
            Outcome::CutOff => self.cut_off = true,
        }
    }

    fn count_into(&self, metrics: &crate::metrics::TokenMetrics) {
        metrics.validated(ValidationOutcome::Valid, self.validated as u64);
        metrics.validated(ValidationOutcome::Refreshed, self.refreshed as u64);
        metrics.validated(ValidationOutcome::Revoked, self.revoked as u64);
        metrics.validated(ValidationOutcome::Error, self.errors as u64);
    }
}

impl ScheduledJob for TokenValidator {
    async fn run(&self, stop_at: Instant) -> serde_json::Value {
        let report = self.run_at(now_ms(), stop_at).await;
        serde_json::to_value(report).unwrap_or_default()
    }
}

impl TokenValidator {
    /// `None` without Twitch credentials.
    pub fn new(keeper: &TokenKeeper) -> Option<Self> {
        Some(Self {
            keeper: keeper.clone(),
            twitch: keeper.twitch.clone()?,
        })
    }

    /// `avatar-local`'s timer: a run of at most `slice` every `every` (the first at once: Twitch
    /// wants tokens validated when an app starts), until `shutdown`. A run in progress is
    /// finished, not cancelled, so no refresh is cut off half-way.
    pub async fn run_every(
        &self,
        every: Duration,
        slice: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {
                    self.run(now_ms(), Instant::now() + slice, Deadline::Soft).await;
                }
            }
        }
    }

    /// One run as if the time were `now` (Unix ms; tests pass a virtual clock): validates the
    /// tokens due at `now` until none is left or `stop_at` comes. `stop_at` is a hard
    /// deadline, as a Lambda invocation's: a refresh starts only if it can finish before it.
    pub async fn run_at(&self, now: i64, stop_at: Instant) -> ValidationReport {
        self.run(now, stop_at, Deadline::Hard).await
    }

    #[tracing::instrument(name = "tokens.validate_run", skip_all)]
    async fn run(&self, now: i64, stop_at: Instant, deadline: Deadline) -> ValidationReport {
        let started = Instant::now();
        let mut report = ValidationReport::default();
        let keeper = &self.keeper;
        // Held past the deadline by as long as a refresh started just before it may take.
        let hold = stop_at.saturating_duration_since(started) + refresh_budget(keeper);
        let lock = match keeper.locks.try_lock(VALIDATION_LOCK, hold).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                report.skipped = true;
                return report;
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "no validation this run: the lock could not be taken");
                report.errors += 1;
                return report;
            }
        };
        self.validate_due(now, stop_at, deadline, &mut report).await;
        if let Err(e) = crate::outbox::relay_pending(&keeper.store, &keeper.bus).await {
            tracing::warn!(error = %error_chain(&e), "events wait in the outbox for the bus");
        }
        if let Err(e) = keeper.locks.release(&lock).await {
            tracing::warn!(error = %error_chain(&e), "the validation lock was not released; it expires by itself");
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.count_into(&keeper.metrics.tokens);
        tracing::info!(
            validated = report.validated,
            refreshed = report.refreshed,
            revoked = report.revoked,
            errors = report.errors,
            cut_off = report.cut_off,
            "token validation run done"
        );
        report
    }

    async fn validate_due(
        &self,
        now: i64,
        stop_at: Instant,
        deadline: Deadline,
        report: &mut ValidationReport,
    ) {
        let keeper = &self.keeper;
        let config = &keeper.config;
        let due_before = now - config.validate_due_after.as_millis() as i64;
        let permits = Arc::new(Semaphore::new(config.validate_concurrency));
        // Anchored ticks: a late tick does not push the later ones back (the rate holds), and
        // missed ones are skipped rather than sent in a burst (the rate is never exceeded).
        let mut pace =
            tokio::time::interval(Duration::from_secs(1) / config.validate_rate_per_sec.max(1));
        pace.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut in_flight = JoinSet::new();
        let mut cursor = None;
        'pages: loop {
            let page = match keeper
                .store
                .tokens_due_for_validation(Provider::Twitch, due_before, cursor.clone(), PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "the due tokens could not be read");
                    report.errors += 1;
                    break;
                }
            };
            let last_page = page.len() < PAGE;
            for (position, stored) in page {
                cursor = Some(position);
                let permit = tokio::select! {
                    permit = permits.clone().acquire_owned() => permit,
                    _ = tokio::time::sleep_until(stop_at) => {
                        report.cut_off = true;
                        break 'pages;
                    }
                };
                let Ok(permit) = permit else { break 'pages };
                tokio::select! {
                    _ = pace.tick() => {}
                    _ = tokio::time::sleep_until(stop_at) => {
                        report.cut_off = true;
                        break 'pages;
                    }
                }
                let (keeper, twitch) = (keeper.clone(), self.twitch.clone());
                in_flight.spawn(
                    async move {
                        let outcome =
                            validate_one(&keeper, &twitch, stored, now, stop_at, deadline).await;
                        drop(permit);
                        outcome
                    }
                    // Its log lines keep the run's span fields (request id, function).
                    .in_current_span(),
                );
                while let Some(done) = in_flight.try_join_next() {
                    report.count(done.unwrap_or(Outcome::Error));
                }
            }
            if last_page {
                break;
            }
        }
        while let Some(done) = in_flight.join_next().await {
            report.count(done.unwrap_or(Outcome::Error));
        }
    }
}

/// What happens at a run's `stop_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The process is stopped then (a Lambda invocation's deadline): a refresh must fit
    /// before it.
    Hard,
    /// Only new work stops then (`avatar-local`'s slices): a refresh in time or not finishes.
    Soft,
}

/// The longest a refresh may take: it is never cut off half-way (Twitch would have rotated
/// the refresh token while the new one was not stored), so one starts only with this much
/// time left.
fn refresh_budget(keeper: &TokenKeeper) -> Duration {
    keeper.provider_timeout * 2 + Duration::from_secs(1)
}

async fn validate_one(
    keeper: &TokenKeeper,
    twitch: &TwitchClient,
    stored: StoredTokens,
    now: i64,
    stop_at: Instant,
    deadline: Deadline,
) -> Outcome {
    let user = stored.twitch_user_id.clone();
    let tokens = match open_active(keeper, Provider::Twitch, &stored) {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::warn!(streamer = %user, error = %error_chain(&e), "a stored token could not be opened for validation");
            return Outcome::Error;
        }
    };
    // Validation has no effect at Twitch, so it may be cut off at the deadline.
    let asked_at = now_ms();
    let answer =
        match tokio::time::timeout_at(stop_at, twitch.validate(tokens.access_token.expose())).await
        {
            Ok(answer) => answer,
            Err(_) => return Outcome::CutOff,
        };
    match answer {
        Ok(validation) => {
            // Twitch's word on the lifetime replaces the stored one, which only counted from
            // the issue and knows nothing of what happened at Twitch since.
            let expires_at = expiry_from_validation(asked_at, validation.expires_in);
            let sealed = tokens.sealed_access.clone();
            match keeper
                .store
                .record_validation(&user, Provider::Twitch, sealed, now, expires_at)
                .await
            {
                // `false`: replaced meanwhile (a new login or refresh), which counts as validated.
                Ok(_) => Outcome::Validated,
                Err(e) => {
                    tracing::warn!(streamer = %user, error = %error_chain(&e), "a validation could not be recorded");
                    Outcome::Error
                }
            }
        }
        Err(e) if e.is_unauthorized() => {
            if deadline == Deadline::Hard
                && stop_at.saturating_duration_since(Instant::now()) < refresh_budget(keeper)
            {
                return Outcome::CutOff;
            }
            match refresh(keeper, &user, Provider::Twitch, &tokens).await {
                Ok(_) => Outcome::Refreshed,
                Err(TokenError::NeedsReauth(_)) => Outcome::Revoked,
                Err(e) => {
                    tracing::warn!(streamer = %user, error = %error_chain(&e), "a refused token could not be refreshed");
                    Outcome::Error
                }
            }
        }
        Err(e) => {
            tracing::warn!(streamer = %user, error = %error_chain(&e), "Twitch did not validate a token");
            Outcome::Error
        }
    }
}
