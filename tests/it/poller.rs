//! The poller against the fake DonationAlerts, a real SQLite file and a private Redis:
//! every donation recorded and published once, bursts paged through, failing streamers
//! backing off alone, revoked ones left alone, held locks respected, the budget kept.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use avatar_tests::streamers::{DonationAlertsTestbed, link_streamer};
use avatar_tests::{RedisServer, wait_until};
use fake_providers::donationalerts::{
    ApiFailure, FakeDonationAlerts, NewDonation as FakeNew, RequestKind,
};
use shared::app::App;
use shared::config::Config;
use shared::metrics::PollStats;

use crate::bus::stream_entries;

/// Streamer `i` is Twitch user `1000 + i` linked to DonationAlerts account `5000 + i`.
pub(crate) fn twitch_id(i: usize) -> String {
    (1000 + i).to_string()
}

pub(crate) fn da_id(i: usize) -> i64 {
    5000 + i as i64
}

pub(crate) struct PollerSetup {
    pub(crate) app: App,
    pub(crate) fake: FakeDonationAlerts,
    pub(crate) redis: RedisServer,
    pub(crate) testbed: DonationAlertsTestbed,
}

impl PollerSetup {
    /// An app over a private Redis and the fake, with `streamers` linked streamers.
    pub(crate) async fn start(streamers: usize, extra: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start();
        let mut testbed = DonationAlertsTestbed::start(&redis.url()).await;
        let vars = &mut testbed.vars;
        vars.insert("PROVIDER_TIMEOUT_MS".into(), "2000".into());
        vars.insert("DA_POLL_INTERVAL_MS".into(), "200".into());
        vars.insert("DA_RATE_LIMIT_PER_MIN".into(), "6000".into());
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        let app = App::build(Config::from_vars(vars).unwrap()).await.unwrap();
        let fake = testbed.fake.clone();
        for i in 0..streamers {
            link_streamer(&app, &fake, &twitch_id(i), da_id(i)).await;
        }
        Self {
            app,
            fake,
            redis,
            testbed,
        }
    }

