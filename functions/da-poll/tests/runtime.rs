//! The `da-poll` binary as Lambda runs it: under a Runtime API emulator, given a real
//! EventBridge scheduled event and a short deadline, it polls, publishes, and answers
//! before the deadline with no poll lock left in Redis.

use std::time::Duration;

use avatar_tests::RedisServer;
use avatar_tests::runtime_api::{RuntimeApi, lambda_vars};
use avatar_tests::streamers::link_streamer;
use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig, NewDonation};
use shared::app::App;
use shared::config::Config;

const SCHEDULED_EVENT: &str = include_str!("../../../tests/events/eventbridge-schedule.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_invocation_polls_and_returns_before_its_deadline_with_no_lock_held() {
    // Arrange: three linked streamers with two donations each
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let fake = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(
        "http://localhost:3000/auth/donationalerts/callback",
    ));
    let (fake_address, _fake_server) = fake.spawn(0).await.unwrap();
    let mut vars = lambda_vars(dir.path(), &redis.url());
    vars.extend([
        ("DA_POLL_LOCK_TTL_MS".to_owned(), "1000".to_owned()),
        ("DA_POLL_INTERVAL_MS".to_owned(), "200".to_owned()),
        // The budget is not what this test is about: ten grants a second.
        ("DA_RATE_LIMIT_PER_MIN".to_owned(), "600".to_owned()),
    ]);
    vars.extend(fake.app_variables(fake_address));
    let seeding = App::build(Config::from_vars(&vars).unwrap()).await.unwrap();
    for i in 0..3 {
        link_streamer(&seeding, &fake, &(2000 + i).to_string(), 9000 + i).await;
        for k in 0..2 {
            fake.donate(NewDonation {
                da_user_id: Some(9000 + i),
                username: None,
                message: format!("donation {k}"),
                amount: serde_json::Number::from(50),
                currency: "EUR".into(),
                created_at: None,
            });
        }
    }
    let deadline = Duration::from_secs(5);
    let runtime = RuntimeApi::start(SCHEDULED_EVENT, deadline).await;

    // Act
    let _function = runtime.spawn_function(env!("CARGO_BIN_EXE_da-poll"), "da-poll", &vars);
    let result = runtime
        .result(Duration::from_secs(30))
        .await
        .expect("the function answered");

    // Assert
    assert!(result.ok, "{}", result.body);
    let invoked = runtime
        .handed_out_at()
        .expect("the invocation was handed out");
    assert!(
        result.at < invoked + deadline,
        "answered {:?} after the invocation, past its {deadline:?} deadline",
        result.at - invoked
    );
    let report: serde_json::Value = serde_json::from_str(&result.body).unwrap();
    assert_eq!(report["donationsFound"], 6, "{report}");
    assert_eq!(report["streamers"], 3, "{report}");
    let mut conn = redis.connection().await;
    let locks: Vec<String> = redis::cmd("KEYS")
        .arg("locks:donationalerts:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(locks.is_empty(), "locks left behind: {locks:?}");
    let stream_length: u64 = redis::cmd("XLEN")
        .arg("avatar:events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stream_length, 6);
}
