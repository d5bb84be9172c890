//! DonationAlerts: the link of a streamer to their DonationAlerts account (with its sealed
//! tokens), and the donations, their outbox events and the poll cursor, written together.
//!
//! One poll of one streamer ends in one [`Store::record_poll`]: the new donations, an outbox
//! event for each, and the advanced cursor, in a single write that first checks the poll
//! lock's fencing token against the one that last moved this streamer's cursor. A poller
//! paused past its lock's TTL therefore cannot move the cursor back or record anything
//! after a newer holder did; and since donations and events are keyed by DonationAlerts'
//! ids, even an accepted repeat adds nothing.
//!
//! The cursor means "every donation up to this id is recorded", so only a poll that walked
//! down to it moves it. A poll that stopped earlier (its page cap, a shutdown, a deadline)
//! ends in [`Store::record_partial_poll`]: what it read is recorded (the events go out at
//! once), the cursor stays, and the link of the first page it did not read is kept with the
//! highest id seen. The next poll goes on from that link: DonationAlerts lists newest first
//! and pages by offset, so donations arriving meanwhile only push older ones further down,
//! and the page at that link starts at or above the first donation not read (what it shows
//! again is already recorded and adds nothing). Once a poll reaches the cursor, the cursor
//! becomes the highest id seen since the walk began; anything newer is above it and found by
//! the next poll from page 1. Nothing between the old cursor and the pages read is skipped.
//!
//! A pushed donation (the realtime bridge) goes through the same write
//! ([`Store::record_donations`] with [`Found::Pushed`]): recorded once with its event
//! whichever of push and poll sees it first, fenced by the bridge's shard lease instead of
//! the poll lock, and it never moves the cursor, so a donation missed while a socket was down
//! is still found by the next poll walking down to the cursor.
//!
//! A donation arrives bounded and with its event already made ([`ReceivedDonation`]): the
//! store records the one and queues the other, without knowing the event's form.
//! The outbox is what makes publishing exactly-once: an event is published from its row
//! (see `outbox`), so one committed while Redis was down goes out when it returns.

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError};
use crate::config::DONATION_SUBSCRIBE_SCOPE;
use crate::domain::clock::rfc3339_ms;
use crate::domain::event::ReceivedDonation;
use crate::domain::{DaUserId, TwitchUserId, now_ms};

/// Donations of one streamer, found by a poll or pushed over the realtime socket, ready for
/// [`Store::record_donations`].
#[derive(Debug, Clone)]
pub struct DonationsFound {
    pub streamer: TwitchUserId,
    pub da_user_id: DaUserId,
    /// The fencing token of the lock the finder holds: the streamer's poll lock, or the
    /// bridge's shard lease (see [`Found`]).
    pub fence: u64,
    /// Newest first or in any order; repeats and already recorded ones are ignored.
    pub donations: Vec<ReceivedDonation>,
    /// RFC 3339 UTC, when they were read.
    pub received_at: String,
    pub found: Found,
}

/// How donations were found, which decides what else their write may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// By a poll that walked down to the cursor (or to the end of the list): the cursor
    /// moves to the highest id seen since the walk began.
    PollToCursor { seen_high_water: Option<i64> },
    /// By a poll that stopped before the cursor: the cursor stays, and the next poll goes on
    /// from `resume`, the link of the first page not read (`None`: page 1).
    PollPartly {
        seen_high_water: Option<i64>,
        resume: Option<String>,
    },
    /// Pushed to the bridge holding `shard`: recorded, and the cursor never moves, because
    /// only a walk down to it proves nothing below was missed.
    Pushed { shard: u32 },
}

/// Everything one poll of one streamer found (a poll's [`DonationsFound`]).
#[derive(Debug, Clone)]
pub struct PollResult {
    pub streamer: TwitchUserId,
    pub da_user_id: DaUserId,
    /// The poll lock's fencing token.
    pub fence: u64,
    /// Newest first or in any order; repeats and already recorded ones are ignored.
    pub donations: Vec<ReceivedDonation>,
    /// The highest donation id the poll saw, recorded or not (the new cursor's floor).
    pub seen_high_water: Option<i64>,
    /// RFC 3339 UTC, when the poll read them.
    pub received_at: String,
}