    /// Runs a poller until the returned sender is dropped or sent to.
    pub(crate) fn run_poller(
        &self,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Arc<PollStats>>,
    ) {
        let poller = self.app.poller().expect("DonationAlerts configured");
        let stats = self.app.poll_stats.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            poller
                .run(None, async move {
                    let _ = stopped.await;
                })
                .await;
            stats
        });
        (stop, task)
    }

    pub(crate) fn donate(&self, i: usize, n: usize) -> Vec<String> {
        (0..n)
            .map(|k| {
                let donation = self.fake.donate(FakeNew {
                    da_user_id: Some(da_id(i)),
                    username: Some(format!("viewer {k}")),
                    message: format!("thanks {k}"),
                    amount: serde_json::Number::from(100 + k as i64),
                    currency: "RUB".into(),
                    created_at: None,
                });
                format!("da:{}:{}", da_id(i), donation.id)
            })
            .collect()
    }

    pub(crate) async fn stream_event_ids(&self) -> Vec<String> {
        stream_entries(&self.redis)
            .await
            .into_iter()
            .map(|(_, fields)| fields.into_iter().find(|(k, _)| k == "eventId").unwrap().1)
            .collect()
    }

    pub(crate) async fn wait_for_events(&self, expected: &HashSet<String>) {
        wait_until(
            "every donation in the stream",
            Duration::from_secs(30),
            || async {
                let seen: HashSet<String> = self.stream_event_ids().await.into_iter().collect();
                expected.is_subset(&seen)
            },
        )
        .await;
    }

    pub(crate) fn rows(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.app.store.path()).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Whether streamer `i`'s poll lock is held (in Redis) now.
    pub(crate) async fn poll_lock_held(&self, i: usize) -> bool {
        self.redis
            .get(&format!("locks:donationalerts:{}", twitch_id(i)))
            .await
            .is_some()
    }

    /// Requests for streamer `i`'s donation list (not the realtime bridge's socket and channel
    /// token requests, which `avatar-local` makes too).
    pub(crate) fn requests_for(&self, i: usize) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| {
                r.da_user_id == Some(da_id(i))
                    && r.kind == fake_providers::donationalerts::RequestKind::Donations
            })
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_donation_is_recorded_and_published_once_bursts_included() {
    // Arrange
    let setup = PollerSetup::start(5, &[]).await;
    let mut expected: HashSet<String> = (0..5).flat_map(|i| setup.donate(i, 3)).collect();
    let (stop, poller) = setup.run_poller();
    setup.wait_for_events(&expected).await;

    // Act: a burst of more than a page for one streamer between two polls
    expected.extend(setup.donate(2, 75));
    setup.wait_for_events(&expected).await;
    let _ = stop.send(());
    let stats = poller.await.unwrap();

    // Assert
    let ids = setup.stream_event_ids().await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "no event twice");
    assert_eq!(ids.len(), expected.len());
    assert_eq!(setup.rows("SELECT count(*) FROM donations"), 90);
    assert_eq!(
        setup.rows("SELECT count(*) FROM event_outbox WHERE published_at IS NULL"),
        0
    );
    assert_eq!(
        stats
            .donations_found
            .load(std::sync::atomic::Ordering::Relaxed),
        90
    );
    assert!(!setup.poll_lock_held(2).await, "no lock left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_streamer_backs_off_while_the_others_keep_flowing() {
    // Arrange
    let setup = PollerSetup::start(3, &[]).await;
    setup
        .fake
        .set_failure(Some(da_id(0)), ApiFailure::ServerError);
    let (stop, poller) = setup.run_poller();

    // Act
    let healthy: HashSet<String> = setup.donate(1, 2).into_iter().collect();
    setup.wait_for_events(&healthy).await;
    let more: HashSet<String> = setup.donate(2, 2).into_iter().collect();
    setup.wait_for_events(&more).await;
    let failing_requests = setup.requests_for(0);
    let health = health_json(&setup.app).await;
    setup.fake.set_failure(Some(da_id(0)), ApiFailure::None);
    let recovered: HashSet<String> = setup.donate(0, 2).into_iter().collect();
    setup.wait_for_events(&recovered).await;
    let _ = stop.send(());
    let stats = poller.await.unwrap();

    // Assert: backing off (1 s, 2 s, …) the failing streamer was asked far less often
    // than the 200 ms interval would have asked
    let healthy_requests = setup.requests_for(1);
    assert!(
        failing_requests < healthy_requests,
        "failing {failing_requests}, healthy {healthy_requests}"
    );
    assert!(stats.errors.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // The backoff shows in /health while it lasts.
    let polling = &health["polling"];
    assert_eq!(polling["pollers"], 1, "{health}");
    assert_eq!(polling["streamerCount"], 3, "{health}");
    assert!(polling["errors"].as_u64() >= Some(1), "{health}");
    assert!(polling["polled"].as_u64() >= Some(2), "{health}");
    assert_eq!(health["scalability"]["dynamicPollingEnabled"], true);
    assert_eq!(health["scalability"]["lazyCacheEnabled"], true);
    assert!(
        polling["cachedStreamers"].as_u64() >= Some(1),
        "polled streamers' records are cached: {health}"
    );
}

/// `/health` as this app reports it, once it shows the backoff (the poller reports its
/// figures every second; a probe is reused for `HEALTH_MAX_AGE_MS`).
async fn health_json(app: &App) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = shared::web::health::respond(app).await;
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        if json["polling"]["backingOff"] == 1 {
            return json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backoff in /health: {json}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_connection_ends_in_need_reauth_and_is_polled_no_more() {
    // Arrange
    let setup = PollerSetup::start(2, &[]).await;
    setup.fake.revoke_tokens_of(da_id(0));
    let (stop, poller) = setup.run_poller();

    // Act
    wait_until("need_reauth stored", Duration::from_secs(20), || async {
        setup.rows(
            "SELECT count(*) FROM provider_tokens WHERE twitch_user_id = '1000' AND status = 'need_reauth'",
        ) == 1
    })
    .await;
    let at_reauth = setup.fake.requests().len();
    let later: HashSet<String> = setup.donate(1, 3).into_iter().collect();
    setup.wait_for_events(&later).await;
    let _ = stop.send(());
    poller.await.unwrap();

    // Assert: the revoked streamer's requests stopped (one refresh attempt included)
    let revoked_requests_after: usize = setup.fake.requests()[at_reauth..]
        .iter()
        .filter(|r| r.kind == RequestKind::Donations && r.da_user_id.is_none())
        .count();
    assert_eq!(revoked_requests_after, 0);
    assert_eq!(
        setup.fake.request_count(RequestKind::Token),
        1,
        "one refresh tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamer_whose_lock_is_held_elsewhere_is_not_polled_until_it_is_released() {
    // Arrange: another instance (or the Node app) holds streamer 0's poll lock
    let setup = PollerSetup::start(2, &[]).await;
    let lock = setup
        .app
        .coordinator
        .locks()
        .try_lock("locks:donationalerts:1000", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let held: HashSet<String> = setup.donate(0, 2).into_iter().collect();
    let (stop, poller) = setup.run_poller();

    // Act: another streamer's donations flow meanwhile
    let other: HashSet<String> = setup.donate(1, 2).into_iter().collect();
    setup.wait_for_events(&other).await;
    let polled_while_held = setup.requests_for(0);
    setup.app.coordinator.locks().release(&lock).await.unwrap();
    setup.wait_for_events(&held).await;
    let _ = stop.send(());
    let stats = poller.await.unwrap();

    // Assert
    assert_eq!(polled_while_held, 0);
    assert!(
        stats
            .skipped_locked
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_never_sees_more_requests_than_the_budget() {
    // Arrange: 600 a minute is one grant every 100 ms; 20 streamers at a 200 ms interval
    // would ask for 100 a second without the limiter.
    let setup = PollerSetup::start(20, &[("DA_RATE_LIMIT_PER_MIN", "600")]).await;
    let (stop, poller) = setup.run_poller();

    // Act
    wait_until("30 requests", Duration::from_secs(30), || async {
        setup.fake.requests().len() >= 30
    })
    .await;
    let _ = stop.send(());
    poller.await.unwrap();

    // Assert: at most 10 in any second, plus one for delivery jitter at a window's edge
    let most = setup.fake.max_requests_in_window(Duration::from_secs(1));
    assert!(most <= 11, "{most} requests within one second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamers_live_on_twitch_are_found_with_one_streams_request_and_shown_in_health() {
    // Arrange: a fake Twitch where streamer 1 of 3 is live
    let twitch =
        fake_providers::twitch::FakeTwitch::new(fake_providers::twitch::FakeTwitchConfig::demo(
            "http://localhost:3000/auth/twitch/callback",
        ));
    let (address, _server) = twitch.spawn(0).await.unwrap();
    twitch.set_live(&[&twitch_id(1)]);
    let vars = twitch.app_variables(address);
    let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let setup = PollerSetup::start(3, &extra).await;

    // Act
    let (stop, poller) = setup.run_poller();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        let response = shared::web::health::respond(&setup.app).await;
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        if json["polling"]["live"] == 1 {
            break json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no live streamer in /health: {json}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(());
    poller.await.unwrap();

    // Assert: three streamers fit in one request of up to 100 ids
    assert_eq!(health["polling"]["streamerCount"], 3);
    assert_eq!(twitch.streams_requests(), 1);
}
