//! `GET /metrics` on the local server: Prometheus text a Prometheus parser reads line by
//! line, whose figures move when the poller finds donations and when tokens are validated,
//! refreshed and revoked; and not one token, of either provider, in it or in a debug log
//! of a login, a DonationAlerts connection, refreshes and a validation.

use std::collections::HashMap;
use std::time::Duration;

use avatar_tests::streamers::link_streamer;
use avatar_tests::twitch_users::seed_twitch_users;
use avatar_tests::{Browser, LocalServer, TestApp, base_vars, location, wait_until};
use fake_providers::donationalerts::{
    FakeDaUser, FakeDonationAlerts, FakeDonationAlertsConfig, NewDonation,
};
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig};
use prometheus_parse::{LineInfo, Scrape};
use shared::domain::now_ms;
use tokio::time::Instant;

/// A scrape: its text, and every sample by name and labels (`name{k="v",…}`, labels sorted).
struct Figures {
    text: String,
    samples: HashMap<String, f64>,
}

impl Figures {
    /// Parses a scrape, failing on any line the Prometheus text format does not allow.
    fn parse(text: String) -> Self {
        for line in text.lines() {
            assert!(
                !matches!(LineInfo::parse(line), LineInfo::Ignored),
                "not Prometheus text: {line:?}"
            );
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        let mut samples = HashMap::new();
        for sample in scrape.samples {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                // Histograms are read through their `_count` and `_sum` samples.
                _ => continue,
            };
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            let key = if labels.is_empty() {
                sample.metric
            } else {
                format!("{}{{{}}}", sample.metric, labels.join(","))
            };
            samples.insert(key, value);
        }
        assert!(!samples.is_empty(), "no sample in {text}");
        Self { text, samples }
    }

    fn get(&self, key: &str) -> f64 {
        match self.samples.get(key) {
            Some(value) => *value,
            None => panic!("no sample {key} in\n{}", self.text),
        }
    }
}

