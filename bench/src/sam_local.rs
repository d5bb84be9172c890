//! `sam local start-api`: the latency of a first request (SAM starts the function's
//! container and the function cold-starts in it) and of warm ones through SAM's local API
//! Gateway, for `GET /health` and `GET /`. Needs `scripts/sam-local.sh prepare` (Docker, the
//! base image, the build), which `scripts/bench.sh` runs when this group is asked for.

use std::time::{Duration, Instant};

use avatar_tests::{RedisServer, SamLocal, docker_bridge_address, free_port};

use crate::{Row, micros, percentile};

const WARM_ROUNDS: usize = 50;

pub async fn rows() -> Vec<Row> {
    let bridge = docker_bridge_address();
    let redis = RedisServer::start_also_on(bridge);
    let sam = SamLocal::start(free_port(), &[("REDIS_URL".into(), redis.url_on(bridge))]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let mut rows = Vec::new();
    for (path, function) in [("/health", "health"), ("/", "pages")] {
        let url = format!("{}{path}", sam.base);
        let started = Instant::now();
        let first = client.get(&url).send().await.expect("SAM answers");
        let first_time = started.elapsed();
        assert_eq!(first.status(), 200, "{}", sam.log());
        let mut warm = Vec::with_capacity(WARM_ROUNDS);
        for _ in 0..WARM_ROUNDS {
            let started = Instant::now();
            let response = client.get(&url).send().await.expect("SAM answers");
            warm.push(started.elapsed());
            assert_eq!(response.status(), 200);
        }
        warm.sort();
        rows.push(Row {
            name: format!("sam local start-api, GET {path} ({function})"),
            figure: format!(
                "first {:.2} s, warm p50 {}",
                first_time.as_secs_f64(),
                micros(percentile(&warm, 0.5))
            ),
            detail: format!(
                "first request: container start and cold start included; warm: {WARM_ROUNDS} \
                 requests, p99 {}",
                micros(percentile(&warm, 0.99))
            ),
        });
    }
    sam.stop();
    rows
}
