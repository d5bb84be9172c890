//! DonationAlerts' Centrifugo v2 (old JSON protocol) and `POST /api/v1/centrifuge/subscribe`,
//! served by the fake DonationAlerts on its port.
//!
//! - `GET /connection/websocket`: the first command must be CONNECT
//!   `{"id":n,"params":{"token":…}}` with a socket token from `/api/v1/user/oauth`; a token
//!   made stale by [`FakeDonationAlerts::expire_socket_tokens`] is answered with error 109, an
//!   unknown one (or a command of the newer protocol) closes the socket with a JSON reason.
//!   SUBSCRIBE (method 1) checks the channel token against the client id and the channel
//!   (error 103 otherwise) and answers with the reply and a join push in one frame. PING
//!   (method 7) is echoed.
//! - `POST /api/v1/centrifuge/subscribe` (scope `oauth-donation-subscribe`, the bearer's own
//!   channels only): `{"channels":[{"channel":…,"token":…}]}`, the token bound to the client
//!   id and the channel.
//! - A donation is pushed to every socket subscribed to its account's channel as
//!   `{"result":{"channel":…,"data":{"seq":n,"data":{…donation…}}}}`, `seq` rising per channel.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    FakeDonation, FakeDonationAlerts, Ledger, RequestKind, api_message, bearer, injected,
    oversized, unauthenticated,
};
use crate::random;

/// The scope `POST /api/v1/centrifuge/subscribe` needs.
pub const SUBSCRIBE_SCOPE: &str = "oauth-donation-subscribe";

/// Centrifugo's close code for a server shutdown, sent by
/// [`FakeDonationAlerts::drop_sockets`] with `{"reason":"shutdown","reconnect":true}`.
pub const SHUTDOWN_CLOSE_CODE: u16 = 3001;

/// The channel an account's donations are pushed on.
pub fn donation_channel(da_user_id: i64) -> String {
    format!("$alerts:donation_{da_user_id}")
}

/// The Centrifugo side of the fake: tokens, sockets, knobs.
#[derive(Default)]
pub(super) struct Hub {
    /// Socket token → (account, the generation it was issued in).
    socket_tokens: HashMap<String, (i64, u64)>,
    /// Tokens of an earlier generation are expired.
    token_generation: u64,
    /// Channel token → (client id, channel).
    channel_tokens: HashMap<String, (String, String)>,
    sockets: HashMap<u64, Socket>,
    next_socket: u64,
    seq: HashMap<String, u64>,
    /// Per channel, the push held back by out-of-order delivery.
    held: HashMap<String, String>,
    connects: usize,
    duplicates: bool,
    out_of_order: bool,
    delay: Duration,
    refuse_connects: bool,
    ignore_pings: bool,
}

/// A connected socket (one that sent CONNECT with a good token).
struct Socket {
    da_user_id: i64,
    client_id: String,
    channels: HashSet<String>,
    outbox: mpsc::UnboundedSender<Outgoing>,
}

/// What the hub asks a socket's task to send.
enum Outgoing {
    Text { text: String, not_before: Instant },
    Close { code: u16, reason: String },
}

impl Hub {
    /// A new socket token for an account (each `/user/oauth` call issues one).
    pub(super) fn issue_socket_token(&mut self, da_user_id: i64) -> String {
        let token = format!(
            "fake-socket.{da_user_id}.{}",
            random::lowercase_alphanumeric(40).unwrap_or_default()
        );
        self.socket_tokens
            .insert(token.clone(), (da_user_id, self.token_generation));
        token
    }

