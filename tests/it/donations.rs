//! Donations, their outbox events and the poll cursor on a real SQLite file, and the outbox
//! relay publishing to a private Redis: recorded once, fenced, published once, also after
//! Redis was down.

use avatar_tests::{RedisServer, redis_coordinator};
use shared::config::{JournalMode, SqliteConfig};
use shared::coordination::Coordinator;
use shared::domain::event::{DonationPayload, ReceivedDonation};
use shared::domain::{DaUserId, Donation, TwitchUserId};
use shared::outbox::{RelayError, relay_pending};
use shared::store::Store;
use shared::store::donationalerts::{
    Connected, DonationAlertsConnection, DonationsFound, Found, PollRecorded, PollResult,
};

use crate::bus::stream_entries;

/// `text` as a Twitch user id (the tests' ids are well formed).
fn user_id(text: &str) -> shared::domain::TwitchUserId {
    shared::domain::TwitchUserId::parse(text).expect("a Twitch user id")
}

const STREAMER: &str = "141981764";
const DA_USER: i64 = 7_130_000;

async fn open_store(dir: &std::path::Path, coordinator: &Coordinator) -> Store {
    let config = SqliteConfig {
        path: dir.join("data.sqlite"),
        journal_mode: JournalMode::Delete,
        read_connections: 2,
    };
    Store::open(&config, coordinator)
        .await
        .expect("store opens")
}

async fn add_user(store: &Store, twitch_user_id: &str) {
    let id = twitch_user_id.to_owned();
    store
        .write(move |conn| {
            conn.execute(
                "INSERT INTO users (twitch_user_id, login, display_name, created_at, updated_at)
                 VALUES (?1, 'login', 'Name', 0, 0)",
                [&id],
            )
            .map(|_| ())
        })
        .await
        .unwrap();
}

fn connection(
    streamer: &str,
    da_user_id: i64,
    initial_cursor: Option<i64>,
) -> DonationAlertsConnection {
    DonationAlertsConnection {
        streamer_twitch_id: user_id(streamer),
        da_user_id: DaUserId(da_user_id),
        da_name: Some("Demo Streamer".into()),
        access_token_sealed: vec![1, 2, 3],
        refresh_token_sealed: Some(vec![4, 5, 6]),
        scopes: vec!["oauth-user-show".into(), "oauth-donation-index".into()],
        expires_at: None,
        initial_cursor,
    }
}

async fn linked_store(dir: &std::path::Path, coordinator: &Coordinator) -> Store {
    let store = open_store(dir, coordinator).await;
    add_user(&store, STREAMER).await;
    let linked = store
        .connect_donationalerts(connection(STREAMER, DA_USER, Some(0)))
        .await
        .unwrap();
    assert_eq!(linked, Connected::Linked);
    store
}

