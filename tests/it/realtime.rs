//! The realtime bridge end to end: real `realtime` processes (and poller processes) over one
//! database and one private Redis, against the fake DonationAlerts and its Centrifugo.
//! Every donation is recorded once and appended to `avatar:events` once, whether it was
//! pushed, polled or both; nothing is lost through dropped sockets, killed or paused bridges,
//! a Redis restart, or a streamer's connection ending.

use std::collections::HashSet;
use std::time::Duration;

use avatar_tests::streamers::{DonationAlertsTestbed, link_streamer_with};
use avatar_tests::{RedisServer, signal, wait_until, workspace_binary};
use fake_providers::donationalerts::{NewDonation, RequestKind};
use shared::app::App;
use shared::config::Config;
use shared::domain::TwitchUserId;

use crate::pollers::{Fleet, da_id, event_id, next, twitch_id};

const WAIT: Duration = Duration::from_secs(60);

impl Fleet {
    /// Starts a `realtime` process over the fleet's database and Redis.
    pub(crate) fn spawn_bridge(&mut self) -> usize {
        let child = self.spawn_child(workspace_binary("realtime"), &[]);
        self.bridges.push(child);
        self.bridges.len() - 1
    }

    /// Waits until the fake has a subscribed socket for each of the first `n` streamers.
    async fn wait_subscribed(&self, n: usize, what: &str) {
        let wanted: HashSet<i64> = (0..n).map(da_id).collect();
        wait_until(what, WAIT, || async {
            let subscribed: HashSet<i64> = self.fake.subscribed_users().into_iter().collect();
            wanted.is_subset(&subscribed)
        })
        .await;
    }

    /// Waits until every donation the fake holds is on the stream.
    async fn wait_all_on_stream(&self, what: &str) {
        let expected = self.expected();
        wait_until(what, WAIT, || async {
            let seen: HashSet<String> = self.stream_ids().await.into_iter().collect();
            expected.is_subset(&seen)
        })
        .await;
    }

    fn cursor_of(&self, i: usize) -> Option<i64> {
        let conn = rusqlite::Connection::open(self.app.store.path()).unwrap();
        conn.query_row(
            "SELECT poll_cursor FROM donationalerts_links WHERE streamer_twitch_id = ?1",
            [twitch_id(i)],
            |r| r.get(0),
        )
        .unwrap()
    }
}

