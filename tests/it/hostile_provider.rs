//! The poller and the connect callback against a DonationAlerts that misbehaves — a bug on
//! its side or a hostile one: pages without end, `next` links to the page itself or to
//! another host, answers too large, fields too long. Every poll stays bounded (pages, what
//! it holds, time), loses no donation, and ends within seconds at a shutdown or deadline.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avatar_tests::{LocalServer, TestApp, wait_until};
use fake_providers::donationalerts::{ApiFailure, NewDonation, PER_PAGE, Paging};
use shared::domain::TwitchUserId;
use shared::domain::donation::{MAX_DONOR_NAME_CHARS, MAX_MESSAGE_CHARS};
use shared::poll::schedule::PollOutcome;
use shared::poll::streamer::MAX_PAGES_PER_POLL;
use shared::providers::MAX_PROVIDER_BODY_BYTES;
use tokio::time::Instant;

use crate::login::error_code;
use crate::poller::{PollerSetup, da_id, twitch_id};

/// One poll of streamer `i`, now, as the poller runs it; panics if it has not ended within
/// 30 s.
async fn poll_once(setup: &PollerSetup, i: usize) -> PollOutcome {
    let poller = setup.app.poller().expect("DonationAlerts configured");
    let streamer = TwitchUserId::parse(&twitch_id(i)).unwrap();
    tokio::time::timeout(Duration::from_secs(30), poller.poll_now(&streamer))
        .await
        .expect("the poll ended within 30 s")
}

/// Streamer `i`'s stored cursor.
fn cursor(setup: &PollerSetup, i: usize) -> Option<i64> {
    let conn = rusqlite::Connection::open(setup.app.store.path()).unwrap();
    conn.query_row(
        "SELECT poll_cursor FROM donationalerts_links WHERE streamer_twitch_id = ?1",
        [twitch_id(i)],
        |r| r.get(0),
    )
    .unwrap()
}

