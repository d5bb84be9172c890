//! Events as they cross processes: the stream entry in `avatar:events` and the envelope
//! published on `overlay:broadcast:v1`, in the Node app's format. Two kinds exist: `donation`
//! (a new donation) and `token.revoked` (a streamer's tokens died: bots must stop using them).

use serde::{Deserialize, Serialize};

use super::{DaUserId, Donation, TwitchUserId};

/// Redis stream every event is appended to (approximate MAXLEN [`STREAM_MAXLEN`]).
pub const EVENT_STREAM: &str = "avatar:events";
/// Pub/sub channel the overlays listen on.
pub const BROADCAST_CHANNEL: &str = "overlay:broadcast:v1";
pub const STREAM_MAXLEN: u64 = 100_000;

/// `{"target":"streamer","streamerId":"…","event":"donation","payload":{…}}`, typed (tests
/// read the broadcast with it; the application publishes [`BusEvent::envelope`]).
#[cfg(any(test, feature = "test-support"))]
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

impl DonationPayload {
    /// The payload announcing `donation`, received by `streamer` at `received_at` (RFC 3339).
    pub fn new(
        streamer: &TwitchUserId,
        da_user: DaUserId,
        donation: Donation,
        received_at: &str,
    ) -> Self {
        Self {
            event_id: Self::event_id_for(da_user, donation.id),
            streamer_id: streamer.as_str().to_owned(),
            source: "donationalerts".into(),
            donation,
            received_at: received_at.to_owned(),
        }
    }

    pub fn event_id_for(da_user: DaUserId, donation_id: i64) -> String {
        format!("da:{da_user}:{donation_id}")
    }

    #[cfg(any(test, feature = "test-support"))]
    pub fn envelope(&self) -> BroadcastEnvelope {
        BroadcastEnvelope {
            target: "streamer".into(),
            streamer_id: self.streamer_id.clone(),
            event: "donation".into(),
            payload: self.clone(),
        }
    }
}

/// The `token.revoked` payload: the provider refused to refresh a streamer's tokens (the
/// streamer disconnected the app, changed their password, …). The tokens are deleted; bots
/// holding a copy must stop using it, and the streamer must log in again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenRevokedPayload {
    /// `token.revoked:{provider}:{streamerId}:{revokedAt ms}`.
    pub event_id: String,
    pub streamer_id: String,
    /// `twitch` or `donationalerts`.
    pub provider: String,
    /// Why: `refresh_refused`.
    pub reason: String,
    /// RFC 3339 UTC.
    pub revoked_at: String,
}

/// A donation and the event announcing it, made together by whatever received the donation
/// (a poll, a push): the store records the one and queues the other in the same write,
/// without knowing the event's form.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedDonation {
    pub donation: Donation,
    pub event: BusEvent,
}

impl ReceivedDonation {
    pub fn new(
        streamer: &TwitchUserId,
        da_user: DaUserId,
        donation: Donation,
        received_at: &str,
    ) -> Self {
        let payload = DonationPayload::new(streamer, da_user, donation, received_at);
        Self {
            event: BusEvent::donation(&payload),
            donation: payload.donation,
        }
    }
}

pub(crate) const DONATION: &str = "donation";
pub(crate) const TOKEN_REVOKED: &str = "token.revoked";

/// `{"target":"streamer","streamerId":"…","event":kind,"payload":…}` with the payload kept
/// exactly as recorded.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    target: &'static str,
    streamer_id: &'a str,
    event: &'a str,
    payload: &'a serde_json::value::RawValue,
}

/// One event ready for the bus: what the stream entry and the broadcast carry.
#[derive(Debug, Clone, PartialEq)]
pub struct BusEvent {
    pub event_id: String,
    pub streamer_id: String,
    /// The stream entry's `type` field (`donation`, `token.revoked`).
    pub kind: String,
    /// The payload as JSON (the stream entry's `data` field).
    pub data: String,
    /// The whole envelope as JSON (what is published on the channel).
    pub envelope: String,
}

impl BusEvent {
    pub fn donation(payload: &DonationPayload) -> Self {
        // Serialising plain strings and numbers cannot fail.
        let data = serde_json::to_string(payload).expect("payload serialises");
        Self::recorded(&payload.event_id, &payload.streamer_id, DONATION, data)
            .expect("a serialised payload is JSON")
    }

    pub(crate) fn token_revoked(payload: &TokenRevokedPayload) -> Self {
        let data = serde_json::to_string(payload).expect("payload serialises");
        Self::recorded(&payload.event_id, &payload.streamer_id, TOKEN_REVOKED, data)
            .expect("a serialised payload is JSON")
    }

    /// An event of any kind from its recorded parts (an outbox row); `data` must be JSON.
    pub fn recorded(
        event_id: &str,
        streamer_id: &str,
        kind: &str,
        data: String,
    ) -> Result<Self, serde_json::Error> {
        let payload: &serde_json::value::RawValue = serde_json::from_str(&data)?;
        let envelope = serde_json::to_string(&Envelope {
            target: "streamer",
            streamer_id,
            event: kind,
            payload,
        })?;
        Ok(Self {
            event_id: event_id.to_owned(),
            streamer_id: streamer_id.to_owned(),
            kind: kind.to_owned(),
            data,
            envelope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> DonationPayload {
        DonationPayload {
            event_id: DonationPayload::event_id_for(DaUserId(77), 30530030),
            streamer_id: "141981764".into(),
            source: "donationalerts".into(),
            donation: Donation {
                id: 30530030,
                donor_name: None,
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
        let typed = serde_json::to_value(sample().envelope()).unwrap();
        assert_eq!(json, typed, "the generic envelope is the typed one");
    }

    #[test]
    fn a_token_revoked_event_has_the_same_envelope_shape() {
        let payload = TokenRevokedPayload {
            event_id: "token.revoked:twitch:141981764:1700000000000".into(),
            streamer_id: "141981764".into(),
            provider: "twitch".into(),
            reason: "refresh_refused".into(),
            revoked_at: "2023-11-14T22:13:20Z".into(),
        };
        let event = BusEvent::token_revoked(&payload);
        assert_eq!(event.kind, "token.revoked");
        let json: serde_json::Value = serde_json::from_str(&event.envelope).unwrap();
        assert_eq!(json["target"], "streamer");
        assert_eq!(json["event"], "token.revoked");
        assert_eq!(json["streamerId"], "141981764");
        assert_eq!(json["payload"]["provider"], "twitch");
        assert_eq!(json["payload"]["eventId"], payload.event_id);
        assert!(BusEvent::recorded("x", "1", "donation", "not json".into()).is_err());
    }
}
