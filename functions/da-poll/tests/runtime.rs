//! The `da-poll` binary as Lambda runs it: under a Runtime API emulator, given a real
//! EventBridge scheduled event and a short deadline, it polls, publishes, and answers
//! before the deadline with no poll lock left in Redis; what it prints on stdout is valid
//! CloudWatch EMF and its log JSON lines naming the invocation, the function and the streamer.

use std::collections::HashMap;
use std::time::Duration;

use avatar_tests::RedisServer;
use avatar_tests::runtime_api::{RuntimeApi, lambda_vars};
use avatar_tests::streamers::link_streamer;
use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig, NewDonation};
use shared::app::App;
use shared::config::Config;

const SCHEDULED_EVENT: &str = include_str!("../../../tests/events/eventbridge-schedule.json");

const STACK: &str = "avatar-test-stack";

/// Three linked streamers with two donations each, and the function's configuration.
struct Arranged {
    vars: HashMap<String, String>,
    redis: RedisServer,
    _seeding: App,
    _dir: tempfile::TempDir,
    _fake_server: tokio::task::JoinHandle<()>,
}

async fn three_streamers_with_two_donations_each() -> Arranged {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let fake = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(
        "http://localhost:3000/auth/donationalerts/callback",
    ));
    let (fake_address, fake_server) = fake.spawn(0).await.unwrap();
    let mut vars: HashMap<String, String> = lambda_vars(dir.path(), &redis.url());
    vars.extend([
        ("DA_POLL_LOCK_TTL_MS".to_owned(), "1000".to_owned()),
        ("DA_POLL_INTERVAL_MS".to_owned(), "200".to_owned()),
        // The budget is not what this test is about: ten grants a second.
        ("DA_RATE_LIMIT_PER_MIN".to_owned(), "600".to_owned()),
        ("STACK_NAME".to_owned(), STACK.to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
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
    Arranged {
        vars,
        redis,
        _seeding: seeding,
        _dir: dir,
        _fake_server: fake_server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_invocation_polls_and_returns_before_its_deadline_with_no_lock_held() {
    // Arrange
    let arranged = three_streamers_with_two_donations_each().await;
    let (vars, redis) = (&arranged.vars, &arranged.redis);
    let deadline = Duration::from_secs(5);
    let runtime = RuntimeApi::start(SCHEDULED_EVENT, deadline).await;

    // Act
    let _function = runtime.spawn_function(env!("CARGO_BIN_EXE_da-poll"), "da-poll", vars);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_invocation_prints_valid_emf_and_logs_its_request_function_and_streamers() {
    // Arrange
    let arranged = three_streamers_with_two_donations_each().await;
    let runtime = RuntimeApi::start(SCHEDULED_EVENT, Duration::from_secs(4)).await;

    // Act
    let function = runtime.spawn_function(env!("CARGO_BIN_EXE_da-poll"), "da-poll", &arranged.vars);
    let result = runtime
        .result(Duration::from_secs(30))
        .await
        .expect("the function answered");
    assert!(result.ok, "{}", result.body);
    // Both streams were written before the answer; read up to the run's last lines.
    let mut stdout = Vec::new();
    while let Some(line) = function.next_line(Duration::from_secs(10)) {
        stdout.push(line);
        if stdout.last().is_some_and(|l| l.contains("\"Donations\"")) {
            break;
        }
    }
    let mut log = Vec::new();
    while let Some(line) = function.next_log_line(Duration::from_secs(10)) {
        let done = line.contains("scheduled invocation done");
        log.push(line);
        if done {
            break;
        }
    }

    // Assert: every stdout line is an EMF record CloudWatch accepts…
    let records: Vec<serde_json::Value> = stdout
        .iter()
        .map(|line| avatar_tests::emf::parse_record(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!records.is_empty(), "no EMF record on stdout");
    for record in &records {
        let directive = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "AvatarTwitchOAuth");
        assert_eq!(directive["Dimensions"], serde_json::json!([["Stack"]]));
        assert_eq!(record["Stack"], STACK);
        assert_eq!(record["Function"], "da-poll");
    }
    // … with what the run did: the alarms' metrics, the donations, the writer's commits.
    use avatar_tests::emf::sum;
    assert_eq!(sum(&records, "Donations"), 6.0, "{stdout:?}");
    assert!(sum(&records, "Polls") >= 3.0, "{stdout:?}");
    assert_eq!(sum(&records, "PollErrors"), 0.0, "{stdout:?}");
    assert!(records[0].get("NeedReauth").is_some(), "{stdout:?}");
    assert!(sum(&records, "WriterBatchSize") >= 3.0, "{stdout:?}");
    assert!(records[0]["WriterCommitMs"].is_array(), "{stdout:?}");

    // The log: JSON lines, each naming the function and (within the invocation) its request;
    // the poll's lines name their streamer.
    let lines: Vec<serde_json::Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let request_id = RuntimeApi::request_id(0);
    let invocation: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["requestId"] == request_id.as_str())
        .collect();
    assert!(
        invocation
            .iter()
            .any(|l| l["message"] == "scheduled invocation done"),
        "{log:?}"
    );
    assert!(
        invocation.iter().all(|l| l["function"] == "da-poll"),
        "{log:?}"
    );
    let recorded: Vec<&&serde_json::Value> = invocation
        .iter()
        .filter(|l| l["message"] == "donations recorded")
        .collect();
    assert_eq!(recorded.len(), 3, "one per streamer: {log:?}");
    let streamers: std::collections::BTreeSet<&str> = recorded
        .iter()
        .map(|l| l["streamer"].as_str().expect("a streamer id"))
        .collect();
    assert_eq!(
        streamers,
        ["2000", "2001", "2002"].into_iter().collect(),
        "{log:?}"
    );
}