    /// Pushes a donation to every socket subscribed to its account's channel.
    pub(super) fn publish(&mut self, da_user_id: i64, donation: &FakeDonation) {
        let channel = donation_channel(da_user_id);
        let seq = self.seq.entry(channel.clone()).or_insert(0);
        *seq += 1;
        let mut data = serde_json::to_value(donation).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut data {
            fields.insert("recipient_name".into(), Value::Null);
            fields.insert("reason".into(), "Donation".into());
        }
        let push = json!({
            "result": { "channel": channel, "data": { "seq": *seq, "data": data } }
        })
        .to_string();
        let texts = if self.out_of_order {
            match self.held.remove(&channel) {
                Some(held) => vec![push, held],
                None => {
                    self.held.insert(channel, push);
                    return;
                }
            }
        } else {
            vec![push]
        };
        self.send_to_channel(&channel, texts);
    }

    fn send_to_channel(&self, channel: &str, texts: Vec<String>) {
        let not_before = Instant::now() + self.delay;
        let copies = if self.duplicates { 2 } else { 1 };
        for socket in self
            .sockets
            .values()
            .filter(|s| s.channels.contains(channel))
        {
            for text in &texts {
                for _ in 0..copies {
                    let _ = socket.outbox.send(Outgoing::Text {
                        text: text.clone(),
                        not_before,
                    });
                }
            }
        }
    }
}

impl FakeDonationAlerts {
    /// Closes every socket of `da_user_id` (every socket when `None`) with code 3001 and
    /// the reason `{"reason":"shutdown","reconnect":true}`.
    pub fn drop_sockets(&self, da_user_id: Option<i64>) {
        let mut ledger = self.ledger();
        ledger.centrifugo.sockets.retain(|_, socket| {
            if da_user_id.is_some_and(|id| id != socket.da_user_id) {
                return true;
            }
            let _ = socket.outbox.send(Outgoing::Close {
                code: SHUTDOWN_CLOSE_CODE,
                reason: r#"{"reason":"shutdown","reconnect":true}"#.to_owned(),
            });
            false
        });
    }

    /// Sends every push twice.
    pub fn set_push_duplicates(&self, on: bool) {
        self.ledger().centrifugo.duplicates = on;
    }

    /// Holds each channel's push back and sends it after the next one on that channel;
    /// turning it off sends what is held.
    pub fn set_push_out_of_order(&self, on: bool) {
        let mut ledger = self.ledger();
        let hub = &mut ledger.centrifugo;
        hub.out_of_order = on;
        if !on {
            for (channel, text) in std::mem::take(&mut hub.held) {
                hub.send_to_channel(&channel, vec![text]);
            }
        }
    }

    /// Sends each push this long after the donation (a socket's later frames wait behind it).
    pub fn set_push_delay(&self, delay: Duration) {
        self.ledger().centrifugo.delay = delay;
    }

    /// Answers every CONNECT with error 100 (internal server error).
    pub fn set_refuse_connects(&self, on: bool) {
        self.ledger().centrifugo.refuse_connects = on;
    }

    /// Expires every socket token issued so far: a CONNECT with one is answered with error
    /// 109 (token expired); `/api/v1/user/oauth` issues fresh ones.
    pub fn expire_socket_tokens(&self) {
        self.ledger().centrifugo.token_generation += 1;
    }

    /// Leaves PING commands unanswered.
    pub fn set_ignore_pings(&self, on: bool) {
        self.ledger().centrifugo.ignore_pings = on;
    }

    /// How many sockets are connected (CONNECT accepted, not closed since).
    pub fn socket_count(&self) -> usize {
        self.ledger().centrifugo.sockets.len()
    }

    /// The accounts with at least one socket subscribed to a channel, ascending.
    pub fn subscribed_users(&self) -> Vec<i64> {
        let ledger = self.ledger();
        let users: BTreeSet<i64> = ledger
            .centrifugo
            .sockets
            .values()
            .filter(|s| !s.channels.is_empty())
            .map(|s| s.da_user_id)
            .collect();
        users.into_iter().collect()
    }

    /// How many CONNECT commands arrived, accepted or not.
    pub fn connect_count(&self) -> usize {
        self.ledger().centrifugo.connects
    }
}

// ---------------------------------------------------------------------------------------
// POST /api/v1/centrifuge/subscribe

