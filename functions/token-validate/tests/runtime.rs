//! The `token-validate` binary as Lambda runs it: under a Runtime API emulator, given a real
//! EventBridge scheduled event and a short deadline, it validates what it can, answers before
//! the deadline, and the next (warm) invocation continues with the tokens it did not reach.
//! Each invocation prints a valid CloudWatch EMF record of what it validated.

use std::collections::HashMap;
use std::time::Duration;

use avatar_tests::RedisServer;
use avatar_tests::runtime_api::{RuntimeApi, lambda_vars};
use avatar_tests::twitch_users::seed_twitch_users;
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig};
use shared::app::App;
use shared::config::Config;

const SCHEDULED_EVENT: &str = include_str!("../../../tests/events/eventbridge-schedule.json");
const TOKENS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_off_by_its_deadline_answers_in_time_and_the_next_invocation_continues() {
    // Arrange: 150 tokens, at most 50 validations a second, a 3 s deadline (2 s of work).
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(
        "https://avatar.example/auth/twitch/callback",
    ));
    twitch.set_validate_latency(Duration::from_millis(20));
    let (twitch_address, _twitch_server) = twitch.spawn(0).await.unwrap();
    let mut vars: HashMap<String, String> = lambda_vars(dir.path(), &redis.url());
    vars.extend([
        ("TWITCH_VALIDATE_RATE_PER_SEC".to_owned(), "50".to_owned()),
        ("TWITCH_VALIDATE_CONCURRENCY".to_owned(), "4".to_owned()),
        ("STACK_NAME".to_owned(), "avatar-test-stack".to_owned()),
    ]);
    vars.extend(twitch.app_variables(twitch_address));
    let seeding = App::build(Config::from_vars(&vars).unwrap()).await.unwrap();
    seed_twitch_users(&seeding, &twitch, 3_000_000, TOKENS).await;
    let deadline = Duration::from_secs(3);
    let runtime = RuntimeApi::start(SCHEDULED_EVENT, deadline).await;

    // Act: a cold invocation, then a warm one.
    let function = runtime.spawn_function(
        env!("CARGO_BIN_EXE_token-validate"),
        "token-validate",
        &vars,
    );
    let first = runtime
        .nth_result(0, Duration::from_secs(30))
        .await
        .expect("the function answered");
    runtime.invoke(SCHEDULED_EVENT, deadline);
    let second = runtime
        .nth_result(1, Duration::from_secs(30))
        .await
        .expect("the function answered again");

    // Assert: both in time …
    for (n, result) in [&first, &second].into_iter().enumerate() {
        assert!(result.ok, "{}", result.body);
        let invoked = runtime.nth_handed_out_at(n).expect("handed out");
        assert!(
            result.at < invoked + deadline,
            "invocation {n} answered {:?} after it was handed out, past its {deadline:?} deadline",
            result.at - invoked
        );
    }
    // … the first cut off, the second continuing without validating anything twice.
    let first: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    let second: serde_json::Value = serde_json::from_str(&second.body).unwrap();
    assert_eq!(first["cutOff"], true, "{first}");
    let (n1, n2) = (
        first["validated"].as_u64().unwrap(),
        second["validated"].as_u64().unwrap(),
    );
    assert!(n1 > 0 && n2 > 0, "{first} {second}");
    let validated: u64 = seeding
        .store
        .read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM provider_tokens WHERE last_validated_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(
        validated,
        n1 + n2,
        "no token validated twice: {first} {second}"
    );
    let mut conn = redis.connection().await;
    let lock: Option<String> = redis::cmd("GET")
        .arg("locks:tokens:validate")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(lock, None, "the validation lock was released");

    // Each invocation printed one EMF record (stdout carries nothing else), counting the
    // tokens it checked.
    for (n, report) in [&first, &second].into_iter().enumerate() {
        let line = function
            .next_line(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no EMF record for invocation {n}"));
        let record =
            avatar_tests::emf::parse_record(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(record["Stack"], "avatar-test-stack");
        assert_eq!(record["Function"], "token-validate");
        let checked: u64 = ["validated", "refreshed", "revoked", "errors"]
            .iter()
            .map(|k| report[*k].as_u64().unwrap())
            .sum();
        assert_eq!(record["TokenValidations"], checked, "{line} {report}");
        assert_eq!(record["TokensRevoked"], report["revoked"], "{line}");
        assert_eq!(record["NeedReauth"], 0, "{line}");
    }
}
