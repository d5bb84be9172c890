//! One poll of one streamer: take their lock, read what is new, record it, let go.
//!
//! 1. `locks:donationalerts:{streamerTwitchId}` (node-redlock format, TTL
//!    `DA_POLL_LOCK_TTL_MS`): held by another instance or by the Node app, the streamer is
//!    skipped this round.
//! 2. A streamer polled by anyone less than `min_gap` ago is left alone (several instances
//!    share one schedule this way, without spending the budget twice).
//! 3. Page 1 of `/api/v1/alerts/donations` (or, when the last poll stopped short of the
//!    cursor, the page it stopped at), then `links.next`, until a donation at or below the
//!    stored high-water id, the end of the list or an empty page. Every request first takes
//!    a grant from the app-wide limiter; the lock is extended before each further page.
//!    The opened tokens come from the poller's cache when it has them (see `cache`).
//! 4. A poll is bounded whatever DonationAlerts answers: at most [`MAX_PAGES_PER_POLL`]
//!    pages, [`MAX_DONATIONS_PER_POLL`] donations and [`MAX_TEXT_BYTES_PER_POLL`] of text
//!    held (each answer at most 1 MiB, see `providers`), no `next` link followed twice, and it
//!    stops at once when the poller stops (shutdown, a Lambda deadline), also while waiting
//!    for the budget or for a page. A poll that stops before the cursor records what it
//!    read and leaves the cursor where it is; the next goes on from there (see
//!    `store::donationalerts`), so nothing is skipped.
//! 5. A 401 refreshes the tokens once and retries; a second 401, or a refused refresh,
//!    marks the connection `need_reauth`. A refresh is never cut short: DonationAlerts
//!    rotates the refresh token, and the new one must be stored.
//! 6. New donations, their events and the cursor go into one write carrying the lock's
//!    fencing token (see `store::donationalerts`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::cache::StreamerCache;
use super::schedule::PollOutcome;
use super::{PollParts, StopSignal};
use crate::coordination::{CoordinationError, Lock, Priority, RateLimit};
use crate::domain::event::ReceivedDonation;
use crate::domain::{Donation, Provider, TwitchUserId, now_ms};
use crate::providers::ProviderError;
use crate::providers::donationalerts::{DonationAlertsClient, DonationPage};
use crate::store::StoreError;
use crate::store::donationalerts::{PollRecorded, PollResult, PollState};
use crate::telemetry::error_chain;
use crate::tokens::{self, TokenError, UsableTokens};

/// The app-wide DonationAlerts request budget, shared by every instance.
pub(crate) const DA_RATE_LIMIT_KEY: &str = "ratelimit:donationalerts";
/// The limiter that caps what realtime work takes of the budget: the bridges' calls and the
/// reconciliation polls behind their subscriptions. Routine polling keeps the rest whatever
/// happens to the sockets.
pub(crate) const REALTIME_RATE_LIMIT_KEY: &str = "ratelimit:donationalerts:realtime";
/// The most of the budget realtime work takes (the limiter `ratelimit:donationalerts:realtime`).
pub const REALTIME_BUDGET_SHARE: f64 = 0.8;

/// The limiter that caps the bridges' own calls to two thirds of the realtime share, so that
/// the reconciliation polls behind their (re)subscriptions keep a third (one poll for every
/// two calls of a subscription).
pub(crate) const BRIDGE_RATE_LIMIT_KEY: &str = "ratelimit:donationalerts:bridge";

/// The realtime share of a budget of `per_minute` requests a minute.
pub(crate) fn realtime_share(per_minute: u32) -> RateLimit {
    RateLimit::per_minute(((f64::from(per_minute) * REALTIME_BUDGET_SHARE).floor() as u32).max(1))
}

/// The bridges' part of the realtime share (see [`BRIDGE_RATE_LIMIT_KEY`]).
pub(crate) fn bridge_share(per_minute: u32) -> RateLimit {
    let share = f64::from(per_minute) * REALTIME_BUDGET_SHARE * 2.0 / 3.0;
    RateLimit::per_minute((share.floor() as u32).max(1))
}