#[derive(Deserialize)]
struct SubscribeRequest {
    client: String,
    channels: Vec<String>,
}

pub(super) async fn subscribe_channels(
    State(fake): State<FakeDonationAlerts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = bearer(&headers);
    let failure = fake.admit(RequestKind::Subscribe, token).await;
    if let Some(response) = injected(failure) {
        return response;
    }
    let response = channel_tokens(&mut fake.ledger(), token, &body);
    oversized(response, failure).await
}

fn channel_tokens(ledger: &mut Ledger, token: Option<&str>, body: &[u8]) -> Response {
    let Some(da_user_id) = token.and_then(|t| ledger.live_account(t)) else {
        return unauthenticated();
    };
    let has_scope = token
        .and_then(|t| ledger.access_tokens.get(t))
        .is_some_and(|grant| grant.scopes.iter().any(|s| s == SUBSCRIBE_SCOPE));
    if !has_scope {
        return api_message(StatusCode::FORBIDDEN, "Invalid scope(s) provided.");
    }
    let request: SubscribeRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return api_message(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Expected {{client, channels}}: {e}"),
            );
        }
    };
    let own = donation_channel(da_user_id);
    if request.client.is_empty() || request.channels.iter().any(|c| *c != own) {
        return api_message(StatusCode::FORBIDDEN, "This action is unauthorized.");
    }
    let mut channels = Vec::new();
    for channel in request.channels {
        let token = format!(
            "fake-channel.{}",
            random::lowercase_alphanumeric(40).unwrap_or_default()
        );
        ledger
            .centrifugo
            .channel_tokens
            .insert(token.clone(), (request.client.clone(), channel.clone()));
        channels.push(json!({ "channel": channel, "token": token }));
    }
    Json(json!({ "channels": channels })).into_response()
}

// ---------------------------------------------------------------------------------------
// The websocket.

pub(super) async fn websocket(
    State(fake): State<FakeDonationAlerts>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade.on_upgrade(move |socket| serve_socket(fake, socket))
}

/// What a frame of commands is answered with.
enum Answer {
    /// Lines sent in one frame (nothing when empty).
    Frame(Vec<String>),
    /// Close the socket with this code and JSON reason.
    Close { code: u16, reason: String },
}

#[derive(Deserialize)]
struct Command {
    #[serde(default)]
    id: u32,
    #[serde(default)]
    method: u8,
    #[serde(default)]
    params: Value,
}

