//! Locks against real Redis: exclusion across processes, TTL expiry, holder-only extend and
//! release, Redlock quorum with servers down, and fencing tokens.

use std::process::Command;
use std::time::Duration;

use avatar_tests::{ChildProcess, RedisServer, redis_coordinator, wait_until};
use shared::coordination::{CoordinationError, Lock};

#[test]
fn processes_exclude_each_other_and_fencing_tokens_rise_with_every_holder() {
    // Arrange
    let redis = RedisServer::start();
    let children: Vec<ChildProcess> = (0..4)
        .map(|_| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_coord-child"));
            command.arg("lock").args(["--redis", &redis.url()]).args([
                "--resource",
                "locks:test:mutex",
                "--rounds",
                "50",
            ]);
            ChildProcess::spawn(&mut command)
        })
        .collect();

    // Act
    let mut holds: Vec<(i64, u64)> = Vec::new();
    for child in &children {
        for line in child.remaining_lines(Duration::from_secs(120)) {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts[0], "held", "{line}");
            holds.push((parts[2].parse().unwrap(), parts[1].parse().unwrap()));
        }
    }

    // Assert: every read-modify-write saw the previous one (no lost update), and ordering
    // the holds by the counter they saw orders their fencing tokens strictly.
    holds.sort();
    let seen: Vec<i64> = holds.iter().map(|(before, _)| *before).collect();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    for pair in holds.windows(2) {
        assert!(
            pair[1].1 > pair[0].1,
            "fence went {} -> {}",
            pair[0].1,
            pair[1].1
        );
    }
}