impl PollResult {
    /// `resume`: `None` for a poll that walked down to the cursor, else where the next one
    /// goes on.
    fn found(self, resume: Option<Option<String>>) -> DonationsFound {
        let seen_high_water = self.seen_high_water;
        let found = match resume {
            None => Found::PollToCursor { seen_high_water },
            Some(resume) => Found::PollPartly {
                seen_high_water,
                resume,
            },
        };
        DonationsFound {
            streamer: self.streamer,
            da_user_id: self.da_user_id,
            fence: self.fence,
            donations: self.donations,
            received_at: self.received_at,
            found,
        }
    }
}

/// What [`Store::record_donations`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollRecorded {
    /// Recorded; the ids of the donations that were new, oldest first.
    Recorded { new_donation_ids: Vec<i64> },
    /// A newer holder of the same lock (the poll lock, or the shard lease for a push) already
    /// wrote (its token is `newer`): nothing written.
    StaleFence { newer: u64 },
    /// The streamer has no DonationAlerts link (disconnected meanwhile): nothing written.
    NotLinked,
}

/// A recorded donation, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDonation {
    pub da_donation_id: i64,
    pub donor_name: Option<String>,
    pub message: String,
    pub amount: String,
    pub currency: String,
    pub created_at: String,
}

/// A DonationAlerts connection ready to be written: the link and the sealed tokens.
#[derive(Debug, Clone)]
pub struct DonationAlertsConnection {
    pub streamer_twitch_id: TwitchUserId,
    pub da_user_id: DaUserId,
    pub da_name: Option<String>,
    pub access_token_sealed: Vec<u8>,
    pub refresh_token_sealed: Option<Vec<u8>>,
    pub scopes: Vec<String>,
    /// Unix ms.
    pub expires_at: Option<i64>,
    /// The newest donation id at the moment of connecting (0 with none), so that only
    /// donations made from then on become events; `None` lets the first poll take it.
    pub initial_cursor: Option<i64>,
}

/// Where polling of one streamer stands, read after taking their poll lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollState {
    pub da_user_id: DaUserId,
    /// The high-water donation id (`None` before the baseline was taken).
    pub cursor: Option<i64>,
    /// Unix ms of the last recorded poll, by any instance (`None` before the first).
    pub last_polled_at: Option<i64>,
    /// Where the last poll stopped short of the cursor: the link of the first page it did
    /// not read, where this poll goes on (see the module docs).
    pub resume_link: Option<String>,
}

/// What [`Store::connect_donationalerts`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connected {
    Linked,
    /// The DonationAlerts account is linked to another streamer; nothing was written.
    LinkedToAnotherStreamer,
}

/// A streamer the poller visits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    pub streamer_twitch_id: TwitchUserId,
    pub da_user_id: DaUserId,
    /// Unix ms of the newest recorded donation, if any.
    pub last_donation_at: Option<i64>,
}

