//! A bounded, lazily filled cache of the streamer records a poll needs: the streamer's opened
//! DonationAlerts tokens. A streamer polled again within [`CACHE_TTL`] costs no store read
//! and no decryption; at 10,000 streamers that is most polls.
//!
//! Entries are filled on first use, replaced after a refresh, dropped when the streamer must
//! reconnect, and expire after [`CACHE_TTL`], so a refresh or revocation done by another
//! instance is noticed within that time (or at once, through the 401 it causes). Beyond
//! [`CACHE_CAPACITY`] entries the oldest filled is evicted first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::TwitchUserId;

use crate::tokens::UsableTokens;

/// How long an entry is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most entries kept (a few hundred bytes each).
pub const CACHE_CAPACITY: usize = 20_000;

#[derive(Default)]
struct Entries {
    map: HashMap<TwitchUserId, (UsableTokens, Instant)>,
    /// Fill order, oldest first; may name keys refilled or removed since (skipped).
    order: VecDeque<(TwitchUserId, Instant)>,
}

pub struct StreamerCache {
    entries: Mutex<Entries>,
    capacity: usize,
    ttl: Duration,
}

impl Default for StreamerCache {
    fn default() -> Self {
        Self::new(CACHE_CAPACITY, CACHE_TTL)
    }
}

impl StreamerCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached tokens of `streamer`, if filled less than the TTL ago.
    pub fn get(&self, streamer: &TwitchUserId) -> Option<UsableTokens> {
        let entries = self.entries();
        let (tokens, filled) = entries.map.get(streamer)?;
        (filled.elapsed() < self.ttl).then(|| tokens.clone())
    }

    /// Fills or replaces the entry of `streamer`, evicting the oldest beyond capacity.
    pub(crate) fn put(&self, streamer: &TwitchUserId, tokens: UsableTokens) {
        let now = Instant::now();
        let mut entries = self.entries();
        entries.map.insert(streamer.clone(), (tokens, now));
        entries.order.push_back((streamer.clone(), now));
        while entries.map.len() > self.capacity {
            let Some((oldest, filled)) = entries.order.pop_front() else {
                break;
            };
            // Only the fill that is still current evicts; stale order entries are skipped.
            if entries
                .map
                .get(&oldest)
                .is_some_and(|(_, at)| *at == filled)
            {
                entries.map.remove(&oldest);
            }
        }
        // Keep the order queue from growing without bound through refills.
        if entries.order.len() > self.capacity * 2 {
            let current: VecDeque<(TwitchUserId, Instant)> = entries
                .order
                .iter()
                .filter(|(key, at)| entries.map.get(key).is_some_and(|(_, filled)| filled == at))
                .cloned()
                .collect();
            entries.order = current;
        }
    }

    /// Drops the entry of `streamer` (it must reconnect, or its tokens were refused).
    pub(crate) fn forget(&self, streamer: &TwitchUserId) {
        self.entries().map.remove(streamer);
    }

    /// Entries held now (expired ones included until evicted or refilled).
    pub fn len(&self) -> usize {
        self.entries().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(access: &str) -> UsableTokens {
        UsableTokens::for_tests(access)
    }

    fn id(n: u32) -> TwitchUserId {
        TwitchUserId::parse(&n.to_string()).unwrap()
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_evicting_the_oldest_fill() {
        let cache = StreamerCache::new(3, CACHE_TTL);
        for n in 1..=3 {
            cache.put(&id(n), tokens(&format!("t{n}")));
        }
        cache.put(&id(1), tokens("t1-again"));
        cache.put(&id(4), tokens("t4"));
        assert_eq!(cache.len(), 3);
        assert!(
            cache.get(&id(2)).is_none(),
            "the oldest current fill went first"
        );
        assert_eq!(cache.get(&id(1)).unwrap().access_token.expose(), "t1-again");
        assert!(cache.get(&id(4)).is_some());
        for n in 0..100 {
            cache.put(&id(1), tokens(&format!("refill {n}")));
        }
        assert_eq!(cache.len(), 3);
        assert!(
            cache.entries().order.len() <= 6,
            "refills do not grow the queue"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_expires_after_the_ttl_and_forgetting_drops_it() {
        let cache = StreamerCache::new(10, Duration::from_secs(60));
        cache.put(&id(1), tokens("a"));
        cache.put(&id(2), tokens("b"));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(cache.get(&id(1)).is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(cache.get(&id(1)).is_none(), "expired");
        cache.forget(&id(2));
        assert!(cache.get(&id(2)).is_none());
    }
}