fn donation(id: i64) -> Donation {
    Donation {
        id,
        donor_name: Some(format!("viewer {id}")),
        message: format!("donation {id}"),
        amount: serde_json::Number::from(100),
        currency: "RUB".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

fn poll(fence: u64, donations: Vec<Donation>) -> PollResult {
    let streamer = TwitchUserId::parse(STREAMER).unwrap();
    let received_at = "2026-01-01T00:00:05Z";
    PollResult {
        seen_high_water: donations.iter().map(|d| d.id).max(),
        donations: donations
            .into_iter()
            .map(|d| ReceivedDonation::new(&streamer, DaUserId(DA_USER), d, received_at))
            .collect(),
        streamer,
        da_user_id: DaUserId(DA_USER),
        fence,
        received_at: received_at.into(),
    }
}

/// One donation pushed to the bridge holding `shard` under the lease token `fence`.
fn pushed(shard: u32, fence: u64, id: i64) -> DonationsFound {
    let streamer = TwitchUserId::parse(STREAMER).unwrap();
    let received_at = "2026-01-01T00:00:03Z";
    DonationsFound {
        donations: vec![ReceivedDonation::new(
            &streamer,
            DaUserId(DA_USER),
            donation(id),
            received_at,
        )],
        streamer,
        da_user_id: DaUserId(DA_USER),
        fence,
        received_at: received_at.into(),
        found: Found::Pushed { shard },
    }
}

#[tokio::test]
async fn a_pushed_donation_is_recorded_once_and_never_moves_the_cursor() {
    // Arrange: the cursor at 10; donation 11 happened while the socket was down.
    let dir = tempfile::tempdir().unwrap();
    let store = linked_store(dir.path(), &in_process()).await;
    store
        .record_poll(poll(1, vec![donation(10)]))
        .await
        .unwrap();
    assert_eq!(cursor(dir.path()).0, Some(10));

    // Act: 12 is pushed (twice, as DonationAlerts sometimes does), then a poll walks down.
    let first = store.record_donations(pushed(3, 1, 12)).await.unwrap();
    let again = store.record_donations(pushed(3, 1, 12)).await.unwrap();
    let cursor_after_push = cursor(dir.path()).0;
    let walk = store
        .record_poll(poll(2, vec![donation(12), donation(11), donation(10)]))
        .await
        .unwrap();

    // Assert
    assert_eq!(
        first,
        PollRecorded::Recorded {
            new_donation_ids: vec![12]
        }
    );
    assert_eq!(
        again,
        PollRecorded::Recorded {
            new_donation_ids: vec![]
        }
    );
    assert_eq!(cursor_after_push, Some(10), "a push never moves the cursor");
    assert_eq!(
        walk,
        PollRecorded::Recorded {
            new_donation_ids: vec![11]
        },
        "the poll finds what the socket missed, and not the pushed one again"
    );
    assert_eq!(cursor(dir.path()).0, Some(12));
    assert_eq!(count(dir.path(), "SELECT count(*) FROM donations"), 3);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM event_outbox"), 3);
}

#[tokio::test]
async fn a_push_from_a_shards_earlier_holder_is_refused_once_the_next_one_claimed_it() {
    // Arrange: the bridge holding shard 5 with lease token 7 records; another takes the
    // shard over with token 8.
    let dir = tempfile::tempdir().unwrap();
    let store = linked_store(dir.path(), &in_process()).await;
    store.record_donations(pushed(5, 7, 20)).await.unwrap();
    assert!(store.claim_shard(5, 8).await.unwrap());

    // Act: the earlier holder, resumed, records a push; so does the new one.
    let stale = store.record_donations(pushed(5, 7, 21)).await.unwrap();
    let current = store.record_donations(pushed(5, 8, 21)).await.unwrap();
    let other_shard = store.record_donations(pushed(6, 1, 22)).await.unwrap();

    // Assert
    assert_eq!(stale, PollRecorded::StaleFence { newer: 8 });
    assert_eq!(
        current,
        PollRecorded::Recorded {
            new_donation_ids: vec![21]
        }
    );
    assert_eq!(
        other_shard,
        PollRecorded::Recorded {
            new_donation_ids: vec![22]
        },
        "each shard has its own fence"
    );
    assert!(
        !store.claim_shard(5, 7).await.unwrap(),
        "an older token cannot claim the shard back"
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM donations"), 3);
}

fn count(store_dir: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(store_dir.join("data.sqlite")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn cursor(store_dir: &std::path::Path) -> (Option<i64>, i64) {
    let conn = rusqlite::Connection::open(store_dir.join("data.sqlite")).unwrap();
    conn.query_row(
        "SELECT poll_cursor, cursor_fence FROM donationalerts_links",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn in_process() -> Coordinator {
    Coordinator::InProcess(shared::coordination::memory::InProcessCoordinator::new())
}

#[tokio::test]
async fn a_poll_records_new_donations_with_one_event_each_and_moves_the_cursor() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let store = linked_store(dir.path(), &in_process()).await;

    // Act: the first poll sees 3, the next one 4 (one new) in another order
    let first = store
        .record_poll(poll(1, vec![donation(12), donation(11), donation(10)]))
        .await
        .unwrap();
    let second = store
        .record_poll(poll(
            2,
            vec![donation(13), donation(12), donation(11), donation(13)],
        ))
        .await
        .unwrap();

    // Assert
    assert_eq!(
        first,
        PollRecorded::Recorded {
            new_donation_ids: vec![10, 11, 12]
        }
    );
    assert_eq!(
        second,
        PollRecorded::Recorded {
            new_donation_ids: vec![13]
        }
    );
    assert_eq!(count(dir.path(), "SELECT count(*) FROM donations"), 4);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM event_outbox"), 4);
    assert_eq!(cursor(dir.path()), (Some(13), 2));
    let recent = store.recent_donations(&user_id(STREAMER), 2).await.unwrap();
    assert_eq!(
        recent.iter().map(|d| d.da_donation_id).collect::<Vec<_>>(),
        [13, 12]
    );
}

#[tokio::test]
async fn a_poll_carrying_an_older_fencing_token_writes_nothing() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let store = linked_store(dir.path(), &in_process()).await;
    store
        .record_poll(poll(5, vec![donation(20)]))
        .await
        .unwrap();

    // Act: a poller that held the lock before token 5 (paused past its TTL) writes late
    let stale = store
        .record_poll(poll(4, vec![donation(21), donation(20)]))
        .await
        .unwrap();

    // Assert
    assert_eq!(stale, PollRecorded::StaleFence { newer: 5 });
    assert_eq!(count(dir.path(), "SELECT count(*) FROM donations"), 1);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM event_outbox"), 1);
    assert_eq!(cursor(dir.path()), (Some(20), 5));
}

#[tokio::test]
async fn a_link_without_a_cursor_takes_a_baseline_and_reports_only_what_follows() {
    // Arrange: connected with no baseline (the first poll takes it)
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &in_process()).await;
    add_user(&store, STREAMER).await;
    store
        .connect_donationalerts(connection(STREAMER, DA_USER, None))
        .await
        .unwrap();

    // Act
    let baseline = store
        .record_poll(poll(1, vec![donation(2), donation(1)]))
        .await
        .unwrap();
    let next = store
        .record_poll(poll(2, vec![donation(3), donation(2)]))
        .await
        .unwrap();

    // Assert: the history before connecting is not news
    assert_eq!(
        baseline,
        PollRecorded::Recorded {
            new_donation_ids: vec![]
        }
    );
    assert_eq!(
        next,
        PollRecorded::Recorded {
            new_donation_ids: vec![3]
        }
    );
    assert_eq!(cursor(dir.path()), (Some(3), 2));
}

#[tokio::test]
async fn a_partial_poll_keeps_the_cursor_until_a_poll_reaches_it() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let store = linked_store(dir.path(), &in_process()).await;
    let page_2 = "https://www.donationalerts.com/api/v1/alerts/donations?page=2";
    let ids = |range: std::ops::RangeInclusive<i64>| range.rev().map(donation).collect();

    // Act: the first poll reads 30..=16 and stops; the next goes on from page 2, reads
    // 15..=1 and reaches the end of the list
    let first = store
        .record_partial_poll(poll(1, ids(16..=30)), Some(page_2.into()))
        .await
        .unwrap();
    let after_first = cursor(dir.path());
    let resume = store.poll_state(&user_id(STREAMER)).await.unwrap().unwrap();
    let second = store.record_poll(poll(2, ids(1..=15))).await.unwrap();

    // Assert: the first poll's donations went out at once, the cursor waited for the walk
    // to reach it, then took the highest id of the whole walk
    assert_eq!(
        first,
        PollRecorded::Recorded {
            new_donation_ids: (16..=30).collect()
        }
    );
    assert_eq!(after_first, (Some(0), 1));
    assert_eq!(resume.resume_link.as_deref(), Some(page_2));
    assert_eq!(
        second,
        PollRecorded::Recorded {
            new_donation_ids: (1..=15).collect()
        }
    );
    assert_eq!(cursor(dir.path()), (Some(30), 2));
    let done = store.poll_state(&user_id(STREAMER)).await.unwrap().unwrap();
    assert_eq!(done.resume_link, None);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM event_outbox"), 30);
}

#[tokio::test]
async fn linking_another_account_forgets_where_a_partial_poll_stopped() {
    // Arrange: a walk of DA_USER's list stopped half-way
    let dir = tempfile::tempdir().unwrap();
    let store = linked_store(dir.path(), &in_process()).await;
    let link = "https://www.donationalerts.com/api/v1/alerts/donations?page=2";
    store
        .record_partial_poll(poll(1, vec![donation(40)]), Some(link.into()))
        .await
        .unwrap();

    // Act
    let same = store
        .connect_donationalerts(connection(STREAMER, DA_USER, Some(99)))
        .await
        .unwrap();
    let kept = store.poll_state(&user_id(STREAMER)).await.unwrap().unwrap();
    store
        .connect_donationalerts(connection(STREAMER, DA_USER + 1, Some(7)))
        .await
        .unwrap();
    let other = store.poll_state(&user_id(STREAMER)).await.unwrap().unwrap();

    // Assert: reconnecting the same account goes on; another account starts afresh
    assert_eq!(same, Connected::Linked);
    assert_eq!(
        (kept.cursor, kept.resume_link.as_deref()),
        (Some(0), Some(link))
    );
    assert_eq!((other.cursor, other.resume_link), (Some(7), None));
}

#[tokio::test]
async fn one_donationalerts_account_links_to_one_streamer_and_disconnecting_stops_polling() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let store = linked_store(dir.path(), &in_process()).await;
    add_user(&store, "999").await;
    store
        .record_poll(poll(1, vec![donation(30)]))
        .await
        .unwrap();

    // Act
    let other = store
        .connect_donationalerts(connection("999", DA_USER, Some(0)))
        .await
        .unwrap();
    let again = store
        .connect_donationalerts(connection(STREAMER, DA_USER, Some(0)))
        .await
        .unwrap();
    let cursor_after_reconnect = cursor(dir.path()).0;
    let targets = store.poll_targets().await.unwrap();
    let forgot = store
        .disconnect_donationalerts(&user_id(STREAMER))
        .await
        .unwrap();

    // Assert
    assert_eq!(other, Connected::LinkedToAnotherStreamer);
    assert_eq!(again, Connected::Linked);
    assert_eq!(
        cursor_after_reconnect,
        Some(30),
        "reconnecting keeps the cursor"
    );
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].streamer_twitch_id.as_str(), STREAMER);
    assert!(targets[0].last_donation_at.is_some());
    assert!(forgot);
    assert!(store.poll_targets().await.unwrap().is_empty());
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM provider_tokens"),
        0,
        "the DonationAlerts tokens are gone"
    );
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM donations"),
        1,
        "recorded donations stay"
    );
}

