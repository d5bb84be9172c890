//! The outbox relay: publishes the events recorded in SQLite to the event bus.
//!
//! A donation and its event are committed together (see `store::donationalerts`); this relay
//! then appends each pending event to `avatar:events` and publishes its envelope, and marks
//! it published. The bus drops an eventId it has seen before, so a relay that dies between
//! publishing and marking, or two relays racing over the same rows, still append each event
//! once. While Redis is down the events wait in SQLite and go out on the next run after it
//! returns.

use crate::coordination::{CoordinationError, EventBus, Published};
use crate::store::{Store, StoreError};
use crate::telemetry::error_chain;

/// Events read from the outbox per round.
pub const RELAY_BATCH: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the outbox could not be read or updated")]
    Store(#[from] StoreError),
    #[error("the event bus refused an event; it stays pending")]
    Bus(#[from] CoordinationError),
}

/// What one relay run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Newly appended to the stream.
    pub appended: usize,
    /// Already on the bus (published before by this or another relay).
    pub duplicates: usize,
    /// Rows that are no event (their payload is not JSON): left pending, logged, skipped.
    pub unreadable: usize,
}

impl RelayReport {
    pub fn published(&self) -> usize {
        self.appended + self.duplicates
    }
}

/// Publishes pending events until none are left or the bus fails. Events published before
/// a failure are marked published; the one that failed and those after it stay pending. A
/// row that is no event is logged and skipped: it stays pending and blocks nothing behind it.
#[tracing::instrument(name = "outbox.relay", skip_all)]
pub async fn relay_pending(store: &Store, bus: &EventBus) -> Result<RelayReport, RelayError> {
    let mut report = RelayReport::default();
    loop {
        let pending = store.pending_events(RELAY_BATCH, report.unreadable).await?;
        let read = pending.events.len() + pending.unreadable.len();
        if read == 0 {
            return Ok(report);
        }
        let full_batch = read == RELAY_BATCH;
        for row in &pending.unreadable {
            tracing::error!(event_id = %row.event_id, error = %error_chain(&row.error), "an outbox row is no event; it stays pending and is skipped");
        }
        report.unreadable += pending.unreadable.len();
        let mut done = Vec::with_capacity(pending.events.len());
        let mut failure = None;
        for item in pending.events {
            match bus.publish(&item.event).await {
                Ok(Published::Appended) => report.appended += 1,
                Ok(Published::Duplicate) => report.duplicates += 1,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            done.push(item.event_id);
        }
        store.mark_published(done).await?;
        if let Some(e) = failure {
            return Err(RelayError::Bus(e));
        }
        if !full_batch {
            return Ok(report);
        }
    }
}
