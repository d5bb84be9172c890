//! One poll of one streamer: take their lock, read what is new, record it, let go.
//!
//! 1. `locks:donationalerts:{streamerTwitchId}` (node-redlock format, TTL
//!    `DA_POLL_LOCK_TTL_MS`): held by another instance or by the Node app, the streamer is
//!    skipped this round.
//! 2. A streamer polled by anyone less than `min_gap` ago is left alone (several instances
//!    share one schedule this way, without spending the budget twice).
//! 3. Page 1 of `/api/v1/alerts/donations`, then `links.next`, until a donation at or below
//!    the stored high-water id. Every request first takes a grant from the app-wide
//!    limiter; the lock is extended before each further page.
//!    The opened tokens come from the poller's cache when it has them (see `cache`).
//! 4. A 401 refreshes the tokens once and retries; a second 401, or a refused refresh,
//!    marks the connection `need_reauth`.
//! 5. New donations, their events and the cursor go into one write carrying the lock's
//!    fencing token (see `store::donationalerts`).

use std::time::Duration;

use tokio::time::Instant;

use super::PollStats;
use super::cache::StreamerCache;
use super::schedule::PollOutcome;
use crate::app::App;
use crate::coordination::{CoordinationError, Lock, RateLimit};
use crate::oauth::ProviderError;
use crate::oauth::donationalerts::{DaDonation, DonationAlertsClient, DonationPage};
use crate::store::donationalerts::{NewDonation, PollRecorded, PollResult};
use crate::store::{StoreError, now_ms};
use crate::tokens::{self, Provider, TokenError, TwitchUserId, UsableTokens};

/// The app-wide DonationAlerts request budget, shared by every instance.
pub const DA_RATE_LIMIT_KEY: &str = "ratelimit:donationalerts";

/// The poll lock of a streamer, as the Node app names it.
pub fn poll_lock(streamer: &TwitchUserId) -> String {
    format!("locks:donationalerts:{streamer}")
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("the streamer's tokens are unusable")]
    Tokens(#[from] TokenError),
    #[error("DonationAlerts failed")]
    Provider(#[from] ProviderError),
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("coordination failed")]
    Coordination(#[from] CoordinationError),
    #[error("the request budget had no grant before the lock would expire")]
    NoBudget,
    #[error("the poll lock was lost before the poll finished")]
    LockLost,
}

impl PollError {
    /// DonationAlerts failed (also while refreshing the tokens), rather than this side.
    fn is_provider_failure(&self) -> bool {
        matches!(
            self,
            Self::Provider(_) | Self::Tokens(TokenError::Provider(_))
        )
    }

    /// How this failure reschedules the streamer.
    fn outcome(&self) -> PollOutcome {
        match self {
            Self::Tokens(TokenError::NeedsReauth(_) | TokenError::NotFound(_)) => {
                PollOutcome::NeedsReauth
            }
            Self::Provider(ProviderError::RateLimited { retry_after }) => PollOutcome::Failed {
                retry_after: *retry_after,
            },
            Self::LockLost | Self::NoBudget => PollOutcome::Locked,
            _ => PollOutcome::Failed { retry_after: None },
        }
    }
}

/// Polls `streamer` once; never fails, but says how it went.
#[tracing::instrument(name = "poll.streamer", skip_all, fields(streamer = %streamer))]
pub async fn poll_streamer(
    app: &App,
    client: &DonationAlertsClient,
    cache: &StreamerCache,
    streamer: &TwitchUserId,
    min_gap: Duration,
    stats: &PollStats,
) -> PollOutcome {
    let resource = poll_lock(streamer);
    let lock = match app
        .coordinator
        .try_lock(&resource, app.config.polling.lock_ttl)
        .await
    {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            stats.count_skipped_locked();
            return PollOutcome::Locked;
        }
        Err(e) => {
            stats.count_error();
            tracing::warn!(error = %crate::oauth::error_chain(&e), "the poll lock could not be asked for");
            return PollOutcome::Failed { retry_after: None };
        }
    };
    tracing::trace!(streamer = %streamer, fence = lock.fence, "poll lock taken");
    let result = poll_holding_lock(app, client, cache, streamer, &lock, min_gap, stats).await;
    if let Err(e) = app.coordinator.release(&lock).await {
        tracing::debug!(error = %e, "the poll lock was not released; it expires by itself");
    }
    match result {
        Ok(outcome) => {
            if outcome == PollOutcome::NeedsReauth {
                cache.forget(streamer);
            }
            outcome
        }
        Err(e) => {
            let outcome = e.outcome();
            if outcome == PollOutcome::NeedsReauth {
                cache.forget(streamer);
            }
            if outcome == PollOutcome::NeedsReauth {
                tracing::warn!(error = %crate::oauth::error_chain(&e), "polling stops until the streamer reconnects DonationAlerts");
            } else if outcome != PollOutcome::Locked {
                stats.count_error();
                if e.is_provider_failure() {
                    stats.count_provider_error();
                }
                tracing::warn!(error = %crate::oauth::error_chain(&e), "poll failed; the streamer backs off");
            }
            outcome
        }
    }
}

