//! The transactional outbox: events recorded in SQLite with the facts they announce, and
//! read back here by the relay that publishes them (see `crate::outbox`).

use rusqlite::params;

use super::{Store, StoreError};
use crate::domain::event::BusEvent;
use crate::domain::now_ms;

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PendingEvent {
    pub event_id: String,
    pub event: BusEvent,
}

/// Outbox rows read for the relay: the events, and the rows that are no event.
#[derive(Debug, Default)]
pub(crate) struct PendingRows {
    pub events: Vec<PendingEvent>,
    /// Rows whose payload is not JSON (a bug, or a hand-edited database): each stays pending
    /// and is reported, and the rows behind it still go out.
    pub unreadable: Vec<UnreadableEvent>,
}

/// An outbox row that is no event.
#[derive(Debug)]
pub(crate) struct UnreadableEvent {
    pub event_id: String,
    pub error: serde_json::Error,
}

impl Store {
    /// Up to `limit` rows not yet published, oldest first, after skipping the first `skip`
    /// (the relay skips the unreadable rows it has met already).
    pub(crate) async fn pending_events(
        &self,
        limit: usize,
        skip: usize,
    ) -> Result<PendingRows, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT event_id, streamer_twitch_id, kind, payload FROM event_outbox
                 WHERE published_at IS NULL ORDER BY created_at, event_id LIMIT ?1 OFFSET ?2",
            )?;
            let rows = statement.query_map([limit as i64, skip as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            let mut pending = PendingRows::default();
            for row in rows {
                let (event_id, streamer_id, kind, payload) = row?;
                match BusEvent::recorded(&event_id, &streamer_id, &kind, payload) {
                    Ok(event) => pending.events.push(PendingEvent { event_id, event }),
                    Err(error) => pending.unreadable.push(UnreadableEvent { event_id, error }),
                }
            }
            Ok(pending)
        })
        .await
    }

    /// Marks events as published (after the bus accepted them, or already had them).
    pub(crate) async fn mark_published(&self, event_ids: Vec<String>) -> Result<(), StoreError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let now = now_ms();
            let mut statement = conn.prepare_cached(
                "UPDATE event_outbox SET published_at = ?1
                 WHERE event_id = ?2 AND published_at IS NULL",
            )?;
            for id in &event_ids {
                statement.execute(params![now, id])?;
            }
            Ok(())
        })
        .await
    }
}

/// Records `event` in the outbox inside the caller's write, so that it is published if and
/// only if that write commits. An event already recorded is left as it is.
pub(super) fn record_event(
    conn: &rusqlite::Connection,
    event: &BusEvent,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO event_outbox (event_id, streamer_twitch_id, kind, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (event_id) DO NOTHING",
        params![
            event.event_id,
            event.streamer_id,
            event.kind,
            event.data,
            now
        ],
    )?;
    Ok(())
}
