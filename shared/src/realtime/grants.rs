//! The bridge's grants of the shared DonationAlerts budget, handed out in order.
//!
//! Every `/user/oauth` and `/centrifuge/subscribe` call (and every token refresh) takes a grant
//! of `ratelimit:donationalerts`, which the pollers of every instance take too. Inside one
//! bridge the sessions ask one queue, which hands grants out most urgent first: resubscribing
//! after a drop, then first subscriptions of streamers live on Twitch, then of recent donors,
//! then of the rest. Across processes the limiter's priorities do the same ([`Priority`]):
//! a resubscribe comes before a reconciliation poll, which comes before a first subscription,
//! which comes before a routine poll. And so that routine polling never starves however many
//! sockets drop at once, the bridges and the reconciliation polls together take at most
//! [`crate::poll::streamer::REALTIME_BUDGET_SHARE`] of the budget (the limiter
//! `ratelimit:donationalerts:realtime`); and so that a streamer resubscribed in a mass
//! reconnect is reconciled soon after, not once the whole storm is over, the bridges' own
//! calls take at most two thirds of that share (`ratelimit:donationalerts:bridge`): two
//! grants a (re)subscription, one for its reconciliation poll.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::coordination::{Budget, Priority, RateLimit};
use crate::poll::streamer::{
    BRIDGE_RATE_LIMIT_KEY, DA_RATE_LIMIT_KEY, REALTIME_RATE_LIMIT_KEY, bridge_share, realtime_share,
};
use crate::telemetry::error_chain;

/// How long the queue waits before asking again when the limiter cannot be reached.
const LIMITER_RETRY: Duration = Duration::from_secs(1);

/// Among first subscriptions, who goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// Live on Twitch now: an audience is waiting for the alert.
    Live = 0,
    /// Received a donation recently.
    RecentDonor = 1,
    Other = 2,
}

/// What a session asks for. Among equals, the session started first goes first, with each
/// of its grants: its channel token right after its socket token, not behind every other
/// session's socket token (a socket left connected unsubscribed meanwhile could time out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ask {
    pub priority: Priority,
    pub urgency: Urgency,
    /// The session's place: the order in which the bridge started its sessions.
    pub place: u64,
}

struct Request {
    ask: Ask,
    seq: u64,
    granted: oneshot::Sender<()>,
}

impl PartialEq for Request {
    fn eq(&self, other: &Self) -> bool {
        (self.ask, self.seq) == (other.ask, other.seq)
    }
}
impl Eq for Request {}
impl PartialOrd for Request {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Request {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ask, self.seq).cmp(&(other.ask, other.seq))
    }
}

/// Where sessions ask for grants (cheap to clone).
#[derive(Clone)]
pub struct GrantQueue {
    requests: mpsc::UnboundedSender<(Ask, oneshot::Sender<()>)>,
}

impl GrantQueue {
    /// Starts the queue's dispatcher over `budget`; it ends when every [`GrantQueue`] is
    /// dropped.
    pub fn start(budget: Budget, per_minute: u32) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(budget, per_minute, receiver));
        Self { requests }
    }

    /// Waits for a grant; `false` when the bridge is stopping (the queue is gone).
    pub async fn grant(&self, ask: Ask) -> bool {
        let (granted, wait) = oneshot::channel();
        if self.requests.send((ask, granted)).is_err() {
            return false;
        }
        wait.await.is_ok()
    }
}

async fn dispatch(
    budget: Budget,
    per_minute: u32,
    mut receiver: mpsc::UnboundedReceiver<(Ask, oneshot::Sender<()>)>,
) {
    // Each grant passes these limiters in turn; one granted is kept until the last grants too.
    let limiters = [
        (BRIDGE_RATE_LIMIT_KEY, bridge_share(per_minute)),
        (REALTIME_RATE_LIMIT_KEY, realtime_share(per_minute)),
        (DA_RATE_LIMIT_KEY, RateLimit::per_minute(per_minute)),
    ];
    let mut waiting: BinaryHeap<Reverse<Request>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut passed = 0;
    loop {
        if waiting.is_empty() {
            let Some((ask, granted)) = receiver.recv().await else {
                return;
            };
            seq += 1;
            waiting.push(Reverse(Request { ask, seq, granted }));
        }
        while let Ok((ask, granted)) = receiver.try_recv() {
            seq += 1;
            waiting.push(Reverse(Request { ask, seq, granted }));
        }
        // Whoever stopped waiting (their session ended) gives up their place.
        while waiting.peek().is_some_and(|r| r.0.granted.is_closed()) {
            waiting.pop();
        }
        let Some(Reverse(head)) = waiting.peek() else {
            continue;
        };
        let priority = head.ask.priority;
        let mut wait = None;
        while passed < limiters.len() {
            let (key, limit) = &limiters[passed];
            wait = ask_limiter(&budget, key, limit, priority).await;
            if wait.is_some() {
                break;
            }
            passed += 1;
        }
        match wait {
            None => {
                passed = 0;
                if let Some(Reverse(head)) = waiting.pop() {
                    // A session gone meanwhile wastes this grant; nothing to do about it.
                    let _ = head.granted.send(());
                }
            }
            Some(wait) => {
                // Sleep, but wake for a new request: it may be more urgent than the head.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    request = receiver.recv() => match request {
                        Some((ask, granted)) => {
                            seq += 1;
                            waiting.push(Reverse(Request { ask, seq, granted }));
                        }
                        None => return,
                    },
                }
            }
        }
    }
}

/// `None` when granted, else how long to wait before asking again.
async fn ask_limiter(
    budget: &Budget,
    key: &str,
    limit: &RateLimit,
    priority: Priority,
) -> Option<Duration> {
    match budget.rate_limit_prioritized(key, limit, priority).await {
        Ok(decision) if decision.allowed => None,
        Ok(decision) => Some(decision.retry_after.max(Duration::from_millis(1))),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "the request budget could not be asked; asking again shortly");
            Some(LIMITER_RETRY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resubscribes_go_before_first_subscriptions_and_live_streamers_first() {
        let ask = |priority, urgency, place| Ask {
            priority,
            urgency,
            place,
        };
        let resubscribe = ask(Priority::Resubscribe, Urgency::Other, 9);
        let live = ask(Priority::Subscribe, Urgency::Live, 8);
        let donor = ask(Priority::Subscribe, Urgency::RecentDonor, 7);
        let first_other = ask(Priority::Subscribe, Urgency::Other, 1);
        let later_other = ask(Priority::Subscribe, Urgency::Other, 2);
        let mut asks = vec![later_other, first_other, donor, live, resubscribe];
        asks.sort();
        assert_eq!(
            asks,
            vec![resubscribe, live, donor, first_other, later_other],
            "the session started first keeps its place for each of its grants"
        );
    }
}