async fn poll_holding_lock(
    app: &App,
    client: &DonationAlertsClient,
    cache: &StreamerCache,
    streamer: &TwitchUserId,
    lock: &Lock,
    min_gap: Duration,
    stats: &PollStats,
) -> Result<PollOutcome, PollError> {
    let Some(state) = app.store.poll_state(streamer.as_str().to_owned()).await? else {
        return Ok(PollOutcome::NeedsReauth);
    };
    if state
        .last_polled_at
        .is_some_and(|at| now_ms() - at < min_gap.as_millis() as i64)
    {
        return Ok(PollOutcome::PolledElsewhere);
    }
    let mut tokens = match cache.get(streamer) {
        Some(tokens) => tokens,
        None => {
            let tokens = tokens::load(app, streamer, Provider::DonationAlerts).await?;
            cache.put(streamer, tokens.clone());
            tokens
        }
    };
    let mut lock = lock.clone();
    if !tokens.valid_for(app.config.tokens.refresh_margin) {
        take_budget(app, &lock, stats).await?;
        tokens = tokens::refresh(app, streamer, Provider::DonationAlerts, &tokens).await?;
        cache.put(streamer, tokens.clone());
    }
    let mut refreshed = false;
    let mut found: Vec<DaDonation> = Vec::new();
    let mut seen_high_water = None;
    let mut next: Option<String> = None;
    loop {
        if next.is_some() {
            lock = app
                .coordinator
                .extend(&lock, app.config.polling.lock_ttl)
                .await?
                .ok_or(PollError::LockLost)?;
        }
        take_budget(app, &lock, stats).await?;
        let page = match fetch(client, next.as_deref(), &tokens).await {
            Err(e) if e.is_unauthorized() && !refreshed => {
                refreshed = true;
                take_budget(app, &lock, stats).await?;
                tokens = tokens::refresh(app, streamer, Provider::DonationAlerts, &tokens).await?;
                cache.put(streamer, tokens.clone());
                continue;
            }
            Err(e) if e.is_unauthorized() => {
                tokens::connection_lost(app, streamer, Provider::DonationAlerts, &tokens).await?;
                return Ok(PollOutcome::NeedsReauth);
            }
            other => other?,
        };
        let page_high = page.data.iter().map(|d| d.id).max();
        seen_high_water = seen_high_water.max(page_high);
        let reached_cursor = match state.cursor {
            // Before the baseline: page 1 tells the newest id, the rest is history.
            None => true,
            Some(cursor) => page.data.iter().any(|d| d.id <= cursor),
        };
        found.extend(page.data);
        match page.links.next {
            Some(link) if !reached_cursor => next = Some(link),
            _ => break,
        }
    }
    let received_at = crate::store::rfc3339_utc(now_ms());
    let donations: Vec<NewDonation> = found
        .into_iter()
        .map(|d| new_donation(d, &received_at))
        .collect();
    let recorded = app
        .store
        .record_poll(PollResult {
            streamer_twitch_id: streamer.as_str().to_owned(),
            da_user_id: state.da_user_id,
            fence: lock.fence,
            donations,
            seen_high_water,
            received_at,
        })
        .await?;
    match recorded {
        PollRecorded::Recorded { new_donation_ids } => {
            stats.count_polled(new_donation_ids.len());
            if !new_donation_ids.is_empty() {
                tracing::info!(new = new_donation_ids.len(), "donations recorded");
            }
            Ok(PollOutcome::Polled {
                new_donations: new_donation_ids.len(),
            })
        }
        PollRecorded::StaleFence { newer } => {
            stats.count_stale_fence();
            // Either we outlived our lock (the newer holder's record stands), or Redis lost
            // its counters: raise them so the next holder's token is current again.
            app.coordinator
                .raise_fence(&poll_lock(streamer), newer)
                .await?;
            tracing::warn!(
                newer,
                ours = lock.fence,
                "a newer poll of this streamer won; nothing written"
            );
            Ok(PollOutcome::Locked)
        }
        PollRecorded::NotLinked => Ok(PollOutcome::NeedsReauth),
    }
}