impl Store {
    /// Writes the link and its sealed tokens in one write. Reconnecting the same account
    /// keeps the cursor; connecting another account starts from `initial_cursor`.
    pub async fn connect_donationalerts(
        &self,
        connection: DonationAlertsConnection,
    ) -> Result<Connected, StoreError> {
        self.write(move |conn| {
            let holder: Option<String> = conn
                .query_row(
                    "SELECT streamer_twitch_id FROM donationalerts_links WHERE da_user_id = ?1",
                    [connection.da_user_id],
                    |r| r.get(0),
                )
                .optional()?;
            if holder
                .as_deref()
                .is_some_and(|h| h != connection.streamer_twitch_id.as_str())
            {
                return Ok(Connected::LinkedToAnotherStreamer);
            }
            let now = now_ms();
            conn.execute(
                "INSERT INTO donationalerts_links (streamer_twitch_id, da_user_id, da_name,
                        poll_cursor, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (streamer_twitch_id) DO UPDATE SET
                    da_name = excluded.da_name,
                    poll_cursor = CASE WHEN da_user_id = excluded.da_user_id
                                       THEN poll_cursor ELSE excluded.poll_cursor END,
                    resume_link = CASE WHEN da_user_id = excluded.da_user_id
                                       THEN resume_link ELSE NULL END,
                    resume_high_water = CASE WHEN da_user_id = excluded.da_user_id
                                       THEN resume_high_water ELSE NULL END,
                    da_user_id = excluded.da_user_id,
                    updated_at = excluded.updated_at",
                params![
                    connection.streamer_twitch_id,
                    connection.da_user_id,
                    connection.da_name,
                    connection.initial_cursor,
                    now
                ],
            )?;
            conn.execute(
                "INSERT INTO provider_tokens (twitch_user_id, provider, access_token_enc,
                        refresh_token_enc, scopes, expires_at, status, created_at, updated_at)
                 VALUES (?1, 'donationalerts', ?2, ?3, ?4, ?5, 'active', ?6, ?6)
                 ON CONFLICT (twitch_user_id, provider) DO UPDATE SET
                    access_token_enc = excluded.access_token_enc,
                    refresh_token_enc = excluded.refresh_token_enc,
                    scopes = excluded.scopes, expires_at = excluded.expires_at,
                    status = 'active', updated_at = excluded.updated_at",
                params![
                    connection.streamer_twitch_id,
                    connection.access_token_sealed,
                    connection.refresh_token_sealed,
                    connection.scopes.join(" "),
                    connection.expires_at,
                    now
                ],
            )?;
            Ok(Connected::Linked)
        })
        .await
    }

    /// Forgets a streamer's DonationAlerts tokens and link; their donations stay recorded.
    /// `true` when there was something to forget.
    pub async fn disconnect_donationalerts(
        &self,
        streamer_twitch_id: &TwitchUserId,
    ) -> Result<bool, StoreError> {
        let streamer_twitch_id = streamer_twitch_id.clone();
        self.write(move |conn| delete_connection(conn, &streamer_twitch_id))
            .await
    }

    /// The poll state of a linked streamer (`None` when not linked).
    pub async fn poll_state(
        &self,
        streamer_twitch_id: &TwitchUserId,
    ) -> Result<Option<PollState>, StoreError> {
        let streamer_twitch_id = streamer_twitch_id.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT da_user_id, poll_cursor, last_polled_at, resume_link
                 FROM donationalerts_links WHERE streamer_twitch_id = ?1",
                [&streamer_twitch_id],
                |r| {
                    Ok(PollState {
                        da_user_id: r.get(0)?,
                        cursor: r.get(1)?,
                        last_polled_at: r.get(2)?,
                        resume_link: r.get(3)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Every streamer with a link and active DonationAlerts tokens.
    pub async fn poll_targets(&self) -> Result<Vec<PollTarget>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT l.streamer_twitch_id, l.da_user_id,
                        (SELECT d.received_at FROM donations d
                          WHERE d.streamer_twitch_id = l.streamer_twitch_id
                          ORDER BY d.da_donation_id DESC LIMIT 1)
                 FROM donationalerts_links l
                 JOIN provider_tokens t ON t.twitch_user_id = l.streamer_twitch_id
                      AND t.provider = 'donationalerts' AND t.status = 'active'
                 ORDER BY l.streamer_twitch_id",
            )?;
            let rows = statement.query_map([], |r| {
                let received: Option<String> = r.get(2)?;
                Ok(PollTarget {
                    streamer_twitch_id: r.get(0)?,
                    da_user_id: r.get(1)?,
                    last_donation_at: received.as_deref().and_then(rfc3339_ms),
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Every streamer with a link and active DonationAlerts tokens whose grant includes
    /// `oauth-donation-subscribe`: those the realtime bridge subscribes. Read every second,
    /// so it reads the link and token rows only (see [`Self::last_donations_at`]).
    pub async fn realtime_targets(&self) -> Result<Vec<(TwitchUserId, DaUserId)>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT l.streamer_twitch_id, l.da_user_id
                 FROM donationalerts_links l
                 JOIN provider_tokens t ON t.twitch_user_id = l.streamer_twitch_id
                      AND t.provider = 'donationalerts' AND t.status = 'active'
                 WHERE (' ' || t.scopes || ' ') LIKE ?1
                 ORDER BY l.streamer_twitch_id",
            )?;
            let pattern = format!("% {DONATION_SUBSCRIBE_SCOPE} %");
            let rows = statement.query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// When each of `streamers` last received a donation (Unix ms; absent for none): the
    /// received time of their newest donation, found through the primary key.
    pub async fn last_donations_at(
        &self,
        streamers: Vec<TwitchUserId>,
    ) -> Result<Vec<(TwitchUserId, i64)>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT received_at FROM donations WHERE streamer_twitch_id = ?1
                 ORDER BY da_donation_id DESC LIMIT 1",
            )?;
            let mut found = Vec::new();
            for streamer in streamers {
                let received: Option<String> =
                    statement.query_row([&streamer], |r| r.get(0)).optional()?;
                if let Some(at) = received.as_deref().and_then(rfc3339_ms) {
                    found.push((streamer, at));
                }
            }
            Ok(found)
        })
        .await
    }

    /// Raises `shard`'s stored fence to `fence` (a bridge that just took the shard's lease),
    /// so that from now on a push recorded by an earlier holder is refused. `false` when a
    /// newer holder's fence is stored already.
    pub async fn claim_shard(&self, shard: u32, fence: u64) -> Result<bool, StoreError> {
        self.write(move |conn| {
            if shard_fence(conn, shard)? > fence {
                return Ok(false);
            }
            store_shard_fence(conn, shard, fence)?;
            Ok(true)
        })
        .await
    }

    /// Records one poll's donations, their outbox events and the new cursor in one write
    /// ([`Self::record_donations`] for a poll that walked down to the cursor).
    pub async fn record_poll(&self, poll: PollResult) -> Result<PollRecorded, StoreError> {
        self.record_donations(poll.found(None)).await
    }

    /// [`Self::record_donations`] for a poll that stopped before reaching the cursor: its
    /// donations and events are recorded, the cursor stays, and the next poll goes on from
    /// `resume`, the link of the first page not read (`None`: from page 1 again).
    pub async fn record_partial_poll(
        &self,
        poll: PollResult,
        resume: Option<String>,
    ) -> Result<PollRecorded, StoreError> {
        self.record_donations(poll.found(Some(resume))).await
    }

    /// The one write of donations, polled or pushed: each donation new to this streamer is
    /// recorded with its outbox event, once, whoever found it first; a poll also moves its
    /// cursor (see the module docs). Refused whole when `fence` is older than the last one
    /// accepted for the same lock: the streamer's poll lock, or for a push the shard lease.
    pub async fn record_donations(
        &self,
        found: DonationsFound,
    ) -> Result<PollRecorded, StoreError> {
        let poll = found;
        self.write(move |conn| {
            let link: Option<(i64, Option<i64>, Option<i64>)> = conn
                .query_row(
                    "SELECT cursor_fence, poll_cursor, resume_high_water FROM donationalerts_links
                     WHERE streamer_twitch_id = ?1 AND da_user_id = ?2",
                    params![poll.streamer.as_str(), poll.da_user_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((cursor_fence, cursor, resume_high_water)) = link else {
                return Ok(PollRecorded::NotLinked);
            };
            let stored_fence = match poll.found {
                Found::Pushed { shard } => shard_fence(conn, shard)?,
                _ => cursor_fence as u64,
            };
            if stored_fence > poll.fence {
                return Ok(PollRecorded::StaleFence {
                    newer: stored_fence,
                });
            }
            let mut donations = poll.donations;
            // At or below the cursor is handled already. A link without a cursor has no
            // baseline yet: what a poll finds then is history, not news; only the high-water
            // mark is taken, so the next poll reports what follows. A push is news always.
            match (cursor, &poll.found) {
                (Some(cursor), _) => donations.retain(|d| d.donation.id > cursor),
                (None, Found::Pushed { .. }) => {}
                (None, _) => donations.clear(),
            }
            donations.sort_by_key(|d| d.donation.id);
            donations.dedup_by_key(|d| d.donation.id);
            let now = now_ms();
            let mut new_donation_ids = Vec::new();
            for ReceivedDonation { donation, event } in &donations {
                let inserted = conn.execute(
                    "INSERT INTO donations (streamer_twitch_id, da_donation_id, donor_name,
                            message, amount, currency, created_at, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (streamer_twitch_id, da_donation_id) DO NOTHING",
                    params![
                        poll.streamer.as_str(),
                        donation.id,
                        donation.donor_name,
                        donation.message,
                        donation.amount.to_string(),
                        donation.currency,
                        donation.created_at,
                        poll.received_at,
                    ],
                )?;
                if inserted == 0 {
                    continue;
                }
                super::outbox::record_event(conn, event, now)?;
                new_donation_ids.push(donation.id);
            }
            // A push leaves the cursor alone; a poll's `stopped_at`: `None` when it walked down
            // to the cursor, else the link it stopped at (`Some(None)`: page 1).
            let (seen_high_water, stopped_at) = match poll.found {
                Found::Pushed { shard } => {
                    store_shard_fence(conn, shard, poll.fence)?;
                    return Ok(PollRecorded::Recorded { new_donation_ids });
                }
                Found::PollToCursor { seen_high_water } => (seen_high_water, None),
                Found::PollPartly {
                    seen_high_water,
                    resume,
                } => (seen_high_water, Some(resume)),
            };
            // The highest id seen since the walk began, this poll included.
            let walk_high_water = seen_high_water
                .into_iter()
                .chain(donations.last().map(|d| d.donation.id))
                .chain(resume_high_water)
                .max();
            let (new_cursor, resume_link, resume_high_water) = match stopped_at {
                None => (
                    walk_high_water.into_iter().chain(cursor).max().or(Some(0)),
                    None,
                    None,
                ),
                // From page 1 again: that walk sees every id up to the top by itself.
                Some(None) => (cursor, None, None),
                Some(Some(link)) => (cursor, Some(link), walk_high_water),
            };
            conn.execute(
                "UPDATE donationalerts_links
                 SET poll_cursor = ?1, cursor_fence = ?2, last_polled_at = ?3, updated_at = ?3,
                     resume_link = ?4, resume_high_water = ?5
                 WHERE streamer_twitch_id = ?6",
                params![
                    new_cursor,
                    poll.fence as i64,
                    now,
                    resume_link,
                    resume_high_water,
                    poll.streamer.as_str()
                ],
            )?;
            Ok(PollRecorded::Recorded { new_donation_ids })
        })
        .await
    }

    /// The newest `limit` donations of a streamer, newest first.
    pub async fn recent_donations(
        &self,
        streamer_twitch_id: &TwitchUserId,
        limit: usize,
    ) -> Result<Vec<RecordedDonation>, StoreError> {
        let streamer_twitch_id = streamer_twitch_id.clone();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT da_donation_id, donor_name, message, amount, currency, created_at
                 FROM donations WHERE streamer_twitch_id = ?1
                 ORDER BY da_donation_id DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(params![streamer_twitch_id, limit as i64], |r| {
                Ok(RecordedDonation {
                    da_donation_id: r.get(0)?,
                    donor_name: r.get(1)?,
                    message: r.get(2)?,
                    amount: r.get(3)?,
                    currency: r.get(4)?,
                    created_at: r.get(5)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

/// The fencing token of the last accepted write by `shard`'s holder (0 before any).
fn shard_fence(conn: &rusqlite::Connection, shard: u32) -> rusqlite::Result<u64> {
    let fence: Option<i64> = conn
        .query_row(
            "SELECT fence FROM realtime_shard_fences WHERE shard = ?1",
            [shard],
            |r| r.get(0),
        )
        .optional()?;
    Ok(fence.unwrap_or(0) as u64)
}

/// Stores `fence` as `shard`'s (the caller checked it is not older than the stored one).
fn store_shard_fence(conn: &rusqlite::Connection, shard: u32, fence: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO realtime_shard_fences (shard, fence) VALUES (?1, ?2)
         ON CONFLICT (shard) DO UPDATE SET fence = excluded.fence",
        params![shard, fence as i64],
    )?;
    Ok(())
}

/// Deletes a streamer's DonationAlerts tokens and link, inside the caller's write; `true`
/// when there was something to delete. Their recorded donations stay.
pub(super) fn delete_connection(
    conn: &rusqlite::Connection,
    streamer_twitch_id: &TwitchUserId,
) -> rusqlite::Result<bool> {
    let tokens = conn.execute(
        "DELETE FROM provider_tokens WHERE twitch_user_id = ?1 AND provider = 'donationalerts'",
        [streamer_twitch_id],
    )?;
    let links = conn.execute(
        "DELETE FROM donationalerts_links WHERE streamer_twitch_id = ?1",
        [streamer_twitch_id],
    )?;
    Ok(tokens + links > 0)
}
