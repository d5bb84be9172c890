//! The realtime bridge: DonationAlerts pushes every donation over a Centrifugo websocket
//! (one socket per streamer, [`session`]); the bridge holds those sockets for the streamers of
//! the shards it leases and records each pushed donation through the same fenced write the
//! poller uses ([`crate::store::Store::record_donations`]). The poller stays as
//! reconciliation: it finds what a dropped socket missed.
//!
//! - Shards ([`shards`]): streamers are hashed into `REALTIME_SHARDS` shards; shard `k` is
//!   held through the fenced lease `locks:realtime:shard:{k}`, renewed every third of its TTL.
//!   A process that dies loses its shards to the others within the TTL; one that cannot renew
//!   (paused, cut off from Redis) closes that shard's sockets, and a push it still records
//!   after the next holder claimed the shard is refused by the fence. Bridges share the
//!   shards evenly: each holds at most its fair share of the live bridges' count.
//! - Live subscriptions are advertised in Redis (`realtime:subscribed:{streamerId}`) with an
//!   expiry of one lease TTL, renewed with the leases: the poller reconciles those streamers
//!   only, and a dead bridge's claims lapse by themselves.
//! - Every DonationAlerts call waits its turn in [`grants`].
//! - A recorded push is relayed to the bus at once; its push → stream entry time is measured.

pub mod grants;
pub mod session;
pub mod shards;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::RealtimeConfig;
use crate::coordination::{EventBus, Lock, Locks, Presence, Reports, Subscriptions, fresh_figures};
use crate::domain::{TwitchUserId, now_ms};
use crate::metrics::emf::{self, EmfContext};
use crate::metrics::{RealtimeFigures, RealtimeStats};
use crate::outbox;
use crate::providers::centrifugo::CentrifugoClient;
use crate::providers::donationalerts::DonationAlertsClient;
use crate::providers::twitch::TwitchClient;
use crate::store::Store;
use crate::telemetry::error_chain;
use crate::tokens::TokenKeeper;
use grants::{GrantQueue, Urgency};
use session::SessionTarget;
use shards::{fair_share, shard_lease, shard_of};

/// A donation this recent makes a streamer a recent donor (subscribed before the rest).
const RECENT_DONOR_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How often who is live on Twitch is asked again.
const LIVE_REFRESH: Duration = Duration::from_secs(60);
/// The longest between two looks at the streamers to subscribe: a streamer who just
/// connected DonationAlerts (or disconnected) is picked up within this much. Each look reads
/// every link: once a second, with 5,000 streamers, that was most of an idle bridge's CPU
/// beside the sockets' pings, so it comes with the lease renewals (every third of the lease
/// TTL), at most this far apart.
const TARGETS_REFRESH: Duration = Duration::from_secs(5);
/// How often the bridge prints its CloudWatch metrics (in AWS).
const EMF_EVERY: Duration = Duration::from_secs(60);

/// What a bridge works with (built by [`crate::app::App::realtime_bridge`]).
pub struct BridgeParts {
    pub store: Store,
    pub locks: Locks,
    pub bus: EventBus,
    pub presence: Presence,
    pub subscriptions: Subscriptions,
    pub tokens: TokenKeeper,
    pub client: Arc<DonationAlertsClient>,
    pub centrifugo: CentrifugoClient,
    /// Asks Helix who is live (`None` without Twitch credentials: nobody counts as live).
    pub twitch: Option<Arc<TwitchClient>>,
    pub grants: GrantQueue,
    pub config: RealtimeConfig,
    /// Names this process's figures and leases in Redis.
    pub instance_id: Arc<str>,
    pub stats: Arc<RealtimeStats>,
    /// The stack whose CloudWatch metrics this process prints as EMF lines once a minute
    /// (`None`: none are printed, as outside AWS).
    pub emf_stack: Option<String>,
    /// The live subscriptions of this process: streamer → since when (Unix ms).
    subscribed: Mutex<HashMap<TwitchUserId, i64>>,
    /// Sessions started so far: the next one's place in the grant queue.
    sessions_started: std::sync::atomic::AtomicU64,
    /// Pushes recorded and not yet relayed: when each was received.
    to_relay: Mutex<Vec<Instant>>,
    relay_wanted: Notify,
}