async fn scrape(base: &str) -> Figures {
    let response = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Figures::parse(response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_after_a_poll_and_a_validation() {
    // Arrange: a streamer with two new donations; three Twitch users, one of whose access
    // token expired and one whose grant was revoked outright.
    let app = TestApp::spawn(&[("DA_POLL_INTERVAL_MS", "200")]).await;
    link_streamer(&app.app, &app.donationalerts, "7001", 8001).await;
    for k in 0..2 {
        app.donationalerts.donate(NewDonation {
            da_user_id: Some(8001),
            username: Some("Viewer".into()),
            message: format!("donation {k}"),
            amount: serde_json::Number::from(10),
            currency: "RUB".into(),
            created_at: None,
        });
    }
    let users = seed_twitch_users(&app.app, &app.twitch, 6_000_000, 3).await;
    app.twitch
        .expire_access_token(&users[1].tokens.access_token);
    app.twitch
        .invalidate_access_token(&users[2].tokens.access_token);
    app.twitch
        .invalidate_refresh_token(&users[2].tokens.refresh_token);
    let before = scrape(&app.address).await;

    // Act: the poller runs until it has recorded the donations…
    let poller = app.app.poller().expect("DonationAlerts configured");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let polling = tokio::spawn(async move {
        poller
            .run(None, async move {
                let _ = stopped.await;
            })
            .await
    });
    wait_until(
        "the poll's donations in /metrics",
        Duration::from_secs(30),
        || {
            let address = app.address.clone();
            async move { scrape(&address).await.get("avatar_donations_total") >= 2.0 }
        },
    )
    .await;
    let _ = stop.send(());
    polling.await.unwrap();
    let polled = scrape(&app.address).await;
    // … then one validation run, an hour and a half on.
    let report = app
        .app
        .token_validator()
        .expect("Twitch configured")
        .run_at(
            now_ms() + 90 * 60_000,
            Instant::now() + Duration::from_secs(30),
        )
        .await;
    let validated = scrape(&app.address).await;

    // Assert: the poll's figures moved…
    assert_eq!(before.get("avatar_polls_total"), 0.0);
    assert_eq!(before.get("avatar_donations_total"), 0.0);
    assert!(polled.get("avatar_polls_total") >= 1.0);
    assert_eq!(polled.get("avatar_donations_total"), 2.0);
    assert_eq!(polled.get("avatar_poll_errors_total"), 0.0);
    assert_eq!(polled.get("avatar_poll_streamers"), 1.0);
    assert!(
        polled.get("avatar_writer_batch_size_count") > before.get("avatar_writer_batch_size_count")
    );
    assert!(polled.get("avatar_writer_commit_seconds_sum") > 0.0);
    // … and so did the validation's: one of each outcome, one refresh, one ended connection.
    assert_eq!(
        (report.validated, report.refreshed, report.revoked),
        (1, 1, 1)
    );
    for outcome in ["valid", "refreshed", "revoked"] {
        let key = format!("avatar_token_validations_total{{outcome=\"{outcome}\"}}");
        assert_eq!(before.get(&key), 0.0, "{key}");
        assert_eq!(validated.get(&key), 1.0, "{key}");
    }
    assert_eq!(
        validated.get("avatar_token_refreshes_total{provider=\"twitch\"}"),
        1.0
    );
    assert_eq!(
        validated.get("avatar_need_reauth_total{provider=\"twitch\"}"),
        1.0
    );
    // Labels are fixed sets, never a streamer or user id.
    for key in validated.samples.keys() {
        let labels = key.split_once('{').map_or("", |(_, labels)| labels);
        for label in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
        {
            let name = label.split('=').next().unwrap_or_default();
            assert!(["provider", "outcome"].contains(&name), "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_reaches_the_debug_log_or_the_metrics_of_logins_refreshes_and_a_validation() {
    // Arrange: both fakes here, so every token they issue is known; avatar-local logging at
    // debug level, refreshing any token that expires within a day (so every chat token
    // handed out is a fresh refresh), validating any token validated over a second ago.
    let port = avatar_tests::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(&format!(
        "{base}/auth/twitch/callback"
    )));
    let (twitch_address, _twitch_server) = twitch.spawn(0).await.unwrap();
    let donationalerts = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(&format!(
        "{base}/auth/donationalerts/callback"
    )));
    let (da_address, _da_server) = donationalerts.spawn(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut vars: Vec<(String, String)> = base_vars(dir.path()).into_iter().collect();
    vars.extend(twitch.app_variables(twitch_address));
    vars.extend(donationalerts.app_variables(da_address));
    for (name, value) in [
        ("PUBLIC_BASE_URL", base.as_str()),
        ("INTERNAL_API_TOKEN", "internal-test-token-0123456789abcdef"),
        ("TOKEN_REFRESH_MARGIN_MS", "86400000"),
        ("TWITCH_VALIDATE_DUE_AFTER_MS", "1000"),
        ("DA_POLL_INTERVAL_MS", "200"),
        // A validation starts a refresh only with twice this (and a second) left of its run,
        // and avatar-local's runs last 10 s.
        ("PROVIDER_TIMEOUT_MS", "2000"),
    ] {
        vars.push((name.to_owned(), value.to_owned()));
    }
    let port_arg = port.to_string();

    // Act 1: log in, connect DonationAlerts, hand out a (refreshed) chat token; DonationAlerts
    // refuses the access token, so the poller refreshes it before finding a donation.
    let first = LocalServer::start(&["--port", &port_arg], &vars, "debug").await;
    let browser = Browser::new(&base);
    assert_eq!(location(&browser.log_in().await), "/success");
    assert_eq!(
        location(&browser.connect_donationalerts().await),
        "/success"
    );
    let chat_token = reqwest::Client::new()
        .get(format!("{base}/internal/chat-token/{}", demo_twitch_id()))
        .bearer_auth("internal-test-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(chat_token.status(), 200);
    let chat_token: serde_json::Value = chat_token.json().await.unwrap();
    let handed_out = chat_token["accessToken"].as_str().unwrap().to_owned();
    let da_user = FakeDaUser::demo().id;
    donationalerts.expire_access_tokens_of(da_user);
    donationalerts.donate(NewDonation {
        da_user_id: Some(da_user),
        username: Some("Viewer".into()),
        message: "hello".into(),
        amount: serde_json::Number::from(100),
        currency: "RUB".into(),
        created_at: None,
    });
    wait_until(
        "the donation found after a DonationAlerts refresh",
        Duration::from_secs(30),
        || async {
            let figures = scrape(&base).await;
            figures.get("avatar_donations_total") >= 1.0
                && figures.get("avatar_token_refreshes_total{provider=\"donationalerts\"}") >= 1.0
        },
    )
    .await;
    let first_metrics = scrape(&base).await;
    let (first_log, _) = first.stop();

    // Act 2: Twitch refuses the chat token now; a restart validates what is due at once
    // (once its last validation is over a second old) and refreshes it.
    twitch.invalidate_access_token(&handed_out);
    let database = dir.path().join("data.sqlite");
    wait_until(
        "the Twitch token due for validation",
        Duration::from_secs(10),
        || {
            let database = database.clone();
            async move {
                let conn = rusqlite::Connection::open(&database).unwrap();
                let last: Option<i64> = conn
                .query_row(
                    "SELECT max(last_validated_at) FROM provider_tokens WHERE provider = 'twitch'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
                last.is_none_or(|at| at < now_ms() - 1500)
            }
        },
    )
    .await;
    let second = LocalServer::start(&["--port", &port_arg], &vars, "debug").await;
    wait_until(
        "the validation's refresh in /metrics",
        Duration::from_secs(30),
        || async {
            scrape(&base)
                .await
                .get("avatar_token_validations_total{outcome=\"refreshed\"}")
                >= 1.0
        },
    )
    .await;
    let second_metrics = scrape(&base).await;
    let (second_log, _) = second.stop();

    // Assert: the flow happened, logged at length…
    assert_eq!(
        first_metrics.get("avatar_token_refreshes_total{provider=\"twitch\"}"),
        1.0,
        "the chat token's refresh"
    );
    assert_eq!(
        second_metrics.get("avatar_token_refreshes_total{provider=\"twitch\"}"),
        1.0,
        "the validation's refresh"
    );
    let log = [first_log, second_log].concat().join("\n");
    assert!(log.contains("token validation run done"), "{log}");
    assert!(log.len() > 5000, "debug logging captured: {log}");
    // … and none of the tokens issued along the way is in a log line or a metric.
    let twitch_tokens = twitch.issued_tokens();
    let da_tokens = donationalerts.issued_tokens();
    assert!(
        twitch_tokens.len() >= 6,
        "login, chat token and validation pairs: {}",
        twitch_tokens.len()
    );
    assert!(da_tokens.len() >= 4, "connection and refresh pairs");
    for token in twitch_tokens.iter().chain(&da_tokens) {
        assert!(!log.contains(token.as_str()), "a token is in the log");
        for figures in [&first_metrics, &second_metrics] {
            assert!(
                !figures.text.contains(token.as_str()),
                "a token is in /metrics"
            );
        }
    }
}

fn demo_twitch_id() -> String {
    fake_providers::twitch::FakeUser::demo().id
}

#[tokio::test]
async fn the_realtime_bridges_figures_of_this_process_are_scraped_and_its_emf_line_is_valid() {
    use std::sync::atomic::Ordering;
    let app = TestApp::spawn(&[]).await;
    let before = scrape(&app.address).await;
    assert_eq!(before.get("avatar_realtime_sockets_subscribed"), 0.0);
    assert_eq!(before.get("avatar_realtime_pushes_total"), 0.0);

    // The figures the bridge counts in its App (the same stats the scrape reads).
    let stats = &app.app.realtime_stats;
    stats.shards_held.store(16, Ordering::Relaxed);
    stats.connected.store(5, Ordering::Relaxed);
    stats.subscribed.store(4, Ordering::Relaxed);
    stats.reconnects.fetch_add(2, Ordering::Relaxed);
    stats.pushes.fetch_add(7, Ordering::Relaxed);
    stats.stale_fences.fetch_add(1, Ordering::Relaxed);
    let after = scrape(&app.address).await;
    let line = shared::metrics::emf::realtime_record(
        &shared::metrics::emf::EmfContext {
            stack: "avatar-test",
            function: "realtime",
            timestamp_ms: now_ms(),
        },
        stats,
    );

    assert_eq!(after.get("avatar_realtime_shards_held"), 16.0);
    assert_eq!(after.get("avatar_realtime_sockets_connected"), 5.0);
    assert_eq!(after.get("avatar_realtime_sockets_subscribed"), 4.0);
    assert_eq!(after.get("avatar_realtime_reconnects_total"), 2.0);
    assert_eq!(after.get("avatar_realtime_pushes_total"), 7.0);
    assert_eq!(after.get("avatar_realtime_stale_fences_total"), 1.0);
    let record = avatar_tests::emf::parse_record(&line).expect("a record CloudWatch reads");
    assert_eq!(record["RealtimePushes"], 7, "{line}");
    assert_eq!(record["RealtimeSocketsSubscribed"], 4, "{line}");
}