#[tokio::test]
async fn an_outbox_row_that_is_no_event_stays_pending_and_blocks_none_behind_it() {
    // Arrange: the oldest pending row's payload is not JSON, and a full batch and more of
    // good events wait behind it
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let store = linked_store(dir.path(), &coordinator).await;
    {
        let conn = rusqlite::Connection::open(dir.path().join("data.sqlite")).unwrap();
        conn.execute(
            "INSERT INTO event_outbox (event_id, streamer_twitch_id, kind, payload, created_at)
             VALUES ('da:0:0', ?1, 'donation', 'not json', 0)",
            [STREAMER],
        )
        .unwrap();
    }
    let good = shared::outbox::RELAY_BATCH as i64 + 5;
    store
        .record_poll(poll(1, (1..=good).map(donation).collect()))
        .await
        .unwrap();

    // Act
    let first = relay_pending(&store, &coordinator.bus()).await.unwrap();
    let second = relay_pending(&store, &coordinator.bus()).await.unwrap();

    // Assert
    assert_eq!(first.appended as i64, good, "{first:?}");
    assert_eq!(first.unreadable, 1, "{first:?}");
    assert_eq!(second.published(), 0, "{second:?}");
    assert_eq!(stream_entries(&redis).await.len() as i64, good);
    assert_eq!(
        count(
            dir.path(),
            "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
        ),
        1,
        "the row that is no event stays pending"
    );
}

