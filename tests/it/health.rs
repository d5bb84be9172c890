//! GET /health in each mode, measured live: single-instance, distributed, Redis down while
//! required (503) and back (200) without a restart.

use std::time::Duration;

use avatar_tests::{RedisServer, TestApp, wait_until};

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
    assert!(body["redis"]["latencyMs"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["redis"]["lastHealthCheck"]["success"], true);
    assert!(
        body["redis"]["lastHealthCheck"]["timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(body["scalability"]["mode"], "distributed");
    assert_eq!(body["scalability"]["canScaleHorizontally"], true);
    assert_eq!(body["scalability"]["instances"], 2);
    assert_eq!(body["sqlite"]["journalMode"], "delete");
    // A commit has happened (the migrations), so its duration is reported.
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

    // Act: Redis dies.
    redis.kill();
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

    let body = app.get("/health").await.text().await.unwrap();

    assert!(!body.contains("hunter2"), "{body}");
    assert!(!body.contains("MDEyMzQ1Njc4OTAx"), "{body}");
}