/// The most pages one poll reads: 600 donations at DonationAlerts' 30 a page, far more than
/// arrive between two polls. A longer backlog (after an outage) takes a few polls.
pub const MAX_PAGES_PER_POLL: usize = 20;
/// The most donations one poll holds; it stops after the page that reaches this.
pub const MAX_DONATIONS_PER_POLL: usize = 1_000;
/// The most text (donor names, messages) one poll holds, in bytes; it stops after the page
/// that reaches this. With the field caps a real poll holds a small fraction of it.
pub const MAX_TEXT_BYTES_PER_POLL: usize = 2 * 1024 * 1024;

/// The poll lock of a streamer, as the Node app names it.
pub(crate) fn poll_lock(streamer: &TwitchUserId) -> String {
    format!("locks:donationalerts:{streamer}")
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PollError {
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
    #[error("the poller is stopping")]
    Stopped,
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
            Self::NoBudget => PollOutcome::NoBudget,
            Self::LockLost | Self::Stopped => PollOutcome::Locked,
            _ => PollOutcome::Failed { retry_after: None },
        }
    }
}

/// What every poll of one poller works with.
#[derive(Clone)]
pub struct PollContext {
    pub parts: Arc<PollParts>,
    pub cache: Arc<StreamerCache>,
    /// A streamer polled by anyone less than this long ago is left alone.
    pub min_gap: Duration,
    pub stop: StopSignal,
    /// Since when (Unix ms) the streamer has a live realtime subscription, if they have one:
    /// this poll reconciles behind it (its budget grants come before routine polls', and a
    /// poll made before the subscription began does not count as recent).
    pub subscribed_since: Option<i64>,
}

impl PollContext {
    fn priority(&self) -> Priority {
        match self.subscribed_since {
            Some(_) => Priority::Reconcile,
            None => Priority::Poll,
        }
    }
}

/// Polls `streamer` once; never fails, but says how it went.
#[tracing::instrument(name = "poll.streamer", skip_all, fields(streamer = %streamer))]
pub async fn poll_streamer(cx: &PollContext, streamer: &TwitchUserId) -> PollOutcome {
    let (parts, stats) = (&*cx.parts, &cx.parts.stats);
    let resource = poll_lock(streamer);
    let lock = match parts
        .locks
        .try_lock(&resource, parts.polling.lock_ttl)
        .await
    {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            stats.count_skipped_locked();
            return PollOutcome::Locked;
        }
        Err(e) => {
            stats.count_error();
            tracing::warn!(error = %error_chain(&e), "the poll lock could not be asked for");
            return PollOutcome::Failed { retry_after: None };
        }
    };
    tracing::trace!(streamer = %streamer, fence = lock.fence, "poll lock taken");
    let result = poll_holding_lock(cx, streamer, &lock).await;
    if let Err(e) = parts.locks.release(&lock).await {
        tracing::debug!(error = %error_chain(&e), "the poll lock was not released; it expires by itself");
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            let outcome = e.outcome();
            if outcome == PollOutcome::NeedsReauth {
                tracing::warn!(error = %error_chain(&e), "polling stops until the streamer reconnects DonationAlerts");
            } else if !matches!(outcome, PollOutcome::Locked | PollOutcome::NoBudget) {
                stats.count_error();
                if e.is_provider_failure() {
                    stats.count_provider_error();
                }
                tracing::warn!(error = %error_chain(&e), "poll failed; the streamer backs off");
            }
            outcome
        }
    };
    if outcome == PollOutcome::NeedsReauth {
        cx.cache.forget(streamer);
    }
    outcome
}

/// How a walk down the donation list ended.
enum WalkEnd {
    /// At the cursor, at the end of the list (no `next`) or at an empty page.
    Complete,
    /// Stopped before; the next poll goes on from `resume` (page 1 when `None`).
    Partial { resume: Option<String> },
}

/// What a walk has read so far, each donation already within the field caps.
struct Walk {
    found: Vec<Donation>,
    text_bytes: usize,
    seen_high_water: Option<i64>,
    pages: usize,
    /// The `next` links requested, so none is requested twice.
    followed: HashSet<String>,
    received_at: String,
}