#[tokio::test]
async fn events_the_bus_could_not_take_are_published_once_when_redis_returns() {
    // Arrange: recorded, then Redis goes away before the relay runs
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let store = linked_store(dir.path(), &coordinator).await;
    store
        .record_poll(poll(1, vec![donation(40), donation(41)]))
        .await
        .unwrap();
    redis.kill();

    // Act
    let while_down = relay_pending(&store, &coordinator.bus()).await;
    redis.restart();
    let first = relay_pending(&store, &coordinator.bus()).await.unwrap();
    let second = relay_pending(&store, &coordinator.bus()).await.unwrap();

    // Assert
    assert!(
        matches!(while_down, Err(RelayError::Bus(_))),
        "{while_down:?}"
    );
    assert_eq!(first.appended, 2);
    assert_eq!(second.published(), 0, "nothing left pending");
    let ids: Vec<String> = stream_entries(&redis)
        .await
        .into_iter()
        .map(|(_, fields)| fields.into_iter().find(|(k, _)| k == "eventId").unwrap().1)
        .collect();
    assert_eq!(
        ids,
        [
            DonationPayload::event_id_for(DaUserId(DA_USER), 40),
            DonationPayload::event_id_for(DaUserId(DA_USER), 41)
        ]
    );
    assert_eq!(
        count(
            dir.path(),
            "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
        ),
        0
    );
}

