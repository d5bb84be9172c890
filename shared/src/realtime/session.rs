//! One streamer's realtime socket, for as long as the bridge holds their shard: connect with
//! the streamer's socket token, ask DonationAlerts for the channel token, subscribe, record
//! every pushed donation, keep the access token fresh; after a drop, reconnect with jittered
//! backoff (the poller reconciles after every subscribe, so what the gap missed is found).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::BridgeParts;
use super::grants::{Ask, Urgency};
use crate::coordination::Priority;
use crate::domain::event::ReceivedDonation;
use crate::domain::{DaUserId, Provider, TwitchUserId, now_ms, rfc3339_utc};
use crate::poll::schedule::Backoff;
use crate::providers::ProviderError;
use crate::providers::centrifugo::{CentrifugoError, CentrifugoSocket, Publication};
use crate::providers::donationalerts::{donation_channel, parse_pushed_donation};
use crate::store::StoreError;
use crate::store::donationalerts::{DonationsFound, Found, PollRecorded};
use crate::telemetry::error_chain;
use crate::tokens::{self, TokenError, UsableTokens};

/// How long a refresh that failed for now waits before the next try.
const REFRESH_RETRY: Duration = Duration::from_secs(60);
/// A subscription that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// New socket tokens asked for in a row after connects refused with "token expired".
const SOCKET_TOKEN_ATTEMPTS: usize = 2;