fn donation(i: usize, message: &str) -> NewDonation {
    NewDonation {
        da_user_id: Some(da_id(i)),
        username: Some("Viewer".into()),
        message: message.into(),
        amount: serde_json::Number::from(100),
        currency: "RUB".into(),
        created_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_donation_reaches_the_stream_with_no_poller_running() {
    // Arrange: one bridge, no poller at all
    let mut fleet = Fleet::start(RedisServer::start(), 3, &[]).await;
    fleet.spawn_bridge();
    fleet
        .wait_subscribed(3, "the bridge subscribed every streamer")
        .await;

    // Act
    let made = fleet.fake.donate(donation(1, "pushed"));

    // Assert: only the push can have brought it
    let wanted = event_id(1, made.id);
    wait_until("the pushed donation is on the stream", WAIT, || async {
        fleet.stream_ids().await.contains(&wanted)
    })
    .await;
    assert_eq!(
        fleet.cursor_of(1),
        Some(0),
        "a push never moves the poll cursor"
    );
    fleet.assert_every_donation_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_and_two_pollers_over_two_hundred_streamers_record_every_donation_once() {
    // Arrange
    let mut fleet = Fleet::start(RedisServer::start(), 200, &[]).await;
    fleet.spawn_bridge();
    fleet.spawn_bridge();
    fleet.spawn_poller(&[]);
    fleet.spawn_poller(&[]);
    fleet
        .wait_subscribed(200, "the bridges subscribed every streamer")
        .await;

    // Act: donations throughout, bursts, pushes duplicated for a while, sockets dropped
    // mid-burst (some, then all)
    let mut seed = 17;
    for round in 0..40 {
        for _ in 0..5 {
            fleet.donate(next(&mut seed) as usize % 200, 1);
        }
        match round {
            5 => fleet.fake.set_push_duplicates(true),
            10 => {
                fleet.donate(7, 45);
                fleet.fake.drop_sockets(Some(da_id(7)));
                fleet.donate(7, 5);
            }
            15 => fleet.fake.set_push_duplicates(false),
            25 => {
                fleet.donate(150, 70);
                fleet.fake.drop_sockets(None);
                fleet.donate(150, 10);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert
    fleet.assert_every_donation_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_donation_missed_while_the_socket_was_down_is_found_after_resubscribing_and_the_next_push_is_kept()
 {
    // Arrange: one bridge; its streamer's socket goes down and cannot come back for now.
    // Reconciliation after a resubscribe only: the scheduled one is an hour away.
    let mut fleet = Fleet::start(
        RedisServer::start(),
        1,
        &[("DA_RECONCILE_INTERVAL_MS", "3600000")],
    )
    .await;
    fleet.spawn_bridge();
    fleet.wait_subscribed(1, "the bridge subscribed").await;
    fleet.fake.set_refuse_connects(true);
    fleet.fake.drop_sockets(None);
    wait_until("the socket is gone", WAIT, || async {
        fleet.fake.socket_count() == 0
    })
    .await;

    // Act: a donation while the socket is down, then the socket back and one more pushed
    let missed = fleet.fake.donate(donation(0, "while the socket was down"));
    fleet.fake.set_refuse_connects(false);
    fleet.wait_subscribed(1, "the bridge resubscribed").await;
    let pushed = fleet.fake.donate(donation(0, "after resubscribing"));
    let pushed_id = event_id(0, pushed.id);
    wait_until("the pushed donation is on the stream", WAIT, || async {
        fleet.stream_ids().await.contains(&pushed_id)
    })
    .await;
    let cursor_after_push = fleet.cursor_of(0);
    let before_polling = fleet.stream_ids().await;
    fleet.spawn_poller(&[]);

    // Assert: the push left the cursor alone, so the reconciliation finds the missed one
    assert!(
        !before_polling.contains(&event_id(0, missed.id)),
        "nothing pushed the missed donation"
    );
    assert_eq!(cursor_after_push, Some(0));
    fleet
        .wait_all_on_stream("the reconciliation poll found the missed donation")
        .await;
    assert_eq!(fleet.cursor_of(0), Some(pushed.id));
    fleet.assert_every_donation_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_bridges_shards_move_to_the_other_within_the_lease_ttl() {
    // Arrange: two bridges share the 4 shards of 20 streamers
    let mut fleet = Fleet::start(RedisServer::start(), 20, &[]).await;
    fleet.spawn_bridge();
    fleet.spawn_bridge();
    fleet
        .wait_subscribed(20, "the bridges subscribed every streamer")
        .await;
    wait_until("each bridge holds two shards", WAIT, || async {
        shards_held(&fleet.redis).await == vec![2, 2]
    })
    .await;

    // Act: SIGKILL one; no poller runs, so only the survivor can record what follows
    let victim = fleet.bridges.remove(0);
    signal(victim.child.id(), libc::SIGKILL);
    drop(victim);
    wait_until("the survivor holds every shard", WAIT, || async {
        shards_held(&fleet.redis).await.contains(&4)
    })
    .await;
    fleet
        .wait_subscribed(20, "every streamer is subscribed again")
        .await;
    for i in 0..20 {
        fleet.donate(i, 1);
    }

    // Assert
    fleet
        .wait_all_on_stream("the survivor recorded every donation")
        .await;
    fleet.assert_every_donation_once().await;
}

/// Each bridge's latest report (`avatar:realtime:reports`), by instance id.
async fn reports(redis: &RedisServer) -> Vec<(String, serde_json::Value)> {
    let mut conn = redis.connection().await;
    let reports: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("avatar:realtime:reports")
        .query_async(&mut conn)
        .await
        .unwrap();
    reports
        .into_iter()
        .map(|(instance, json)| (instance, serde_json::from_str(&json).unwrap()))
        .collect()
}

/// How many shards each bridge reported holding at its latest report, fewest first.
async fn shards_held(redis: &RedisServer) -> Vec<u64> {
    let mut held: Vec<u64> = reports(redis)
        .await
        .iter()
        .map(|(_, figures)| figures["shardsHeld"].as_u64().unwrap())
        .collect();
    held.sort_unstable();
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_paused_past_its_leases_closes_its_sockets_when_resumed_and_duplicates_nothing() {
    // Arrange: bridge A holds every shard of 5 streamers. WAL, so that A paused in the
    // middle of a read (its shared lock held) does not keep B from committing.
    let mut fleet = Fleet::start(RedisServer::start(), 5, &[("SQLITE_JOURNAL_MODE", "wal")]).await;
    fleet.spawn_bridge();
    fleet
        .wait_subscribed(5, "A subscribed every streamer")
        .await;
    let a_pid = fleet.bridges[0].child.id();

    // Act: A is paused; its leases expire and B takes them; donations are pushed to both
    // (A's sockets stay open while it is paused)
    let a_instance = reports(&fleet.redis).await[0].0.clone();
    signal(a_pid, libc::SIGSTOP);
    fleet.spawn_bridge();
    wait_until("B subscribed every streamer beside A", WAIT, || async {
        reports(&fleet.redis)
            .await
            .iter()
            .any(|(instance, figures)| *instance != a_instance && figures["subscribed"] == 5)
            && fleet.fake.socket_count() == 10
    })
    .await;
    for i in 0..5 {
        fleet.donate(i, 2);
    }
    fleet.wait_all_on_stream("B recorded every donation").await;
    signal(a_pid, libc::SIGCONT);

    // Assert: A finds its leases gone and closes its sockets; nothing repeats
    wait_until("A closed its sockets", WAIT, || async {
        fleet.fake.socket_count() == 5
    })
    .await;
    fleet.donate(0, 1);
    fleet.wait_all_on_stream("B records what follows").await;
    fleet.assert_every_donation_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_and_a_poller_lose_nothing_through_a_redis_restart() {
    // Arrange: Redis keeps its data across a kill (append-only file)
    let mut fleet = Fleet::start(RedisServer::start_durable(), 10, &[]).await;
    fleet.spawn_bridge();
    fleet.spawn_poller(&[]);
    fleet.wait_subscribed(10, "the bridge subscribed").await;
    for i in 0..10 {
        fleet.donate(i, 1);
    }

    // Act
    fleet.redis.kill();
    for i in 0..10 {
        fleet.donate(i, 1);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.redis.restart();
    for i in 0..10 {
        fleet.donate(i, 1);
    }

    // Assert
    fleet.assert_every_donation_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_dropped_at_once_reconnects_inside_the_budget_and_polling_goes_on() {
    // Arrange: 60 streamers, a budget of 600 requests a minute, one poller beside
    let mut fleet = Fleet::start(
        RedisServer::start(),
        60,
        &[("DA_RATE_LIMIT_PER_MIN", "600")],
    )
    .await;
    fleet.spawn_bridge();
    fleet.spawn_poller(&[]);
    fleet
        .wait_subscribed(60, "the bridge subscribed every streamer")
        .await;
    let polls_before = fleet.fake.request_count(RequestKind::Donations);
    let connects_before = fleet.fake.connect_count();

    // Act: a mass drop
    fleet.fake.drop_sockets(None);
    wait_until("the sockets are gone", WAIT, || async {
        fleet.fake.socket_count() < 60
    })
    .await;
    fleet
        .wait_subscribed(60, "every streamer resubscribed")
        .await;
    for i in 0..60 {
        fleet.donate(i, 1);
    }

    // Assert: every socket came back, the budget held in every window, polls went on
    assert!(fleet.fake.connect_count() >= connects_before + 60);
    let busiest = fleet.fake.max_requests_in_window(Duration::from_secs(60));
    assert!(busiest <= 600, "{busiest} requests in one minute");
    assert!(
        fleet.fake.request_count(RequestKind::Donations) > polls_before,
        "the reconnects starved polling"
    );
    fleet.assert_every_donation_once().await;
}

/// A bridge over one streamer whose access tokens live 4 s and are refreshed 2 s before they
/// expire.
async fn short_lived_tokens_fleet() -> (Fleet, App) {
    let redis = RedisServer::start();
    let testbed = DonationAlertsTestbed::start_with(&redis.url(), |config| {
        config.access_token_ttl = Duration::from_secs(4);
    })
    .await;
    let mut fleet =
        Fleet::start_on(testbed, redis, 0, &[("TOKEN_REFRESH_MARGIN_MS", "2000")]).await;
    let app = App::build(Config::from_vars(&fleet.vars).unwrap())
        .await
        .unwrap();
    link_streamer_with(
        &app,
        &fleet.fake,
        &twitch_id(0),
        da_id(0),
        avatar_tests::streamers::DA_SCOPES,
        true,
    )
    .await;
    fleet.add_streamers(1);
    fleet.spawn_bridge();
    fleet.wait_subscribed(1, "the bridge subscribed").await;
    (fleet, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_is_refreshed_while_subscribed_and_the_socket_stays() {
    // Arrange
    let (fleet, _app) = short_lived_tokens_fleet().await;
    let refreshes_before = fleet.fake.request_count(RequestKind::Token);
    let connects_before = fleet.fake.connect_count();

    // Act: past the first token's expiry
    wait_until("the bridge refreshed the token twice", WAIT, || async {
        fleet.fake.request_count(RequestKind::Token) >= refreshes_before + 2
    })
    .await;
    fleet.donate(0, 1);

    // Assert: the same socket carried the push
    fleet.wait_all_on_stream("the push is recorded").await;
    assert_eq!(fleet.fake.connect_count(), connects_before);
    fleet.assert_every_donation_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_connection_ends_in_need_reauth_and_its_socket_closes() {
    // Arrange
    let (fleet, app) = short_lived_tokens_fleet().await;

    // Act: the streamer revokes the app at DonationAlerts; the next refresh is refused
    fleet.fake.revoke_tokens_of(da_id(0));

    // Assert
    wait_until("the socket closed", WAIT, || async {
        fleet.fake.socket_count() == 0
    })
    .await;
    let streamer = TwitchUserId::parse(&twitch_id(0)).unwrap();
    let status = app
        .store
        .provider_tokens(&streamer, shared::domain::Provider::DonationAlerts)
        .await
        .unwrap()
        .map(|t| t.status);
    assert_eq!(status.as_deref(), Some("need_reauth"));
    let entries = crate::bus::stream_entries(&fleet.redis).await;
    let types: Vec<&str> = entries
        .iter()
        .flat_map(|(_, fields)| fields.iter().filter(|(k, _)| k == "type"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        types,
        vec!["token.revoked"],
        "bots hear the connection ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_closes_the_streamers_socket() {
    // Arrange
    let mut fleet = Fleet::start(RedisServer::start(), 2, &[]).await;
    fleet.spawn_bridge();
    fleet.wait_subscribed(2, "the bridge subscribed").await;

    // Act
    let streamer = TwitchUserId::parse(&twitch_id(0)).unwrap();
    assert!(
        fleet
            .app
            .store
            .disconnect_donationalerts(&streamer)
            .await
            .unwrap()
    );

    // Assert: that socket closes, the other stays
    wait_until(
        "the disconnected streamer's socket closed",
        WAIT,
        || async { fleet.fake.subscribed_users() == vec![da_id(1)] },
    )
    .await;
    fleet.donate(1, 1);
    fleet.wait_all_on_stream("the other streamer's push").await;
}
