//! The event bus on real Redis: one stream entry per eventId whatever the number of
//! publishers, and the Node app's pub/sub envelope.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use avatar_tests::{ChildProcess, RedisServer, redis_coordinator, sample_donation_event};
use shared::coordination::Published;
use shared::domain::event::{BROADCAST_CHANNEL, EVENT_STREAM};

/// Every entry of the event stream: (entry id, fields).
pub(crate) async fn stream_entries(redis: &RedisServer) -> Vec<(String, Vec<(String, String)>)> {
    let mut conn = redis.connection().await;
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg(EVENT_STREAM)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    redis::FromRedisValue::from_redis_value(reply).unwrap()
}

async fn stream_event_ids(redis: &RedisServer) -> Vec<String> {
    stream_entries(redis)
        .await
        .into_iter()
        .map(|(_, fields)| {
            fields
                .into_iter()
                .find(|(k, _)| k == "eventId")
                .map(|(_, v)| v)
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_same_event_published_twice_is_in_the_stream_once_with_the_contract_fields() {
    // Arrange
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let event = sample_donation_event(30530030);

    // Act
    let first = coordinator.bus().publish(&event).await.unwrap();
    let second = coordinator.bus().publish(&event).await.unwrap();

    // Assert
    assert_eq!(first, Published::Appended);
    assert_eq!(second, Published::Duplicate);
    let entries = stream_entries(&redis).await;
    assert_eq!(entries.len(), 1);
    let fields: HashMap<String, String> = entries[0].1.iter().cloned().collect();
    assert_eq!(fields["eventId"], "da:7:30530030");
    assert_eq!(fields["streamerId"], "42");
    assert_eq!(fields["type"], "donation");
    let data: serde_json::Value = serde_json::from_str(&fields["data"]).unwrap();
    assert_eq!(data["eventId"], "da:7:30530030");
    assert_eq!(data["source"], "donationalerts");
    assert_eq!(data["donation"]["id"], 30530030);
}

#[tokio::test]
async fn an_event_the_stream_refused_is_appended_when_published_again() {
    // Arrange: the stream key holds something else, so XADD fails inside the script
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let event = sample_donation_event(30530031);
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg(EVENT_STREAM)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();

    // Act
    let refused = coordinator.bus().publish(&event).await;
    let _: () = redis::cmd("DEL")
        .arg(EVENT_STREAM)
        .query_async(&mut conn)
        .await
        .unwrap();
    let retried = coordinator.bus().publish(&event).await.unwrap();

    // Assert: the failed attempt left no dedupe marker behind
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(retried, Published::Appended);
    assert_eq!(stream_entries(&redis).await.len(), 1);
}

#[test]
fn two_processes_publishing_the_same_events_at_once_append_each_once() {
    // Arrange
    let redis = RedisServer::start();
    let publishers: Vec<ChildProcess> = (0..2)
        .map(|_| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_coord-child"));
            command
                .arg("publish")
                .args(["--redis", &redis.url(), "--from", "0", "--to", "300"]);
            ChildProcess::spawn(&mut command)
        })
        .collect();

    // Act
    let mut appended: Vec<i64> = Vec::new();
    let mut duplicates = 0;
    for publisher in &publishers {
        for line in publisher.remaining_lines(Duration::from_secs(60)) {
            match line.split_once(' ') {
                Some(("appended", id)) => appended.push(id.parse().unwrap()),
                Some(("duplicate", _)) => duplicates += 1,
                _ => panic!("unexpected: {line}"),
            }
        }
    }

    // Assert: each id appended by exactly one of the two, and the stream agrees.
    appended.sort();
    assert_eq!(appended, (0..300).collect::<Vec<_>>());
    assert_eq!(duplicates, 300);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut ids = runtime.block_on(stream_event_ids(&redis));
    assert_eq!(ids.len(), 300);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300);
}

#[tokio::test]
async fn the_broadcast_envelope_matches_the_node_apps_format() {
    // Arrange
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let mut pubsub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(BROADCAST_CHANNEL).await.unwrap();

    // Act
    coordinator
        .bus()
        .publish(&sample_donation_event(5))
        .await
        .unwrap();
    coordinator
        .bus()
        .publish(&sample_donation_event(5))
        .await
        .unwrap();
    coordinator
        .bus()
        .publish(&sample_donation_event(6))
        .await
        .unwrap();

    // Assert: two messages (the duplicate was not broadcast), in the envelope format.
    use futures_util::StreamExt as _;
    let mut messages = pubsub.on_message();
    let mut received = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("a broadcast arrives")
            .unwrap();
        assert_eq!(message.get_channel_name(), BROADCAST_CHANNEL);
        let body: String = message.get_payload().unwrap();
        received.push(serde_json::from_str::<serde_json::Value>(&body).unwrap());
    }
    assert_eq!(
        received[0],
        serde_json::json!({
            "target": "streamer",
            "streamerId": "42",
            "event": "donation",
            "payload": {
                "eventId": "da:7:5",
                "streamerId": "42",
                "source": "donationalerts",
                "donation": {
                    "id": 5,
                    "username": "viewer",
                    "message": "donation 5",
                    "amount": 100,
                    "currency": "RUB",
                    "createdAt": "2026-01-01T00:00:00Z"
                },
                "receivedAt": "2026-01-01T00:00:01Z"
            }
        })
    );
    assert_eq!(received[1]["payload"]["eventId"], "da:7:6");
}
