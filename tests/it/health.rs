//! GET /health in each mode, measured: single-instance, distributed, Redis down while
//! required (503) and back (200) without a restart; one shared probe for concurrent
//! requests; no secret and no internal address in the report.

use std::time::Duration;

use avatar_tests::{RedisServer, TestApp, redis_coordinator, wait_until};
use shared::domain::{now_ms, rfc3339_utc};
use shared::metrics::RealtimeFigures;

/// Calls of `command` the Redis server has answered so far (`INFO commandstats`).
async fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// Asserts the report has the contract's shape (whatever the figures).
fn assert_report_shape(body: &serde_json::Value) {
    assert!(body["ok"].is_boolean(), "{body}");
    assert!(body["status"].is_string(), "{body}");
    assert!(body["checkedAt"].is_string(), "{body}");
    for field in ["status", "isRequired", "latencyMs", "lastHealthCheck"] {
        assert!(body["redis"].get(field).is_some(), "redis.{field}: {body}");
    }
    for field in ["status", "journalMode", "writerQueueDepth", "lastCommitMs"] {
        assert!(
            body["sqlite"].get(field).is_some(),
            "sqlite.{field}: {body}"
        );
    }
    for field in [
        "canScaleHorizontally",
        "mode",
        "instances",
        "asyncDbEnabled",
    ] {
        assert!(
            body["scalability"].get(field).is_some(),
            "scalability.{field}: {body}"
        );
    }
}

#[tokio::test]
async fn without_redis_it_is_healthy_in_single_instance_mode() {
    let app = TestApp::spawn(&[]).await;

    let (status, body) = app.health().await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["redis"]["status"], "disabled");
    assert_eq!(body["redis"]["isRequired"], false);
    assert_eq!(body["scalability"]["mode"], "single-instance");
    assert_eq!(body["scalability"]["canScaleHorizontally"], false);
    assert_eq!(body["scalability"]["instances"], 1);
    assert_eq!(body["sqlite"]["status"], "ok");
    assert_eq!(body["sqlite"]["journalMode"], "wal");
    assert_eq!(body["sqlite"]["writerQueueDepth"], 0);
}

#[tokio::test]
async fn with_redis_it_is_distributed_and_counts_live_instances() {
    let redis = RedisServer::start();
    let url = redis.url();
    let first = TestApp::spawn(&[("REDIS_URL", &url), ("SQLITE_JOURNAL_MODE", "delete")]).await;
    let second = TestApp::spawn(&[("REDIS_URL", &url)]).await;
    second.health().await;

    let (status, body) = first.health().await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["redis"]["status"], "enabled");
    // A measured loopback PING: more than nothing, less than the 1 s command timeout.
    let latency = body["redis"]["latencyMs"].as_f64().unwrap();
    assert!(latency > 0.0 && latency < 1000.0, "{latency}");
    assert_eq!(body["redis"]["lastHealthCheck"]["success"], true);
    let checked = body["redis"]["lastHealthCheck"]["timestamp"]
        .as_str()
        .unwrap();
    assert!(checked.ends_with('Z'), "{checked}");
    assert_eq!(body["checkedAt"], checked);
    assert_eq!(body["scalability"]["mode"], "distributed");
    assert_eq!(body["scalability"]["canScaleHorizontally"], true);
    assert_eq!(body["scalability"]["instances"], 2);
    assert_eq!(body["sqlite"]["journalMode"], "delete");
    // The writer's figures are live, not part of the reused probe: a commit made now is
    // reported by the next request.
    assert!(body["sqlite"]["lastCommitMs"].is_null(), "{body}");
    first.app.store.write(|_| Ok(())).await.unwrap();
    let (_, body) = first.health().await;
    assert!(body["sqlite"]["lastCommitMs"].as_f64().is_some(), "{body}");
}