#[tokio::test]
async fn a_lock_uses_the_node_redlock_key_and_value_and_expires_after_its_ttl() {
    // Arrange
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);

    // Act
    let first = coordinator
        .locks()
        .try_lock("locks:donationalerts:42", Duration::from_millis(300))
        .await
        .unwrap()
        .expect("free lock is granted");

    // Assert: key = resource as given, value = 32 lowercase hex, PX ttl, fence counted.
    assert_eq!(
        redis.get("locks:donationalerts:42").await.as_deref(),
        Some(first.value.as_str())
    );
    assert!(
        first.value.len() == 32
            && first
                .value
                .chars()
                .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    );
    let ttl = redis.pttl("locks:donationalerts:42").await;
    assert!((1..=300).contains(&ttl), "PTTL {ttl}");
    assert_eq!(
        redis.get("fence:locks:donationalerts:42").await.as_deref(),
        Some("1")
    );
    assert!(first.remaining() <= Duration::from_millis(300 - 5));

    let refused = coordinator
        .locks()
        .try_lock("locks:donationalerts:42", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(refused.is_none());

    wait_until("the lock to expire", Duration::from_secs(5), || async {
        redis.get("locks:donationalerts:42").await.is_none()
    })
    .await;
    let second = coordinator
        .locks()
        .try_lock("locks:donationalerts:42", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("expired lock is free again");
    assert!(second.fence > first.fence);
}

#[tokio::test]
async fn only_the_holder_can_extend_or_release() {
    // Arrange
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    let held = coordinator
        .locks()
        .try_lock("locks:test:owner", Duration::from_millis(1000))
        .await
        .unwrap()
        .unwrap();
    let impostor = Lock {
        value: "0123456789abcdef0123456789abcdef".into(),
        ..held.clone()
    };

    // Act + Assert: the impostor can do nothing.
    assert!(!coordinator.locks().release(&impostor).await.unwrap());
    assert!(
        coordinator
            .locks()
            .extend(&impostor, Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        redis.get("locks:test:owner").await,
        Some(held.value.clone())
    );
    assert!(redis.pttl("locks:test:owner").await <= 1000);

    // The holder extends (TTL set anew from now) and releases.
    let extended = coordinator
        .locks()
        .extend(&held, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("holder extends");
    assert!(redis.pttl("locks:test:owner").await > 50_000);
    assert!(extended.remaining() > Duration::from_secs(50));
    assert!(coordinator.locks().release(&extended).await.unwrap());
    assert_eq!(redis.get("locks:test:owner").await, None);
    assert!(
        !coordinator.locks().release(&extended).await.unwrap(),
        "released twice"
    );
}

#[tokio::test]
async fn a_quorum_of_three_survives_one_server_down_and_refuses_cleanly_with_two_down() {
    // Arrange
    let mut servers = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let coordinator = redis_coordinator(&urls);
    servers[0].kill();

    // Act: one of three down.
    let lock = coordinator
        .locks()
        .try_lock("locks:test:quorum", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("two of three is a quorum");

    // Assert
    for server in &servers[1..] {
        assert_eq!(
            server.get("locks:test:quorum").await,
            Some(lock.value.clone())
        );
    }
    let second = coordinator
        .locks()
        .try_lock("locks:test:quorum", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(second.is_none(), "held on a quorum: nobody else gets it");
    assert!(coordinator.locks().release(&lock).await.unwrap());
    let next = coordinator
        .locks()
        .try_lock("locks:test:quorum", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(
        next.fence > lock.fence,
        "fence spread over the quorum keeps rising"
    );
    assert!(coordinator.locks().release(&next).await.unwrap());

    // Act: two of three down.
    servers[1].kill();
    let refused = coordinator
        .locks()
        .try_lock("locks:test:quorum", Duration::from_secs(5))
        .await;

    // Assert: a clean error, and no stray key left on the survivor.
    assert!(
        matches!(
            refused,
            Err(CoordinationError::NoQuorum {
                reached: 1,
                needed: 2
            })
        ),
        "{refused:?}"
    );
    assert_eq!(servers[2].get("locks:test:quorum").await, None);
}

#[tokio::test]
async fn one_time_state_is_taken_once_across_many_callers_and_expires() {
    // Arrange
    let redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    assert!(
        coordinator
            .one_time_states()
            .put_once("oauth:state:abc", "browser-1", Duration::from_secs(300))
            .await
            .unwrap()
    );
    assert!(
        !coordinator
            .one_time_states()
            .put_once("oauth:state:abc", "browser-2", Duration::from_secs(300))
            .await
            .unwrap(),
        "an existing state is never overwritten"
    );
    assert!((299_000..=300_000).contains(&redis.pttl("oauth:state:abc").await));

    // Act: twenty concurrent callers race to take it.
    let states = coordinator.one_time_states();
    let takes =
        futures_util::future::join_all((0..20).map(|_| states.take_once("oauth:state:abc"))).await;

    // Assert: exactly one got the value.
    let winners: Vec<_> = takes.into_iter().filter_map(|t| t.unwrap()).collect();
    assert_eq!(winners, vec!["browser-1".to_owned()]);

    coordinator
        .one_time_states()
        .put_once("oauth:state:short", "v", Duration::from_millis(50))
        .await
        .unwrap();
    wait_until("the state to expire", Duration::from_secs(5), || async {
        redis.get("oauth:state:short").await.is_none()
    })
    .await;
    assert_eq!(
        coordinator
            .one_time_states()
            .take_once("oauth:state:short")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_first_command_after_a_redis_restart_succeeds_through_the_retry() {
    // Arrange: a connection in use, then Redis restarted underneath it (as after a
    // Lambda freeze, the connection is dead when the next command goes out).
    let mut redis = RedisServer::start();
    let coordinator = redis_coordinator(&[redis.url()]);
    coordinator.ping().await.unwrap();
    redis.restart();

    // Act: an idempotent command (publish is deduplicated) is retried once.
    let published = coordinator
        .bus()
        .publish(&avatar_tests::sample_donation_event(1))
        .await;

    // Assert
    assert!(published.is_ok(), "{published:?}");
    assert_eq!(coordinator.presence().heartbeat("me").await.unwrap(), 1);
}
