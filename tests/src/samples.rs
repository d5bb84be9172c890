//! Sample rows and events the store, bus and coordination tests (and benchmarks) write.

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
pub fn sample_donation_event(id: i64) -> shared::events::BusEvent {
    use shared::events::{BusEvent, Donation, DonationPayload};
    BusEvent::donation(&DonationPayload {
        event_id: DonationPayload::event_id_for(7, id),
        streamer_id: "42".into(),
        source: "donationalerts".into(),
        donation: Donation {
            id,
            username: Some("viewer".into()),
            message: format!("donation {id}"),
            amount: serde_json::Number::from(100),
            currency: "RUB".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        },
        received_at: "2026-01-01T00:00:01Z".into(),
    })
}