/// Who a session is for.
#[derive(Debug, Clone)]
pub(crate) struct SessionTarget {
    pub streamer: TwitchUserId,
    pub da_user_id: DaUserId,
    pub shard: u32,
    /// The shard lease's fencing token: every push is recorded under it.
    pub fence: u64,
    pub urgency: Urgency,
    /// Its place among the sessions asking for grants (see [`Ask::place`]).
    pub place: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("the streamer's tokens are unusable")]
    Tokens(#[from] TokenError),
    #[error("DonationAlerts failed")]
    Provider(#[from] ProviderError),
    #[error("the realtime socket failed")]
    Socket(#[from] CentrifugoError),
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("DonationAlerts gave no socket token")]
    NoSocketToken,
    #[error("the bridge is stopping")]
    Stopping,
}

/// A session's turn at the grant queue, possibly taken already: the first grant of a
/// connection is waited for before the connection's (much larger) future exists, so that
/// the thousands of sessions waiting during a warm-up stay small.
struct Turn {
    ask: Ask,
    banked: bool,
}

impl Turn {
    /// Waits for a grant (uses the banked one first); `Stopping` when the bridge stops.
    async fn take(&mut self, parts: &BridgeParts) -> Result<(), SessionError> {
        if std::mem::take(&mut self.banked) || parts.grants.grant(self.ask).await {
            Ok(())
        } else {
            Err(SessionError::Stopping)
        }
    }
}

/// How one connection ended.
enum Ended {
    /// The bridge let go of the streamer (shutdown, shard lost, disconnected).
    Stopped,
    /// The connection must be made again (after the backoff).
    Dropped(SessionError),
    /// The streamer must connect DonationAlerts again: nothing to reconnect with.
    NeedsReauth,
    /// A newer holder of the shard recorded already: this process lost it.
    ShardLost,
}

/// Runs the session until `stop` says stop (or the streamer's connection ends).
pub(crate) async fn run(
    parts: Arc<BridgeParts>,
    target: SessionTarget,
    stop: watch::Receiver<bool>,
) {
    // The same backoff as a failing poll's (1 s doubling to a minute), jittered.
    let mut backoff = Backoff::default();
    let mut priority = Priority::Subscribe;
    loop {
        if *stop.borrow() {
            break;
        }
        let ask = Ask {
            priority,
            urgency: target.urgency,
            place: target.place,
        };
        let mut waiting = stop.clone();
        tokio::select! {
            granted = parts.grants.grant(ask) => if !granted { break },
            _ = waiting.wait_for(|s| *s) => break,
        }
        let started = Instant::now();
        let turn = Turn { ask, banked: true };
        let ended = Box::pin(connect_and_listen(&parts, &target, turn, stop.clone())).await;
        parts.unmark_subscribed(&target.streamer);
        let wait = match ended {
            Ended::Stopped => break,
            Ended::NeedsReauth => {
                tracing::warn!(streamer = %target.streamer, "realtime alerts stop until the streamer reconnects DonationAlerts");
                break;
            }
            Ended::ShardLost => {
                tracing::warn!(streamer = %target.streamer, shard = target.shard, "a newer holder of the shard recorded already; this socket closes");
                break;
            }
            Ended::Dropped(e) => {
                if started.elapsed() >= STABLE_AFTER {
                    backoff.succeed();
                }
                let wait = jittered(backoff.fail(None));
                tracing::info!(streamer = %target.streamer, error = %error_chain(&e), wait_ms = wait.as_millis() as u64, "realtime socket dropped; reconnecting");
                wait
            }
        };
        priority = Priority::Resubscribe;
        let mut stop_wait = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop_wait.wait_for(|s| *s) => break,
        }
        parts.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Jitter over a backoff's `ceiling`: a mass drop does not come back as one wave.
fn jittered(ceiling: Duration) -> Duration {
    let bytes = crate::secret::random_bytes(4);
    let fraction = f64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        / f64::from(u32::MAX);
    // At least half the ceiling, so a flapping socket still slows down.
    ceiling.mul_f64(0.5 + fraction / 2.0)
}

async fn connect_and_listen(
    parts: &Arc<BridgeParts>,
    target: &SessionTarget,
    turn: Turn,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    // Boxed: only while connecting is its (large) state needed, not while listening.
    let connected = tokio::select! {
        connected = Box::pin(connect(parts, target, turn)) => connected,
        _ = stop.wait_for(|s| *s) => return Ended::Stopped,
    };
    let (mut socket, mut tokens) = match connected {
        Ok(Some(connected)) => connected,
        Ok(None) => return Ended::NeedsReauth,
        Err(SessionError::Stopping) => return Ended::Stopped,
        Err(e) => return Ended::Dropped(e),
    };
    let since = now_ms();
    parts.mark_subscribed(&target.streamer, since).await;
    tracing::info!(streamer = %target.streamer, shard = target.shard, "subscribed to realtime donations");
    let channel = donation_channel(target.da_user_id);
    let margin = parts.tokens.config.refresh_margin;
    let ended = loop {
        let refresh_at = refresh_due(&tokens, margin);
        let event = tokio::select! {
            _ = stop.wait_for(|s| *s) => break Ended::Stopped,
            pushed = socket.next_push() => Some(pushed),
            _ = tokio::time::sleep_until(refresh_at) => None,
        };
        match event {
            Some(Ok(publication)) if publication.channel == channel => {
                if let Some(ended) = Box::pin(record_push(parts, target, publication)).await {
                    break ended;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => break Ended::Dropped(e.into()),
            None => {
                match Box::pin(refresh_while_subscribed(parts, target, &tokens, &mut stop)).await {
                    Ok(Some(fresh)) => tokens = fresh,
                    Ok(None) => {}
                    Err(ended) => break ended,
                }
            }
        }
    };
    socket.close().await;
    parts.stats.connected.fetch_sub(1, Ordering::Relaxed);
    ended
}

/// Refreshes the access token of a subscribed socket: `Ok(None)` when the refresh failed for
/// now (the socket stays up and it is tried again after a while), `Err` when the session
/// ends.
async fn refresh_while_subscribed(
    parts: &Arc<BridgeParts>,
    target: &SessionTarget,
    tokens: &UsableTokens,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<UsableTokens>, Ended> {
    let ask = Ask {
        priority: Priority::Resubscribe,
        urgency: target.urgency,
        place: target.place,
    };
    if !parts.grants.grant(ask).await {
        return Err(Ended::Stopped);
    }
    match refreshed(parts, target, tokens).await {
        Ok(Some(fresh)) => Ok(Some(fresh)),
        Ok(None) => Err(Ended::NeedsReauth),
        Err(e) => {
            tracing::warn!(streamer = %target.streamer, error = %error_chain(&e), "access token not refreshed; trying again later");
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_RETRY) => Ok(None),
                _ = stop.wait_for(|s| *s) => Err(Ended::Stopped),
            }
        }
    }
}

/// When the access token is due for a refresh (far off when it has no expiry).
fn refresh_due(tokens: &UsableTokens, margin: Duration) -> Instant {
    let Some(expires_at) = tokens.expires_at else {
        return Instant::now() + Duration::from_secs(24 * 3600);
    };
    let left = Duration::from_millis((expires_at - now_ms()).max(0) as u64);
    Instant::now() + left.saturating_sub(margin)
}

/// Opens and subscribes the streamer's socket; `Ok(None)` when their connection has ended
/// (`need_reauth`).
async fn connect(
    parts: &Arc<BridgeParts>,
    target: &SessionTarget,
    mut turn: Turn,
) -> Result<Option<(CentrifugoSocket, UsableTokens)>, SessionError> {
    let streamer = &target.streamer;
    let loaded = tokens::load(&parts.tokens, streamer, Provider::DonationAlerts).await;
    let Some(mut tokens) = unless_ended(loaded)? else {
        return Ok(None);
    };
    let margin = parts.tokens.config.refresh_margin;
    if !tokens.valid_for(margin) {
        match refresh(parts, target, &mut turn, &tokens).await? {
            Some(fresh) => tokens = fresh,
            None => return Ok(None),
        }
    }
    let mut refreshed = false;
    let mut attempts = 0;
    let mut socket = loop {
        turn.take(parts).await?;
        let user = match parts.client.user(tokens.access_token.expose()).await {
            Err(e) if e.is_unauthorized() && !refreshed => {
                refreshed = true;
                match refresh(parts, target, &mut turn, &tokens).await? {
                    Some(fresh) => tokens = fresh,
                    None => return Ok(None),
                }
                continue;
            }
            Err(e) if e.is_unauthorized() => {
                tokens::connection_lost(&parts.tokens, streamer, Provider::DonationAlerts, &tokens)
                    .await?;
                return Ok(None);
            }
            other => other?,
        };
        let socket_token = user
            .socket_connection_token
            .ok_or(SessionError::NoSocketToken)?;
        match parts.centrifugo.connect(socket_token.expose()).await {
            Err(CentrifugoError::TokenExpired) if attempts + 1 < SOCKET_TOKEN_ATTEMPTS => {
                attempts += 1;
            }
            other => break other?,
        }
    };
    parts.stats.connected.fetch_add(1, Ordering::Relaxed);
    let subscribed = subscribe(parts, target, &mut turn, &tokens, &mut socket).await;
    if let Err(e) = subscribed {
        parts.stats.connected.fetch_sub(1, Ordering::Relaxed);
        socket.close().await;
        return Err(e);
    }
    Ok(Some((socket, tokens)))
}

async fn subscribe(
    parts: &Arc<BridgeParts>,
    target: &SessionTarget,
    turn: &mut Turn,
    tokens: &UsableTokens,
    socket: &mut CentrifugoSocket,
) -> Result<(), SessionError> {
    turn.take(parts).await?;
    let channel = donation_channel(target.da_user_id);
    let channel_token = parts
        .client
        .subscribe_channel(tokens.access_token.expose(), socket.client_id(), &channel)
        .await?;
    socket.subscribe(&channel, channel_token.expose()).await?;
    Ok(())
}

/// A grant, then the refresh; `Ok(None)` when the provider refused it (`need_reauth`).
async fn refresh(
    parts: &Arc<BridgeParts>,
    target: &SessionTarget,
    turn: &mut Turn,
    tokens: &UsableTokens,
) -> Result<Option<UsableTokens>, SessionError> {
    turn.take(parts).await?;
    Ok(refreshed(parts, target, tokens).await?)
}

/// The streamer's DonationAlerts tokens refreshed; `Ok(None)` when their connection has ended.
async fn refreshed(
    parts: &BridgeParts,
    target: &SessionTarget,
    tokens: &UsableTokens,
) -> Result<Option<UsableTokens>, TokenError> {
    let refreshed = tokens::refresh(
        &parts.tokens,
        &target.streamer,
        Provider::DonationAlerts,
        tokens,
    )
    .await;
    unless_ended(refreshed)
}

/// `None` for the errors that say the streamer's connection has ended (nothing stored, or
/// `need_reauth`): there is nothing to connect with until they connect again.
fn unless_ended<T>(result: Result<T, TokenError>) -> Result<Option<T>, TokenError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(TokenError::NeedsReauth(_) | TokenError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records one pushed donation; `Some` when the session must end.
async fn record_push(
    parts: &Arc<BridgeParts>,
    target: &SessionTarget,
    publication: Publication,
) -> Option<Ended> {
    let received = Instant::now();
    parts.stats.count_push();
    let donation = match parse_pushed_donation(&publication.data) {
        Ok(donation) => donation,
        Err(e) => {
            // The reconciliation poll reads it from the list instead.
            tracing::warn!(streamer = %target.streamer, error = %error_chain(&e), "a pushed donation could not be read; the next poll finds it");
            return None;
        }
    };
    let received_at = rfc3339_utc(now_ms());
    let found = DonationsFound {
        streamer: target.streamer.clone(),
        da_user_id: target.da_user_id,
        fence: target.fence,
        donations: vec![ReceivedDonation::new(
            &target.streamer,
            target.da_user_id,
            donation,
            &received_at,
        )],
        received_at,
        found: Found::Pushed {
            shard: target.shard,
        },
    };
    match parts.store.record_donations(found).await {
        Ok(PollRecorded::Recorded { new_donation_ids }) => {
            if !new_donation_ids.is_empty() {
                parts.relay_soon(received);
            }
            None
        }
        Ok(PollRecorded::StaleFence { .. }) => {
            parts.stats.stale_fences.fetch_add(1, Ordering::Relaxed);
            Some(Ended::ShardLost)
        }
        Ok(PollRecorded::NotLinked) => Some(Ended::NeedsReauth),
        Err(e) => {
            tracing::warn!(streamer = %target.streamer, error = %error_chain(&e), "a pushed donation was not recorded; the next poll finds it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_a_minute_with_jitter_of_at_most_half() {
        let mut backoff = Backoff::default();
        for failures in 1..30u32 {
            let wait = jittered(backoff.fail(None));
            let ceiling = Duration::from_secs(1)
                .saturating_mul(1 << (failures - 1).min(16))
                .min(Duration::from_secs(60));
            assert!(wait <= ceiling, "{failures}: {wait:?}");
            assert!(wait >= ceiling / 2, "{failures}: {wait:?}");
        }
    }
}