impl BridgeParts {
    /// Parts from their handles (the rest starts empty).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        locks: Locks,
        bus: EventBus,
        presence: Presence,
        subscriptions: Subscriptions,
        tokens: TokenKeeper,
        client: Arc<DonationAlertsClient>,
        centrifugo: CentrifugoClient,
        twitch: Option<Arc<TwitchClient>>,
        grants: GrantQueue,
        config: RealtimeConfig,
        instance_id: Arc<str>,
        stats: Arc<RealtimeStats>,
        emf_stack: Option<String>,
    ) -> Self {
        Self {
            store,
            locks,
            bus,
            presence,
            subscriptions,
            tokens,
            client,
            centrifugo,
            twitch,
            grants,
            config,
            instance_id,
            stats,
            emf_stack,
            subscribed: Mutex::default(),
            sessions_started: Default::default(),
            to_relay: Mutex::default(),
            relay_wanted: Notify::new(),
        }
    }

    async fn mark_subscribed(&self, streamer: &TwitchUserId, since: i64) {
        let count = {
            let mut subscribed = self.subscribed.lock().unwrap_or_else(|p| p.into_inner());
            subscribed.insert(streamer.clone(), since);
            subscribed.len()
        };
        self.stats.subscribed.store(count, Ordering::Relaxed);
        // Advertised at once, so the poller reconciles now rather than at the next renewal.
        let advertised = [(streamer.as_str().to_owned(), since)];
        if let Err(e) = self
            .subscriptions
            .advertise(&advertised, self.config.shard_ttl)
            .await
        {
            tracing::debug!(error = %error_chain(&e), "subscription not advertised yet; the next renewal does");
        }
    }

    fn unmark_subscribed(&self, streamer: &TwitchUserId) {
        let mut subscribed = self.subscribed.lock().unwrap_or_else(|p| p.into_inner());
        if subscribed.remove(streamer).is_some() {
            self.stats
                .subscribed
                .store(subscribed.len(), Ordering::Relaxed);
        }
    }

    fn relay_soon(&self, received: Instant) {
        self.to_relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(received);
        self.relay_wanted.notify_one();
    }
}

/// The bridge of one process.
#[derive(Clone)]
pub struct Bridge(Arc<BridgeParts>);

/// A shard this process holds: its lease and the sessions of its streamers.
struct HeldShard {
    lease: Lock,
    sessions: HashMap<TwitchUserId, RunningSession>,
}

struct RunningSession {
    stop: watch::Sender<bool>,
}

impl Bridge {
    pub fn new(parts: BridgeParts) -> Self {
        Self(Arc::new(parts))
    }

    pub fn stats(&self) -> &Arc<RealtimeStats> {
        &self.0.stats
    }

