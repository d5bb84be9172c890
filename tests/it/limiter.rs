//! The app-wide rate limiter shared by several processes through Redis. Budgets are scaled
//! down in time (60 per 1.2 s instead of per minute); grant times are the Redis server's
//! clock, taken inside the limiter's script, so the check does not depend on scheduling.

use std::process::Command;
use std::time::Duration;

use avatar_tests::{ChildProcess, RedisServer};

fn run_processes(redis: &RedisServer, key: &str, burst: u32) -> Vec<u64> {
    let children: Vec<ChildProcess> = (0..3)
        .map(|_| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_coord-child"));
            command
                .arg("limit")
                .args(["--redis", &redis.url(), "--key", key])
                .args(["--limit", "60", "--period-ms", "1200"])
                .args(["--burst", &burst.to_string(), "--duration-ms", "3000"]);
            ChildProcess::spawn(&mut command)
        })
        .collect();
    let mut grants = Vec::new();
    for child in &children {
        for line in child.remaining_lines(Duration::from_secs(60)) {
            let micros = line
                .strip_prefix("grant ")
                .unwrap_or_else(|| panic!("{line}"));
            grants.push(micros.parse().unwrap());
        }
    }
    grants.sort();
    grants
}

fn assert_never_more_than_sixty_per_window(grants: &[u64]) {
    for (i, window) in grants.windows(61).enumerate() {
        let span = window[60] - window[0];
        assert!(
            span >= 1_200_000,
            "61 grants within {span} µs starting at grant {i}"
        );
    }
}

#[test]
fn three_processes_never_exceed_the_shared_budget_in_any_window() {
    let redis = RedisServer::start();
    let grants = run_processes(&redis, "ratelimit:test:steady", 1);
    assert_never_more_than_sixty_per_window(&grants);
    // The budget is actually used: about 150 grants in 3 s at 50 per second.
    assert!(grants.len() >= 120, "only {} grants", grants.len());
}

#[test]
fn bursts_also_stay_within_the_shared_budget() {
    let redis = RedisServer::start();
    let grants = run_processes(&redis, "ratelimit:test:burst", 10);
    assert_never_more_than_sixty_per_window(&grants);
    assert!(grants.len() >= 100, "only {} grants", grants.len());
}
