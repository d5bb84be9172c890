//! Sample rows and events the store, bus and coordination tests (and benchmarks) write, and
//! donations made at a running fake DonationAlerts.

/// Makes a donation at the fake DonationAlerts listening on `port` (`avatar-local --demo`'s)
/// through its `POST /_control/donations`; returns the fake's answer status (201 when made).
pub async fn donate_at_fake(port: impl std::fmt::Display, donation: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/_control/donations"))
        .json(&donation)
        .send()
        .await
        .expect("the fake DonationAlerts answers")
        .status()
        .as_u16()
}

/// Inserts a plain donation row: the write every store test and benchmark repeats.
pub fn insert_test_donation(
    conn: &rusqlite::Connection,
    streamer: &str,
    id: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO donations (streamer_twitch_id, da_donation_id, donor_name, message,
                                amount, currency, created_at, received_at)
         VALUES (?1, ?2, 'donor', 'thanks for the stream', '100.50', 'RUB',
                 '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z')",
    )?
    .execute(rusqlite::params![streamer, id])?;
    Ok(())
}

/// The donation event the bus tests publish for donation `id` (streamer 42, DA user 7).
pub fn sample_donation_event(id: i64) -> shared::domain::event::BusEvent {
    use shared::domain::event::{BusEvent, DonationPayload};
    use shared::domain::{DaUserId, Donation, TwitchUserId};
    let donation = Donation {
        id,
        donor_name: Some("viewer".into()),
        message: format!("donation {id}"),
        amount: serde_json::Number::from(100),
        currency: "RUB".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    let streamer = TwitchUserId::parse("42").expect("a Twitch user id");
    BusEvent::donation(&DonationPayload::new(
        &streamer,
        DaUserId(7),
        donation,
        "2026-01-01T00:00:01Z",
    ))
}
