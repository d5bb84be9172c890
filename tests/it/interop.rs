//! Lock interop with the Node services: a lock taken with the npm `redlock` package (v5, on
//! ioredis) blocks this project's lock on the same resource and the reverse; key and value
//! have the same format byte for byte.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use avatar_tests::{ChildProcess, RedisServer, redis_coordinator};

const RESOURCE: &str = "locks:donationalerts:42";

fn node_cli(redis: &RedisServer, mode: &str, ttl_ms: u64) -> ChildProcess {
    node_cli_for(redis, mode, RESOURCE, ttl_ms)
}

fn node_cli_for(redis: &RedisServer, mode: &str, resource: &str, ttl_ms: u64) -> ChildProcess {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/redlock").exists(),
        "the Node packages are missing: run scripts/test.sh (it runs `npm ci` in tests/node)"
    );
    let mut command = Command::new("node");
    command.arg(dir.join("redlock-cli.js")).args([
        mode,
        &redis.port().to_string(),
        resource,
        &ttl_ms.to_string(),
    ]);
    ChildProcess::spawn(&mut command)
}

fn json_line(child: &ChildProcess) -> serde_json::Value {
    let line = child
        .next_line(Duration::from_secs(20))
        .expect("the Node helper answers");
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
}

fn is_redlock_value(value: &str) -> bool {
    value.len() == 32
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn a_lock_held_by_node_redlock_blocks_this_project_until_node_releases_it() {
    // Arrange: Node takes the poll lock of streamer 42.
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let mut node = node_cli(&redis, "hold", 10_000);
    let held = json_line(&node);
    assert_eq!(held["acquired"], true, "{held}");
    let node_value = held["value"].as_str().unwrap().to_owned();

    // Assert: the key is the resource name, the value Node's 32 hex characters.
    assert!(is_redlock_value(&node_value), "{node_value}");
    assert_eq!(redis.get(RESOURCE).await, Some(node_value.clone()));

    // Act + Assert: this project cannot take it.
    let refused = coordinator
        .locks()
        .try_lock(RESOURCE, Duration::from_millis(4500))
        .await
        .unwrap();
    assert!(refused.is_none());
    assert_eq!(
        redis.get(RESOURCE).await,
        Some(node_value),
        "Node's lock untouched"
    );

    // Act: Node releases; now this project gets it, in the same format.
    node.send_line("release");
    assert_eq!(json_line(&node)["released"], true);
    let ours = coordinator
        .locks()
        .try_lock(RESOURCE, Duration::from_millis(4500))
        .await
        .unwrap()
        .expect("free after Node released it");
    assert!(is_redlock_value(&ours.value));
    assert_eq!(redis.get(RESOURCE).await, Some(ours.value.clone()));
    assert!(coordinator.locks().release(&ours).await.unwrap());
}

#[tokio::test]
async fn a_lock_held_by_this_project_blocks_node_redlock_until_released() {
    // Arrange
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let ours = coordinator
        .locks()
        .try_lock(RESOURCE, Duration::from_millis(4500))
        .await
        .unwrap()
        .unwrap();

    // Act + Assert: Node's attempt fails and leaves our lock alone.
    let attempt = json_line(&node_cli(&redis, "try", 4500));
    assert_eq!(attempt["acquired"], false, "{attempt}");
    assert_eq!(redis.get(RESOURCE).await, Some(ours.value.clone()));

    // Node releasing with its own value (it does so after a failed attempt) did not delete
    // ours; once we release, Node gets the lock.
    assert!(coordinator.locks().release(&ours).await.unwrap());
    let attempt = json_line(&node_cli(&redis, "try", 4500));
    assert_eq!(attempt["acquired"], true, "{attempt}");
    assert!(is_redlock_value(attempt["value"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamer_whose_poll_lock_node_holds_is_not_polled_until_node_releases_it() {
    // Arrange: the Node app holds the poll lock of streamer 0 (Twitch id 1000)
    let setup = crate::poller::PollerSetup::start(2, &[]).await;
    let mut node = node_cli_for(&setup.redis, "hold", "locks:donationalerts:1000", 60_000);
    assert_eq!(json_line(&node)["acquired"], true);
    let held: std::collections::HashSet<String> = setup.donate(0, 2).into_iter().collect();
    let (stop, poller) = setup.run_poller();

    // Act: the other streamer's donations flow meanwhile
    let other: std::collections::HashSet<String> = setup.donate(1, 2).into_iter().collect();
    setup.wait_for_events(&other).await;
    let polled_while_held = setup.requests_for(0);
    node.send_line("release");
    assert_eq!(json_line(&node)["released"], true);
    setup.wait_for_events(&held).await;
    let _ = stop.send(());
    poller.await.unwrap();

    // Assert
    assert_eq!(polled_while_held, 0, "polled although Node held the lock");
}
