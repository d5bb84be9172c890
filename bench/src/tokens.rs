//! The token lifecycle: a validation run over 10,000 stored tokens against the fake Twitch
//! answering `/validate` after 30 ms (achieved rate against the configured one, and memory),
//! and the server time of `GET /internal/chat-token/{id}` for a fresh token and for one that
//! needs a refresh first.

use std::time::{Duration, Instant};

use avatar_tests::TestApp;
use avatar_tests::twitch_users::seed_twitch_users;
use shared::domain::now_ms;
use tower::ServiceExt as _;

use crate::{Row, micros, percentile};

const TOKENS: usize = 10_000;
const VALIDATE_RATE: u32 = 500;
const VALIDATE_CONCURRENCY: u32 = 32;
const VALIDATE_LATENCY: Duration = Duration::from_millis(30);
const CHAT_TOKEN_ROUNDS: usize = 2_000;
const REFRESH_ROUNDS: usize = 300;
const INTERNAL_TOKEN: &str = "bench-internal-api-token-0123456789";

/// Resident memory of this process now (VmRSS), in MiB.
fn rss_mib() -> f64 {
    crate::poll_cost::status_mib("VmRSS:")
}

pub async fn validation_rows() -> Vec<Row> {
    let rate = VALIDATE_RATE.to_string();
    let concurrency = VALIDATE_CONCURRENCY.to_string();
    let app = TestApp::spawn(&[
        ("TWITCH_VALIDATE_RATE_PER_SEC", &rate),
        ("TWITCH_VALIDATE_CONCURRENCY", &concurrency),
    ])
    .await;
    app.twitch.set_validate_latency(VALIDATE_LATENCY);
    seed_twitch_users(&app.app, &app.twitch, 10_000_000, TOKENS).await;
    let validator = app.app.token_validator().expect("Twitch is configured");
    let before = rss_mib();
    // Sample the resident size while the run goes on: its peak, not the process's lifetime
    // high-water mark, is the run's cost.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut peak = rss_mib();
        loop {
            tokio::select! {
                _ = &mut stopped => return peak,
                _ = tokio::time::sleep(Duration::from_millis(5)) => peak = peak.max(rss_mib()),
            }
        }
    });

    let started = Instant::now();
    let report = validator
        .run_at(
            now_ms(),
            tokio::time::Instant::now() + Duration::from_secs(600),
        )
        .await;
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let peak = sampler.await.unwrap_or(f64::NAN);

    assert_eq!(report.validated, TOKENS, "{report:?}");
    let achieved = report.validated as f64 / elapsed.as_secs_f64();
    vec![
        Row {
            name: format!("token validation, {TOKENS} tokens"),
            figure: format!(
                "{:.3} of the configured rate",
                achieved / f64::from(VALIDATE_RATE)
            ),
            detail: format!(
                "{achieved:.1}/s achieved at {VALIDATE_RATE}/s configured, concurrency \
                 {VALIDATE_CONCURRENCY}, /validate answering after {} ms; {elapsed:.2?} \
                 (target: at least 0.95)",
                VALIDATE_LATENCY.as_millis()
            ),
        },
        Row {
            name: "token validation, memory".into(),
            figure: format!("+{:.1} MiB RSS", peak - before),
            detail: format!(
                "peak {peak:.1} MiB during the run against {before:.1} MiB before it (this \
                 process also holds the fake Twitch and its {TOKENS} grants)"
            ),
        },
    ]
}

pub async fn chat_token_rows() -> Vec<Row> {
    let app = TestApp::spawn(&[("INTERNAL_API_TOKEN", INTERNAL_TOKEN)]).await;
    app.browser().log_in().await;
    let user = fake_providers::twitch::FakeUser::demo().id;
    let router = shared::web::routes::router(app.app.clone());
    let request = || {
        axum::http::Request::get(format!("/internal/chat-token/{user}"))
            .header("authorization", format!("Bearer {INTERNAL_TOKEN}"))
            .body(axum::body::Body::empty())
            .expect("request")
    };

    let mut fresh = Vec::with_capacity(CHAT_TOKEN_ROUNDS);
    for round in 0..100 + CHAT_TOKEN_ROUNDS {
        let started = Instant::now();
        let response = router.clone().oneshot(request()).await.expect("response");
        let elapsed = started.elapsed();
        assert_eq!(response.status(), 200);
        if round >= 100 {
            fresh.push(elapsed);
        }
    }
    fresh.sort();

    // A token about to expire: each request refreshes it first. The provider's share is the
    // round trip of the same refresh made directly against the fake, subtracted at p50.
    let mut refreshing = Vec::with_capacity(REFRESH_ROUNDS);
    for _ in 0..REFRESH_ROUNDS {
        app.set_twitch_token_expiry(&user, now_ms()).await;
        let started = Instant::now();
        let response = router.clone().oneshot(request()).await.expect("response");
        refreshing.push(started.elapsed());
        assert_eq!(response.status(), 200);
    }
    refreshing.sort();
    let mut provider = Vec::with_capacity(REFRESH_ROUNDS);
    let seeded = seed_twitch_users(&app.app, &app.twitch, 20_000_000, REFRESH_ROUNDS).await;
    for user in &seeded {
        let started = Instant::now();
        assert_eq!(
            app.twitch_refresh_status(&user.tokens.refresh_token).await,
            200
        );
        provider.push(started.elapsed());
    }
    provider.sort();
    let provider_p50 = percentile(&provider, 0.5);
    vec![
        Row {
            name: "chat-token server time, fresh token".into(),
            figure: format!("p99 {}", micros(percentile(&fresh, 0.99))),
            detail: format!(
                "p50 {}, {CHAT_TOKEN_ROUNDS} requests in-process (target: p99 under 2 ms)",
                micros(percentile(&fresh, 0.5))
            ),
        },
        Row {
            name: "chat-token server time, refreshed first".into(),
            figure: format!(
                "p99 {}",
                micros(percentile(&refreshing, 0.99).saturating_sub(provider_p50))
            ),
            detail: format!(
                "p50 {} with the provider round trip (p50 {}, measured directly against the \
                 local fake) subtracted; {REFRESH_ROUNDS} refreshes",
                micros(percentile(&refreshing, 0.5).saturating_sub(provider_p50)),
                micros(provider_p50)
            ),
        },
    ]
}