fn recorded_for(setup: &PollerSetup, i: usize) -> i64 {
    setup.rows(&format!(
        "SELECT count(*) FROM donations WHERE streamer_twitch_id = '{}'",
        twitch_id(i)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_of_pages_without_end_stops_at_the_page_cap_and_keeps_the_cursor() {
    // Arrange: every page full of donations newer than the cursor, each with a next link
    let setup = PollerSetup::start(1, &[]).await;
    setup.fake.set_paging(da_id(0), Paging::EndlessFull);

    // Act
    let outcome = poll_once(&setup, 0).await;

    // Assert: the pages read are recorded; the cursor stays below the pages not read yet
    assert_eq!(
        setup.requests_for(0),
        MAX_PAGES_PER_POLL,
        "one request a page, up to the cap"
    );
    assert_eq!(
        outcome,
        PollOutcome::Polled {
            new_donations: MAX_PAGES_PER_POLL * PER_PAGE
        }
    );
    assert_eq!(cursor(&setup, 0), Some(0));
    assert!(!setup.poll_lock_held(0).await, "the lock is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_page_or_a_next_link_read_before_ends_the_poll() {
    // Arrange: streamer 0's pages are empty yet say there is more; streamer 1's page 1
    // (full, so the walk goes on) names itself as the next page
    let setup = PollerSetup::start(2, &[]).await;
    setup.fake.set_paging(da_id(0), Paging::EndlessEmpty);
    setup.donate(1, PER_PAGE + 1);
    setup.fake.set_paging(da_id(1), Paging::NextIsSelf);

    // Act
    let empty = poll_once(&setup, 0).await;
    let looping = poll_once(&setup, 1).await;

    // Assert
    assert_eq!(empty, PollOutcome::Polled { new_donations: 0 });
    assert_eq!(setup.requests_for(0), 1, "an empty page ends the list");
    assert_eq!(
        setup.requests_for(1),
        2,
        "page 1, then page 1 once more through its next link, and no more"
    );
    assert_eq!(
        looping,
        PollOutcome::Polled {
            new_donations: PER_PAGE
        }
    );
    assert_eq!(
        cursor(&setup, 1),
        Some(0),
        "the walk never reached the cursor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_streamers_keep_flowing_while_one_lists_pages_without_end() {
    // Arrange
    let setup = PollerSetup::start(3, &[]).await;
    setup.fake.set_paging(da_id(0), Paging::EndlessFull);
    let (stop, poller) = setup.run_poller();

    // Act
    let others: HashSet<String> = [1, 2]
        .into_iter()
        .flat_map(|i| setup.donate(i, 3))
        .collect();
    setup.wait_for_events(&others).await;
    wait_until(
        "a poll of the endless streamer to end and be recorded",
        Duration::from_secs(30),
        || async {
            setup.rows(
                "SELECT count(*) FROM donationalerts_links
                 WHERE streamer_twitch_id = '1000' AND last_polled_at IS NOT NULL",
            ) == 1
        },
    )
    .await;
    let _ = stop.send(());

    // Assert
    tokio::time::timeout(Duration::from_secs(30), poller)
        .await
        .expect("the poller stops")
        .unwrap();
    assert_eq!(recorded_for(&setup, 1), 3);
    assert_eq!(recorded_for(&setup, 2), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_stopped_by_the_page_cap_loses_no_donation() {
    // Arrange: a backlog of the cap's worth of pages and 45 more
    let setup = PollerSetup::start(1, &[]).await;
    let cap = MAX_PAGES_PER_POLL * PER_PAGE;
    let mut expected: HashSet<String> = setup.donate(0, cap + 45).into_iter().collect();

    // Act: the first poll reads the cap's worth; then 5 donations arrive (every page
    // shifts by 5); the second poll reads on below the pages read, the third the new ones
    let first = poll_once(&setup, 0).await;
    let cursor_after_first = cursor(&setup, 0);
    expected.extend(setup.donate(0, 5));
    let second = poll_once(&setup, 0).await;
    let third = poll_once(&setup, 0).await;

    // Assert
    assert_eq!(first, PollOutcome::Polled { new_donations: cap });
    assert_eq!(
        cursor_after_first,
        Some(0),
        "not moved past what was walked"
    );
    assert_eq!(second, PollOutcome::Polled { new_donations: 45 });
    assert_eq!(third, PollOutcome::Polled { new_donations: 5 });
    let conn = rusqlite::Connection::open(setup.app.store.path()).unwrap();
    let mut statement = conn.prepare("SELECT event_id FROM event_outbox").unwrap();
    let events: Vec<String> = statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), expected.len(), "one event each");
    assert_eq!(events.into_iter().collect::<HashSet<_>>(), expected);
    let newest = setup.fake.donations_of(da_id(0))[0].id;
    assert_eq!(cursor(&setup, 0), Some(newest));
}

/// `streamers` linked streamers, streamer 0's pages without end, each answered after `delay`.
async fn slow_pages_without_end(streamers: usize, delay: Duration) -> PollerSetup {
    let setup = PollerSetup::start(streamers, &[]).await;
    setup.fake.set_paging(da_id(0), Paging::EndlessFull);
    setup
        .fake
        .set_failure(Some(da_id(0)), ApiFailure::Slow(delay));
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_ends_by_its_stop_time_while_pages_never_end() {
    // Arrange: pages without end, each taking half a second
    let setup = slow_pages_without_end(2, Duration::from_millis(500)).await;
    let poller = setup.app.poller().unwrap();

    // Act: a run as the da-poll function makes one, ending in 8 s
    let run = poller.run_until(Instant::now() + Duration::from_secs(8));
    let ended = tokio::time::timeout(Duration::from_secs(40), run).await;

    // Assert
    assert!(ended.is_ok(), "the run did not end by its stop time");
    assert!(setup.requests_for(0) >= 2, "the endless poll was under way");
    assert!(!setup.poll_lock_held(0).await, "no lock left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_avatar_local_while_a_poll_walks_pages_without_end() {
    // Arrange: avatar-local over the same database, Redis and fake, whose pages for the
    // streamer never end and take a moment each
    let setup = slow_pages_without_end(1, Duration::from_millis(300)).await;
    let vars: Vec<(String, String)> = setup.testbed.vars.clone().into_iter().collect();
    let server = LocalServer::start(&["--port", "0"], &vars, "info").await;
    wait_until(
        "a poll to be past its first page",
        Duration::from_secs(30),
        || async { setup.requests_for(0) >= 2 },
    )
    .await;

    // Act
    let (code, log) = server.terminate(Duration::from_secs(20));

    // Assert: it exited cleanly, its lock released and the page it read recorded
    assert_eq!(code, Some(0), "avatar-local did not stop: {log:#?}");
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:#?}");
    assert!(!setup.poll_lock_held(0).await, "no lock left behind");
    assert!(recorded_for(&setup, 0) >= PER_PAGE as i64);
    assert_eq!(cursor(&setup, 0), Some(0));
}

/// A listener on another port that answers nothing and keeps, for every request it gets,
/// its first line and whether it carried a bearer token.
async fn silent_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = vec![0; 4096];
                let n = stream.read(&mut head).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..n]);
                let line = text.lines().next().unwrap_or("(nothing)");
                let bearer = text.to_ascii_lowercase().contains("authorization: bearer");
                seen.lock()
                    .unwrap()
                    .push(format!("{line} (bearer token sent: {bearer})"));
                // Held open without an answer until the test ends.
                let _ = stream.read(&mut head).await;
            });
        }
    });
    (port, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_never_follows_a_next_link_to_another_host() {
    // Arrange: page 1 is full, so the walk goes on, and its next link is the donation
    // list's path on another port of this machine
    let setup = PollerSetup::start(1, &[]).await;
    let (port, requests) = silent_listener().await;
    setup.donate(0, PER_PAGE + 1);
    setup.fake.set_paging(
        da_id(0),
        Paging::NextLink(format!(
            "http://127.0.0.1:{port}/api/v1/alerts/donations?page=2"
        )),
    );

    // Act
    let outcome = poll_once(&setup, 0).await;

    // Assert: the other host got no request (and so never the bearer token)
    let got = requests.lock().unwrap().clone();
    assert!(got.is_empty(), "the other host was asked: {got:?}");
    assert!(
        matches!(outcome, PollOutcome::Failed { .. }),
        "a link away from DonationAlerts is a provider failure: {outcome:?}"
    );
    assert_eq!(cursor(&setup, 0), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_donation_fields_are_cut_and_a_bad_currency_marked_never_refused() {
    // Arrange: a name and a message far longer than the caps (in multibyte letters), a
    // currency that is no code, one in lower case, and an ordinary donation
    let setup = PollerSetup::start(1, &[]).await;
    let long = |text: &str, chars: usize| text.repeat(chars);
    let donate = |username: Option<String>, message: String, currency: &str| {
        setup.fake.donate(NewDonation {
            da_user_id: Some(da_id(0)),
            username,
            message,
            amount: serde_json::Number::from(100),
            currency: currency.into(),
            created_at: None,
        })
    };
    let overlong = donate(
        Some(long("ж", MAX_DONOR_NAME_CHARS + 100)),
        long("ё", MAX_MESSAGE_CHARS * 3),
        "R$B<script>",
    );
    let lower = donate(None, "lower case".into(), "rub");
    let plain = donate(Some("Viewer".into()), "Hello!".into(), "EUR");
    let expected: HashSet<String> = [&overlong, &lower, &plain]
        .iter()
        .map(|d| format!("da:{}:{}", da_id(0), d.id))
        .collect();
    let (stop, poller) = setup.run_poller();

    // Act
    setup.wait_for_events(&expected).await;
    let _ = stop.send(());
    poller.await.unwrap();

    // Assert: in the stream and in the database alike
    let events: Vec<serde_json::Value> = crate::bus::stream_entries(&setup.redis)
        .await
        .into_iter()
        .map(|(_, fields)| {
            let data = fields.into_iter().find(|(k, _)| k == "data").unwrap().1;
            serde_json::from_str(&data).unwrap()
        })
        .collect();
    let event = |id: i64| {
        events
            .iter()
            .find(|e| e["donation"]["id"] == id)
            .map(|e| e["donation"].clone())
            .unwrap()
    };
    let cut = event(overlong.id);
    let name = cut["username"].as_str().unwrap();
    let message = cut["message"].as_str().unwrap();
    assert_eq!(name.chars().count(), MAX_DONOR_NAME_CHARS);
    assert!(name.ends_with('…') && name.starts_with("жжж"), "{name}");
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
    assert!(message.ends_with('…') && message.starts_with("ёёё"));
    assert_eq!(cut["currency"], "???");
    assert_eq!(event(lower.id)["currency"], "RUB");
    let untouched = event(plain.id);
    assert_eq!(
        (untouched["username"].clone(), untouched["message"].clone()),
        (serde_json::json!("Viewer"), serde_json::json!("Hello!"))
    );
    let conn = rusqlite::Connection::open(setup.app.store.path()).unwrap();
    let (stored_name, stored_message, currency): (String, String, String) = conn
        .query_row(
            "SELECT donor_name, message, currency FROM donations WHERE da_donation_id = ?1",
            [overlong.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (
            stored_name.as_str(),
            stored_message.as_str(),
            currency.as_str()
        ),
        (name, message, "???")
    );
}

#[tokio::test]
async fn an_answer_larger_than_the_cap_fails_the_connect_callback_with_502_writing_nothing() {
    // Arrange: DonationAlerts answers the code exchange correctly, but padded past the cap
    let app = TestApp::spawn(&[]).await;
    let browser = app.browser();
    browser.log_in().await;
    let writes_before = app.writes();
    app.donationalerts.set_failure(
        None,
        ApiFailure::Oversized {
            padding: MAX_PROVIDER_BODY_BYTES,
        },
    );

    // Act
    let callback = browser.connect_donationalerts().await;

    // Assert
    assert_eq!(callback.status(), 502);
    let html = callback.text().await.unwrap();
    assert_eq!(error_code(&html), "provider_failed", "{html}");
    assert_eq!(app.writes(), writes_before);
    assert_eq!(app.rows("donationalerts_links"), 0);
}