async fn serve_socket(fake: FakeDonationAlerts, mut socket: WebSocket) {
    let (outbox, mut queued) = mpsc::unbounded_channel();
    // This socket's key in the hub, once CONNECT was accepted.
    let mut key: Option<u64> = None;
    // A close taken from the queue while batching pushes, sent after them.
    let mut close_next: Option<Answer> = None;
    loop {
        let answer = if let Some(answer) = close_next.take() {
            answer
        } else {
            tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    answer_commands(&mut fake.ledger(), &mut key, &outbox, text.as_str())
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => continue,
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            Some(outgoing) = queued.recv() => match outgoing {
                Outgoing::Text { text, not_before } => {
                    tokio::time::sleep_until(not_before).await;
                    // As Centrifugo's writer does, pushes queued by now share one frame.
                    let mut lines = vec![text];
                    while let Ok(more) = queued.try_recv() {
                        match more {
                            Outgoing::Text { text, not_before } => {
                                tokio::time::sleep_until(not_before).await;
                                lines.push(text);
                            }
                            Outgoing::Close { code, reason } => {
                                close_next = Some(Answer::Close { code, reason });
                                break;
                            }
                        }
                    }
                    Answer::Frame(lines)
                }
                Outgoing::Close { code, reason } => Answer::Close { code, reason },
            },
            }
        };
        match answer {
            Answer::Frame(lines) if lines.is_empty() => {}
            Answer::Frame(lines) => {
                if socket
                    .send(Message::Text(lines.join("\n").into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Answer::Close { code, reason } => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
                break;
            }
        }
    }
    if let Some(key) = key {
        fake.ledger().centrifugo.sockets.remove(&key);
    }
}

fn close(code: u16, reason: &str, reconnect: bool) -> Answer {
    Answer::Close {
        code,
        reason: json!({ "reason": reason, "reconnect": reconnect }).to_string(),
    }
}

fn error_reply(id: u32, code: u32, message: &str) -> String {
    json!({ "id": id, "error": { "code": code, "message": message } }).to_string()
}

/// Answers a frame's commands (one per line), in order, in one frame.
fn answer_commands(
    ledger: &mut Ledger,
    key: &mut Option<u64>,
    outbox: &mpsc::UnboundedSender<Outgoing>,
    text: &str,
) -> Answer {
    let mut lines = Vec::new();
    for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
        let Ok(command) = serde_json::from_str::<Command>(line) else {
            return close(3003, "bad request", false);
        };
        let hub = &mut ledger.centrifugo;
        let Some(socket_key) = *key else {
            match connect(hub, &command, outbox) {
                Ok((reply, accepted)) => {
                    *key = accepted;
                    lines.push(reply);
                    continue;
                }
                Err(answer) => return answer,
            }
        };
        let id = command.id;
        let Some(socket) = hub.sockets.get_mut(&socket_key) else {
            // Dropped by the fake a moment ago; its close is on the way.
            return Answer::Frame(Vec::new());
        };
        match command.method {
            1 => {
                let channel = command.params["channel"].as_str().unwrap_or_default();
                let token = command.params["token"].as_str().unwrap_or_default();
                let bound = hub.channel_tokens.get(token);
                if bound != Some(&(socket.client_id.clone(), channel.to_owned())) {
                    lines.push(error_reply(id, 103, "permission denied"));
                    continue;
                }
                socket.channels.insert(channel.to_owned());
                lines.push(json!({ "id": id, "result": {} }).to_string());
                let join = json!({ "result": { "type": 1, "channel": channel, "data": {
                    "info": { "user": socket.da_user_id.to_string(), "client": socket.client_id }
                } } });
                lines.push(join.to_string());
            }
            7 if hub.ignore_pings => {}
            7 => lines.push(json!({ "id": id }).to_string()),
            0 => lines.push(error_reply(id, 105, "already connected")),
            _ => lines.push(error_reply(id, 104, "method not found")),
        }
    }
    Answer::Frame(lines)
}

/// The answer to the first command: CONNECT's reply and the socket's key when accepted, or
/// a close for anything but a CONNECT with a known token.
fn connect(
    hub: &mut Hub,
    command: &Command,
    outbox: &mpsc::UnboundedSender<Outgoing>,
) -> Result<(String, Option<u64>), Answer> {
    let token = command.params["token"].as_str();
    let (0, Some(token)) = (command.method, token) else {
        return Err(close(3003, "bad request", false));
    };
    hub.connects += 1;
    let id = command.id;
    if hub.refuse_connects {
        return Ok((error_reply(id, 100, "internal server error"), None));
    }
    let Some(&(da_user_id, generation)) = hub.socket_tokens.get(token) else {
        return Err(close(3500, "invalid token", false));
    };
    if generation < hub.token_generation {
        return Ok((error_reply(id, 109, "token expired"), None));
    }
    let client_id = [8, 4, 4, 4, 12]
        .map(|n| random::lowercase_alphanumeric(n).unwrap_or_default())
        .join("-");
    let key = hub.next_socket;
    hub.next_socket += 1;
    hub.sockets.insert(
        key,
        Socket {
            da_user_id,
            client_id: client_id.clone(),
            channels: HashSet::new(),
            outbox: outbox.clone(),
        },
    );
    let reply = json!({ "id": id, "result": { "client": client_id, "version": "2.8.6" } });
    Ok((reply.to_string(), Some(key)))
}