    /// Holds shards and their sockets until `shutdown` resolves, then closes every socket,
    /// withdraws their subscriptions and releases every shard.
    #[tracing::instrument(name = "realtime.run", skip_all)]
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        let parts = &self.0;
        let (stop_relay, relay_stopped) = watch::channel(false);
        let relay = tokio::spawn(relay_loop(self.0.clone(), relay_stopped));
        let mut held: HashMap<u32, HeldShard> = HashMap::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut live: HashSet<String> = Default::default();
        let mut live_checked: Option<Instant> = None;
        let mut emf_due = Instant::now() + EMF_EVERY;
        // Leases are renewed (and subscriptions advertised again, and figures reported)
        // every third of the lease TTL; the streamers are looked at as often, at most
        // TARGETS_REFRESH apart.
        let renew_every = parts.config.shard_ttl / 3;
        let round_every = renew_every.min(TARGETS_REFRESH);
        let mut renew_due = Instant::now();
        tokio::pin!(shutdown);
        loop {
            let round = Instant::now();
            if live_checked.is_none_or(|at| round.duration_since(at) >= LIVE_REFRESH) {
                live = self.live_streamers().await.unwrap_or(live);
                live_checked = Some(round);
            }
            if round >= renew_due {
                self.tend_leases(&mut held).await;
            }
            self.tend_sessions(&mut held, &mut tasks, &live).await;
            if round >= renew_due {
                self.advertise().await;
                self.report().await;
                renew_due = round + renew_every;
            }
            if round >= emf_due {
                self.print_emf();
                emf_due = round + EMF_EVERY;
            }
            // Reap finished sessions.
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(round + round_every) => {}
            }
        }
        for shard in held.values() {
            stop_sessions(shard);
        }
        while tasks.join_next().await.is_some() {}
        let streamers: Vec<String> = parts
            .subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(s, _)| s.as_str().to_owned())
            .collect();
        let mine: Vec<String> = held
            .values()
            .flat_map(|h| h.sessions.keys().map(|s| s.as_str().to_owned()))
            .chain(streamers)
            .collect();
        if let Err(e) = parts.subscriptions.withdraw(&mine).await {
            tracing::warn!(error = %error_chain(&e), "subscriptions not withdrawn; they lapse by themselves");
        }
        for (_, shard) in held.drain() {
            if let Err(e) = parts.locks.release(&shard.lease).await {
                tracing::debug!(error = %error_chain(&e), "a shard lease was not released; it expires by itself");
            }
        }
        parts.stats.shards_held.store(0, Ordering::Relaxed);
        let _ = stop_relay.send(true);
        let _ = relay.await;
        // What the sockets recorded last goes out before the process ends.
        if let Err(e) = outbox::relay_pending(&parts.store, &parts.bus).await {
            tracing::warn!(error = %error_chain(&e), "events stay in the outbox until the next relay");
        }
        self.report().await;
    }

    /// Renews the leases held, lets go of those lost or beyond this process's fair share,
    /// and takes free shards up to it.
    async fn tend_leases(&self, held: &mut HashMap<u32, HeldShard>) {
        let parts = &self.0;
        let shard_count = parts.config.shards;
        let ttl = parts.config.shard_ttl;
        // Renew what is held; a lease that cannot be renewed is let go at once.
        let mut lost = Vec::new();
        for (shard, held_shard) in held.iter_mut() {
            match parts.locks.extend(&held_shard.lease, ttl).await {
                Ok(Some(renewed)) => held_shard.lease = renewed,
                Ok(None) => lost.push(*shard),
                Err(e) if held_shard.lease.remaining() > ttl / 3 => {
                    tracing::warn!(shard, error = %error_chain(&e), "shard lease not renewed; trying again");
                }
                Err(e) => {
                    tracing::warn!(shard, error = %error_chain(&e), "shard lease could not be renewed before it expires");
                    lost.push(*shard);
                }
            }
        }
        for shard in lost {
            tracing::warn!(shard, "shard lease lost; its sockets close");
            if let Some(gone) = held.remove(&shard) {
                stop_sessions(&gone);
            }
        }
        // Share evenly with the other live bridges.
        let bridges = self.live_bridges().await;
        let share = fair_share(shard_count, bridges) as usize;
        while held.len() > share {
            let Some(&shard) = held.keys().max() else {
                break;
            };
            if let Some(given_up) = held.remove(&shard) {
                tracing::info!(shard, bridges, "shard handed over to another bridge");
                stop_sessions(&given_up);
                let _ = parts.locks.release(&given_up.lease).await;
            }
        }
        // Take free shards, starting from one that depends on this process, so that bridges
        // starting together do not all try the same ones first.
        let offset = shard_of(&parts.instance_id, shard_count);
        for k in 0..shard_count {
            if held.len() >= share {
                break;
            }
            let shard = (k + offset) % shard_count;
            if held.contains_key(&shard) {
                continue;
            }
            match parts.locks.try_lock(&shard_lease(shard), ttl).await {
                Ok(Some(lease)) => match parts.store.claim_shard(shard, lease.fence).await {
                    Ok(true) => {
                        tracing::info!(shard, fence = lease.fence, "shard lease taken");
                        held.insert(
                            shard,
                            HeldShard {
                                lease,
                                sessions: HashMap::new(),
                            },
                        );
                    }
                    Ok(false) => {
                        let _ = parts.locks.release(&lease).await;
                    }
                    Err(e) => {
                        tracing::warn!(shard, error = %error_chain(&e), "shard not claimed in the store");
                        let _ = parts.locks.release(&lease).await;
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "shard leases could not be asked for");
                    break;
                }
            }
        }
        parts.stats.shards_held.store(held.len(), Ordering::Relaxed);
    }

    /// Starts and stops the sessions of the shards held to match the streamers to subscribe.
    async fn tend_sessions(
        &self,
        held: &mut HashMap<u32, HeldShard>,
        tasks: &mut JoinSet<()>,
        live: &HashSet<String>,
    ) {
        let parts = &self.0;
        if held.is_empty() {
            return;
        }
        let shard_count = parts.config.shards;
        let targets = match parts.store.realtime_targets().await {
            Ok(targets) => targets,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "the streamers to subscribe could not be read");
                return;
            }
        };
        // Who goes first among the new ones: live on Twitch, then recent donors.
        let new: Vec<TwitchUserId> = targets
            .iter()
            .filter(|(streamer, _)| {
                held.get(&shard_of(streamer.as_str(), shard_count))
                    .is_some_and(|h| !h.sessions.contains_key(streamer))
            })
            .map(|(streamer, _)| streamer.clone())
            .collect();
        let recent_since = now_ms() - RECENT_DONOR_WINDOW.as_millis() as i64;
        let recent_donors: HashSet<TwitchUserId> = if new.is_empty() {
            Default::default()
        } else {
            match parts.store.last_donations_at(new).await {
                Ok(found) => found
                    .into_iter()
                    .filter(|(_, at)| *at >= recent_since)
                    .map(|(streamer, _)| streamer)
                    .collect(),
                Err(e) => {
                    tracing::debug!(error = %error_chain(&e), "recent donors unknown; no order among them");
                    Default::default()
                }
            }
        };
        let mut wanted: HashMap<u32, Vec<SessionTarget>> = HashMap::new();
        for (streamer, da_user_id) in targets {
            let shard = shard_of(streamer.as_str(), shard_count);
            let Some(held_shard) = held.get(&shard) else {
                continue;
            };
            let urgency = if live.contains(streamer.as_str()) {
                Urgency::Live
            } else if recent_donors.contains(&streamer) {
                Urgency::RecentDonor
            } else {
                Urgency::Other
            };
            wanted.entry(shard).or_default().push(SessionTarget {
                streamer,
                da_user_id,
                shard,
                fence: held_shard.lease.fence,
                urgency,
                place: 0,
            });
        }
        for (shard, held_shard) in held.iter_mut() {
            let wanted = wanted.remove(shard).unwrap_or_default();
            let keep: HashSet<&TwitchUserId> = wanted.iter().map(|t| &t.streamer).collect();
            held_shard.sessions.retain(|streamer, session| {
                let still = keep.contains(streamer);
                if !still {
                    let _ = session.stop.send(true);
                }
                still
            });
            for mut target in wanted {
                if held_shard.sessions.contains_key(&target.streamer) {
                    continue;
                }
                target.place = parts.sessions_started.fetch_add(1, Ordering::Relaxed);
                let (stop, stopped) = watch::channel(false);
                held_shard
                    .sessions
                    .insert(target.streamer.clone(), RunningSession { stop });
                tasks.spawn(session::run(self.0.clone(), target, stopped));
            }
        }
    }

    /// Advertises this process's live subscriptions again, for one more lease TTL.
    async fn advertise(&self) {
        let parts = &self.0;
        let subscribed: Vec<(String, i64)> = parts
            .subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(s, since)| (s.as_str().to_owned(), *since))
            .collect();
        if let Err(e) = parts
            .subscriptions
            .advertise(&subscribed, parts.config.shard_ttl)
            .await
        {
            tracing::warn!(error = %error_chain(&e), "subscriptions not advertised; the poller takes them back when they lapse");
        }
    }

    /// Stores this bridge's figures where `/health` on any instance finds them.
    async fn report(&self) {
        let parts = &self.0;
        if let Err(e) = parts
            .presence
            .report_realtime(&parts.instance_id, &parts.stats.figures())
            .await
        {
            tracing::debug!(error = %error_chain(&e), "bridge figures not reported");
        }
    }

    /// Prints this bridge's CloudWatch metrics as one EMF line (in AWS only).
    fn print_emf(&self) {
        let Some(stack) = &self.0.emf_stack else {
            return;
        };
        let context = EmfContext {
            stack,
            function: "realtime",
            timestamp_ms: now_ms(),
        };
        println!("{}", emf::realtime_record(&context, &self.0.stats));
    }

    /// Bridges that reported lately, this one included.
    async fn live_bridges(&self) -> usize {
        let parts = &self.0;
        let Ok(mut reports) = parts.presence.figures(Reports::Realtime).await else {
            return 1;
        };
        reports.retain(|(id, _)| id.as_str() != &*parts.instance_id);
        // A bridge reports every third of the lease TTL: one silent for a whole TTL has lost
        // its leases by now, and its share goes to the others.
        let (others, _) = fresh_figures(
            &reports,
            now_ms(),
            parts.config.shard_ttl,
            |f: &RealtimeFigures| f.reported_at,
        );
        others.len() + 1
    }

    /// Who of the streamers to subscribe is live on Twitch (`None` when unknown).
    async fn live_streamers(&self) -> Option<HashSet<String>> {
        let twitch = self.0.twitch.as_ref()?;
        let targets = self.0.store.realtime_targets().await.ok()?;
        let ids: Vec<String> = targets
            .into_iter()
            .map(|(streamer, _)| streamer.as_str().to_owned())
            .collect();
        if ids.is_empty() {
            return Some(Default::default());
        }
        match twitch.live_user_ids(&ids).await {
            Ok(live) => Some(live),
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "who is live on Twitch is unknown");
                None
            }
        }
    }
}

fn stop_sessions(shard: &HeldShard) {
    for session in shard.sessions.values() {
        let _ = session.stop.send(true);
    }
}

/// Publishes what pushes recorded as soon as they are recorded (many pushes at once share
/// one relay run), and measures each push's time to its stream entry.
async fn relay_loop(parts: Arc<BridgeParts>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = parts.relay_wanted.notified() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let waiting: Vec<Instant> =
            std::mem::take(&mut *parts.to_relay.lock().unwrap_or_else(|p| p.into_inner()));
        match outbox::relay_pending(&parts.store, &parts.bus).await {
            Ok(_) => {
                for received in waiting {
                    parts.stats.note_push_to_event(received.elapsed());
                }
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "pushed donations stay in the outbox until the bus takes them");
                // Try again shortly (the pollers' relays publish them too).
                parts
                    .to_relay
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(waiting);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => parts.relay_wanted.notify_one(),
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        }
    }
}