#[tokio::test]
async fn a_required_redis_going_down_gives_503_and_coming_back_gives_200_without_restart() {
    // Arrange
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::spawn(&[("REDIS_URL", &url), ("REDIS_REQUIRED", "true")]).await;
    assert_eq!(app.health().await.0, 200);

    // Act: Redis dies; the probe taken before is reused for up to HEALTH_MAX_AGE_MS (1 s).
    redis.kill();
    wait_until(
        "health to see Redis down",
        Duration::from_secs(15),
        || async { app.health().await.0 == 503 },
    )
    .await;
    let (status, body) = app.health().await;

    // Assert
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ok"], false);
    assert_eq!(body["status"], "down");
    assert_eq!(body["redis"]["status"], "down");
    assert_eq!(body["redis"]["isRequired"], true);
    assert_eq!(body["redis"]["lastHealthCheck"]["success"], false);
    assert!(body["redis"]["lastHealthCheck"]["error"].is_string());
    assert_eq!(body["scalability"]["canScaleHorizontally"], false);

    // Act: Redis returns on the same port; the same process recovers.
    redis.restart();
    wait_until("health to recover", Duration::from_secs(15), || async {
        app.health().await.0 == 200
    })
    .await;
    let (_, body) = app.health().await;
    assert_eq!(body["redis"]["status"], "enabled");
}

#[tokio::test]
async fn an_optional_redis_going_down_degrades_without_failing() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let app = TestApp::spawn(&[("REDIS_URL", &url)]).await;
    redis.kill();

    let (status, body) = app.health().await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["redis"]["status"], "down");
}

#[tokio::test]
async fn the_report_never_shows_a_secret() {
    let redis = RedisServer::start();
    let url = redis
        .url()
        .replace("redis://", "redis://:hunter2-password@");
    // The private server has no password; AUTH fails, so Redis reads as down, and the
    // error text must still not carry the password.
    let app = TestApp::spawn(&[("REDIS_URL", &url)]).await;

    let response = app.get("/health").await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();

    // An optional Redis that refuses us: degraded, 200, with the report in full.
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_report_shape(&report);
    assert_eq!(report["status"], "degraded", "{body}");
    assert_eq!(report["redis"]["status"], "down", "{body}");
    assert!(
        report["redis"]["lastHealthCheck"]["error"].is_string(),
        "{body}"
    );
    assert!(!body.contains("hunter2"), "{body}");
    assert!(!body.contains("MDEyMzQ1Njc4OTAx"), "{body}");
}

#[tokio::test]
async fn with_redis_down_the_report_says_what_failed_but_not_where() {
    // Arrange
    let mut redis = RedisServer::start();
    let url = redis.url();
    let address = format!("127.0.0.1:{}", redis.port());
    for required in ["false", "true"] {
        let app = TestApp::spawn(&[("REDIS_URL", &url), ("REDIS_REQUIRED", required)]).await;
        if redis.is_running() {
            assert_eq!(app.health().await.0, 200);
            // Act: Redis dies under the running app.
            redis.kill();
        }
        let expected = if required == "true" { 503 } else { 200 };
        wait_until(
            "health to see Redis down",
            Duration::from_secs(15),
            || async { app.health().await.1["redis"]["status"] == "down" },
        )
        .await;
        let response = app.get("/health").await;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();

        // Assert: the failure is described, the address appears nowhere.
        assert_eq!(status, expected, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_report_shape(&report);
        let error = report["redis"]["lastHealthCheck"]["error"]
            .as_str()
            .unwrap();
        assert!(error.contains("Redis"), "{error}");
        for leak in [
            address.as_str(),
            "127.0.0.1",
            "localhost",
            &format!(":{}", redis.port()),
        ] {
            assert!(!body.contains(leak), "{leak} in {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_share_one_redis_ping_and_one_sqlite_read() {
    // Arrange: a max age far longer than the test, so all requests fall in one window.
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url()), ("HEALTH_MAX_AGE_MS", "600000")]).await;
    let pings_before = command_calls(&redis, "ping").await;
    let reads_before = app.app.store.reads();

    // Act
    let requests = (0..200).map(|_| {
        let http = app.http.clone();
        let url = format!("{}/health", app.address);
        tokio::spawn(async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        })
    });
    let mut answers = Vec::new();
    for request in requests.collect::<Vec<_>>() {
        answers.push(request.await.unwrap());
    }

    // Assert: every request answered from one probe: one PING, one read of SQLite.
    let pings = command_calls(&redis, "ping").await - pings_before;
    let reads = app.app.store.reads() - reads_before;
    assert_eq!(pings, 1, "PINGs at the Redis server for 200 requests");
    assert_eq!(reads, 1, "SQLite reads for 200 requests");
    let first_checked = answers[0].1["checkedAt"].clone();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["status"], "ok", "{body}");
        assert_eq!(body["checkedAt"], first_checked, "{body}");
    }
}

