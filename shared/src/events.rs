//! The donation event as it crosses processes: the stream entry in `avatar:events` and the
//! envelope published on `overlay:broadcast:v1`, in the Node app's format.

use serde::{Deserialize, Serialize};

/// Redis stream every event is appended to (approximate MAXLEN [`STREAM_MAXLEN`]).
pub const EVENT_STREAM: &str = "avatar:events";
/// Pub/sub channel the overlays listen on.
pub const BROADCAST_CHANNEL: &str = "overlay:broadcast:v1";
pub const STREAM_MAXLEN: u64 = 100_000;

/// `{"target":"streamer","streamerId":"…","event":"donation","payload":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastEnvelope {
    pub target: String,
    pub streamer_id: String,
    pub event: String,
    pub payload: DonationPayload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DonationPayload {
    /// `da:{daUserId}:{donationId}`: consumers dedupe on it.
    pub event_id: String,
    pub streamer_id: String,
    /// Always `donationalerts`.
    pub source: String,
    pub donation: Donation,
    /// RFC 3339 UTC.
    pub received_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Donation {
    pub id: i64,
    /// `None` for anonymous donors.
    pub username: Option<String>,
    pub message: String,
    pub amount: serde_json::Number,
    pub currency: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl DonationPayload {
    pub fn event_id_for(da_user_id: i64, donation_id: i64) -> String {
        format!("da:{da_user_id}:{donation_id}")
    }

    pub fn envelope(&self) -> BroadcastEnvelope {
        BroadcastEnvelope {
            target: "streamer".into(),
            streamer_id: self.streamer_id.clone(),
            event: "donation".into(),
            payload: self.clone(),
        }
    }
}

/// One event ready for the bus: what the stream entry and the broadcast carry.
#[derive(Debug, Clone, PartialEq)]
pub struct BusEvent {
    pub event_id: String,
    pub streamer_id: String,
    /// The stream entry's `type` field (`donation`).
    pub kind: String,
    /// The payload as JSON (the stream entry's `data` field).
    pub data: String,
    /// The whole envelope as JSON (what is published on the channel).
    pub envelope: String,
}

impl BusEvent {
    pub fn donation(payload: &DonationPayload) -> Self {
        Self {
            event_id: payload.event_id.clone(),
            streamer_id: payload.streamer_id.clone(),
            kind: "donation".into(),
            // Serialising plain strings and numbers cannot fail.
            data: serde_json::to_string(payload).expect("payload serialises"),
            envelope: serde_json::to_string(&payload.envelope()).expect("envelope serialises"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> DonationPayload {
        DonationPayload {
            event_id: DonationPayload::event_id_for(77, 30530030),
            streamer_id: "141981764".into(),
            source: "donationalerts".into(),
            donation: Donation {
                id: 30530030,
                username: None,
                message: "Hello!".into(),
                amount: serde_json::Number::from_f64(12.5).unwrap(),
                currency: "RUB".into(),
                created_at: "2019-09-29T09:00:00Z".into(),
            },
            received_at: "2019-09-29T09:00:03Z".into(),
        }
    }

    #[test]
    fn envelope_has_the_node_apps_field_names() {
        let event = BusEvent::donation(&sample());
        let json: serde_json::Value = serde_json::from_str(&event.envelope).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "target": "streamer",
                "streamerId": "141981764",
                "event": "donation",
                "payload": {
                    "eventId": "da:77:30530030",
                    "streamerId": "141981764",
                    "source": "donationalerts",
                    "donation": {
                        "id": 30530030,
                        "username": null,
                        "message": "Hello!",
                        "amount": 12.5,
                        "currency": "RUB",
                        "createdAt": "2019-09-29T09:00:00Z"
                    },
                    "receivedAt": "2019-09-29T09:00:03Z"
                }
            })
        );
        assert_eq!(event.kind, "donation");
        assert_eq!(
            serde_json::from_str::<DonationPayload>(&event.data).unwrap(),
            sample()
        );
    }
}