impl Walk {
    fn add(&mut self, page: Vec<Donation>) {
        self.pages += 1;
        for donation in page {
            self.seen_high_water = self.seen_high_water.max(Some(donation.id));
            self.text_bytes += donation.donor_name.as_ref().map_or(0, String::len)
                + donation.message.len()
                + donation.currency.len()
                + donation.created_at.len();
            self.found.push(donation);
        }
    }

    /// Whether this poll has read as much as one poll may.
    fn is_full(&self) -> bool {
        self.pages >= MAX_PAGES_PER_POLL
            || self.found.len() >= MAX_DONATIONS_PER_POLL
            || self.text_bytes >= MAX_TEXT_BYTES_PER_POLL
    }
}

async fn poll_holding_lock(
    cx: &PollContext,
    streamer: &TwitchUserId,
    lock: &Lock,
) -> Result<PollOutcome, PollError> {
    let (parts, client, stats) = (&*cx.parts, &*cx.parts.client, &*cx.parts.stats);
    let Some(state) = parts.store.poll_state(streamer).await? else {
        return Ok(PollOutcome::NeedsReauth);
    };
    if state.last_polled_at.is_some_and(|at| {
        now_ms() - at < cx.min_gap.as_millis() as i64
            && cx.subscribed_since.is_none_or(|since| at >= since)
    }) {
        return Ok(PollOutcome::PolledElsewhere);
    }
    let mut tokens = match cx.cache.get(streamer) {
        Some(tokens) => tokens,
        None => {
            let tokens = tokens::load(&parts.tokens, streamer, Provider::DonationAlerts).await?;
            cx.cache.put(streamer, tokens.clone());
            tokens
        }
    };
    let mut lock = lock.clone();
    if !tokens.valid_for(parts.tokens.config.refresh_margin) {
        take_budget(cx, &lock).await?;
        tokens =
            tokens::refresh(&parts.tokens, streamer, Provider::DonationAlerts, &tokens).await?;
        cx.cache.put(streamer, tokens.clone());
    }
    let mut walk = Walk {
        found: Vec::new(),
        text_bytes: 0,
        seen_high_water: None,
        pages: 0,
        followed: HashSet::new(),
        received_at: crate::domain::rfc3339_utc(now_ms()),
    };
    let mut next = resume_link(client, &state);
    let mut refreshed = false;
    let end = loop {
        if cx.stop.is_set() {
            break WalkEnd::Partial { resume: next };
        }
        if walk.pages > 0 {
            lock = parts
                .locks
                .extend(&lock, parts.polling.lock_ttl)
                .await?
                .ok_or(PollError::LockLost)?;
        }
        match take_budget(cx, &lock).await {
            Err(PollError::Stopped) => break WalkEnd::Partial { resume: next },
            other => other?,
        }
        if let Some(link) = &next {
            walk.followed.insert(link.clone());
        }
        let fetched = tokio::select! {
            // A page is a GET: dropping it half-way changes nothing.
            _ = cx.stop.wait() => break WalkEnd::Partial { resume: next },
            page = fetch(client, next.as_deref(), &tokens) => page,
        };
        let page = match fetched {
            Err(e) if e.is_unauthorized() && !refreshed => {
                refreshed = true;
                match take_budget(cx, &lock).await {
                    Err(PollError::Stopped) => break WalkEnd::Partial { resume: next },
                    other => other?,
                }
                tokens =
                    tokens::refresh(&parts.tokens, streamer, Provider::DonationAlerts, &tokens)
                        .await?;
                cx.cache.put(streamer, tokens.clone());
                continue;
            }
            Err(e) if e.is_unauthorized() => {
                tokens::connection_lost(&parts.tokens, streamer, Provider::DonationAlerts, &tokens)
                    .await?;
                return Ok(PollOutcome::NeedsReauth);
            }
            other => other?,
        };
        let reached_cursor = match state.cursor {
            // Before the baseline: page 1 tells the newest id, the rest is history.
            None => true,
            Some(cursor) => page.data.iter().any(|d| d.id <= cursor),
        };
        let empty = page.data.is_empty();
        walk.add(page.data);
        let Some(link) = page.links.next else {
            break WalkEnd::Complete;
        };
        if reached_cursor || empty {
            break WalkEnd::Complete;
        }
        if walk.followed.contains(&link) {
            tracing::warn!(
                pages = walk.pages,
                "DonationAlerts' links.next names a page this poll read already; the next poll starts again from page 1"
            );
            break WalkEnd::Partial { resume: None };
        }
        if walk.is_full() {
            tracing::info!(
                pages = walk.pages,
                donations = walk.found.len(),
                "the poll read as much as one poll may; the next one goes on from there"
            );
            break WalkEnd::Partial { resume: Some(link) };
        }
        next = Some(link);
    };
    if walk.pages == 0 {
        // Stopped before reading anything: nothing to record, no penalty.
        return Ok(PollOutcome::Locked);
    }
    // Only a donation above the cursor can be new (the store checks again, under the fence),
    // and before the baseline nothing is: the others need no event made.
    let donations = walk
        .found
        .into_iter()
        .filter(|d| state.cursor.is_some_and(|cursor| d.id > cursor))
        .map(|d| ReceivedDonation::new(streamer, state.da_user_id, d, &walk.received_at))
        .collect();
    let result = PollResult {
        streamer: streamer.clone(),
        da_user_id: state.da_user_id,
        fence: lock.fence,
        donations,
        seen_high_water: walk.seen_high_water,
        received_at: walk.received_at,
    };
    let recorded = match end {
        WalkEnd::Complete => parts.store.record_poll(result).await?,
        WalkEnd::Partial { resume } => parts.store.record_partial_poll(result, resume).await?,
    };
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
            parts.locks.raise_fence(&poll_lock(streamer), newer).await?;
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

/// Where the last poll stopped short of the cursor, if this poll can go on from there. A
/// link the client would not follow (the configured host changed since) is dropped: starting
/// again from page 1 loses nothing, it only reads more.
fn resume_link(client: &DonationAlertsClient, state: &PollState) -> Option<String> {
    let link = state.resume_link.as_ref()?;
    match client.next_page_url(link) {
        Ok(_) => Some(link.clone()),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "the page the last poll stopped at is not followed; starting again from page 1");
            None
        }
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

/// Waits for a grant of the app-wide budget (for a reconciliation poll, first one of the
/// realtime share), as long as the lock stays valid and the poller is not stopping.
async fn take_budget(cx: &PollContext, lock: &Lock) -> Result<(), PollError> {
    if cx.priority() == Priority::Reconcile {
        let share = realtime_share(cx.parts.polling.rate_limit_per_minute);
        take_grant(cx, lock, REALTIME_RATE_LIMIT_KEY, &share).await?;
    }
    let limit = RateLimit::per_minute(cx.parts.polling.rate_limit_per_minute);
    take_grant(cx, lock, DA_RATE_LIMIT_KEY, &limit).await
}

async fn take_grant(
    cx: &PollContext,
    lock: &Lock,
    key: &str,
    limit: &RateLimit,
) -> Result<(), PollError> {
    let (parts, stats) = (&*cx.parts, &cx.parts.stats);
    loop {
        let decision = parts
            .budget
            .rate_limit_prioritized(key, limit, cx.priority())
            .await?;
        stats.note_budget(decision.remaining);
        if decision.allowed {
            return Ok(());
        }
        stats.count_budget_wait();
        // Leave a margin for the request itself before the lock runs out.
        let margin = parts.provider_timeout.min(lock.remaining() / 2);
        if Instant::now() + decision.retry_after + margin >= lock.valid_until {
            return Err(PollError::NoBudget);
        }
        tokio::select! {
            _ = cx.stop.wait() => return Err(PollError::Stopped),
            _ = tokio::time::sleep(decision.retry_after) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_locks_have_the_node_apps_names() {
        let id = TwitchUserId::parse("42").unwrap();
        assert_eq!(poll_lock(&id), "locks:donationalerts:42");
    }
}