async fn fetch(
    client: &DonationAlertsClient,
    next: Option<&str>,
    tokens: &UsableTokens,
) -> Result<DonationPage, ProviderError> {
    let token = tokens.access_token.expose();
    match next {
        None => client.donations(token).await,
        Some(link) => client.next_page(link, token).await,
    }
}

/// Waits for a grant of the app-wide budget, as long as the lock stays valid.
async fn take_budget(app: &App, lock: &Lock, stats: &PollStats) -> Result<(), PollError> {
    let limit = RateLimit::per_minute(app.config.polling.rate_limit_per_minute);
    loop {
        let decision = app
            .coordinator
            .rate_limit(DA_RATE_LIMIT_KEY, &limit)
            .await?;
        stats.note_budget(decision.remaining);
        if decision.allowed {
            return Ok(());
        }
        stats.count_budget_wait();
        // Leave a margin for the request itself before the lock runs out.
        let margin = app.config.provider_timeout.min(lock.remaining() / 2);
        if Instant::now() + decision.retry_after + margin >= lock.valid_until {
            return Err(PollError::NoBudget);
        }
        tokio::time::sleep(decision.retry_after).await;
    }
}

fn new_donation(donation: DaDonation, received_at: &str) -> NewDonation {
    NewDonation {
        created_at: da_time_to_rfc3339(&donation.created_at)
            .unwrap_or_else(|| received_at.to_owned()),
        da_donation_id: donation.id,
        donor_name: donation.username,
        message: donation.message,
        amount: donation.amount,
        currency: donation.currency,
    }
}

/// DonationAlerts writes `YYYY-MM-DD HH:MM:SS` in UTC without a zone; the event carries
/// RFC 3339 UTC. A time that already names its zone is converted to UTC.
pub fn da_time_to_rfc3339(text: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let naive = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let utc = match time::PrimitiveDateTime::parse(text.trim(), &naive) {
        Ok(at) => at.assume_utc(),
        Err(_) => time::OffsetDateTime::parse(text.trim(), &Rfc3339)
            .ok()?
            .to_offset(time::UtcOffset::UTC),
    };
    utc.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn donationalerts_times_become_rfc3339_utc() {
        assert_eq!(
            da_time_to_rfc3339("2019-09-29 09:00:00").as_deref(),
            Some("2019-09-29T09:00:00Z")
        );
        assert_eq!(
            da_time_to_rfc3339("2019-09-29T12:00:00+03:00").as_deref(),
            Some("2019-09-29T09:00:00Z")
        );
        assert_eq!(da_time_to_rfc3339("yesterday"), None);
    }

    #[test]
    fn poll_locks_have_the_node_apps_names() {
        let id = TwitchUserId::parse("42").unwrap();
        assert_eq!(poll_lock(&id), "locks:donationalerts:42");
    }
}