#[tokio::test]
async fn two_relays_over_the_same_rows_append_each_event_once() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let store = linked_store(dir.path(), &coordinator).await;
    let donations: Vec<Donation> = (100..150).map(donation).collect();
    store.record_poll(poll(1, donations)).await.unwrap();
    let other = redis_coordinator(&[redis.url()]);

    // Act
    let (bus, other_bus) = (coordinator.bus(), other.bus());
    let (a, b) = tokio::join!(
        relay_pending(&store, &bus),
        relay_pending(&store, &other_bus)
    );

    // Assert
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.appended + b.appended, 50);
    assert_eq!(stream_entries(&redis).await.len(), 50);
}

#[tokio::test]
async fn unusual_donations_reach_the_stream_unchanged() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let store = linked_store(dir.path(), &coordinator).await;
    let long = format!("{} 🎉 مرحبا بالعالم", "я".repeat(1_980));
    let mut anonymous = donation(60);
    anonymous.donor_name = None;
    anonymous.message = long.clone();
    anonymous.amount = serde_json::from_str("12.34").unwrap();
    anonymous.currency = "KZT".into();
    let mut tiny = donation(61);
    tiny.amount = serde_json::from_str("0.01").unwrap();
    tiny.currency = "BYN".into();
    store
        .record_poll(poll(1, vec![anonymous.clone(), tiny.clone()]))
        .await
        .unwrap();

    // Act
    relay_pending(&store, &coordinator.bus()).await.unwrap();

    // Assert
    let entries = stream_entries(&redis).await;
    let data: Vec<serde_json::Value> = entries
        .iter()
        .map(|(_, fields)| {
            let data = &fields.iter().find(|(k, _)| k == "data").unwrap().1;
            serde_json::from_str(data).unwrap()
        })
        .collect();
    assert_eq!(data[0]["donation"]["username"], serde_json::Value::Null);
    assert_eq!(data[0]["donation"]["message"], long.as_str());
    assert_eq!(data[0]["donation"]["amount"].to_string(), "12.34");
    assert_eq!(data[0]["donation"]["currency"], "KZT");
    assert_eq!(data[0]["source"], "donationalerts");
    assert_eq!(data[0]["streamerId"], STREAMER);
    assert_eq!(data[1]["donation"]["amount"].to_string(), "0.01");
    assert_eq!(
        data[1]["eventId"],
        DonationPayload::event_id_for(DaUserId(DA_USER), 61)
    );
}