/// A bridge's figures as the bridge reports them, `age_ms` old.
fn bridge_figures(age_ms: i64, pushes: u64, p95: Option<f64>) -> RealtimeFigures {
    let reported_at = now_ms() - age_ms;
    RealtimeFigures {
        reported_at,
        shards_held: 8,
        connected: 3,
        subscribed: 2,
        reconnects: 1,
        pushes,
        last_push_at: (pushes > 0).then(|| rfc3339_utc(reported_at - 500)),
        push_to_event_ms_p95: p95,
    }
}

#[tokio::test]
async fn without_a_bridge_there_is_no_realtime_report() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url())]).await;

    let (status, body) = app.health().await;

    assert_eq!(status, 200, "{body}");
    assert!(body.get("realtime").is_none(), "{body}");
}

#[tokio::test]
async fn the_realtime_figures_of_every_bridge_on_this_redis_are_summed() {
    // Arrange: two bridges reporting through the coordination API, as the bridge does.
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url()), ("HEALTH_MAX_AGE_MS", "0")]).await;
    let presence = redis_coordinator(&[redis.url()]).presence();
    let first = bridge_figures(1_000, 7, Some(35.5));
    let second = bridge_figures(0, 4, Some(120.25));
    presence.report_realtime("bridge-a", &first).await.unwrap();
    presence.report_realtime("bridge-b", &second).await.unwrap();

    // Act
    let (status, body) = app.health().await;

    // Assert
    assert_eq!(status, 200, "{body}");
    let realtime = &body["realtime"];
    assert_eq!(realtime["bridges"], 2, "{body}");
    assert_eq!(realtime["shardsHeld"], 16);
    assert_eq!(realtime["connected"], 6);
    assert_eq!(realtime["subscribed"], 4);
    assert_eq!(realtime["reconnects"], 2);
    assert_eq!(realtime["pushes"], 11);
    assert_eq!(
        realtime["lastPushAt"].as_str(),
        second.last_push_at.as_deref(),
        "the latest push of any bridge"
    );
    assert_eq!(realtime["pushToEventMsP95"], 120.25, "the worst bridge's");
}

#[tokio::test]
async fn a_bridge_gone_quiet_drops_out_of_the_report_and_its_figures_are_forgotten() {
    // Arrange: one bridge reporting, then it stops (its last report ages past the window).
    let redis = RedisServer::start();
    let app = TestApp::spawn(&[("REDIS_URL", &redis.url()), ("HEALTH_MAX_AGE_MS", "0")]).await;
    let presence = redis_coordinator(&[redis.url()]).presence();
    presence
        .report_realtime("bridge-a", &bridge_figures(0, 3, None))
        .await
        .unwrap();
    let (_, body) = app.health().await;
    assert_eq!(body["realtime"]["pushes"], 3, "{body}");
    assert!(body["realtime"]["pushToEventMsP95"].is_null(), "{body}");
    presence
        .report_realtime("bridge-a", &bridge_figures(60_000, 3, None))
        .await
        .unwrap();

    // Act
    let (status, body) = app.health().await;

    // Assert
    assert_eq!(status, 200, "{body}");
    assert!(body.get("realtime").is_none(), "{body}");
    let mut conn = redis.connection().await;
    let left: Vec<String> = redis::cmd("HKEYS")
        .arg("avatar:realtime:reports")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}
