//! A Centrifugo v2 client speaking the old JSON protocol, which DonationAlerts' server
//! requires (research/providers.md §11): commands `{"id":n,"method":m,"params":{…}}` (CONNECT
//! has no method), replies and pushes carrying `result`, several replies in one websocket
//! frame separated by newlines. One socket per streamer: connect with the streamer's socket
//! token, subscribe to channels with channel tokens, read publications, ping on schedule.
//!
//! Tokens are sent, never logged.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use super::{MAX_PROVIDER_BODY_BYTES, bounded_message};

/// The error code Centrifugo answers a connect (or subscribe) with when the token expired.
pub const TOKEN_EXPIRED_CODE: u32 = 109;

/// Each socket's read buffer: one process holds thousands of mostly idle sockets, and
/// tungstenite's default (128 KiB) would cost about 625 MiB for 5,000 of them.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The grain of ping times: a socket's ping (and the check for its answer) happens on the
/// next tick of this grain, shared by every socket of the process, so that thousands of
/// sockets' pings wake the process a few times a second rather than at every millisecond
/// one falls due (with 5,000 sockets, the wake-ups cost more CPU than the pings).
const PING_TICK: Duration = Duration::from_millis(250);

/// `at`, rounded up to the next [`PING_TICK`] since the process's first call.
fn on_ping_tick(at: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = at.saturating_duration_since(epoch).as_nanos();
    let tick = PING_TICK.as_nanos();
    let ticks = since.div_ceil(tick);
    epoch + Duration::from_nanos(u64::try_from(ticks * tick).unwrap_or(u64::MAX))
}

/// How often a client pings, and how long it waits for the answer (centrifuge-js' values).
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);
const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest client id accepted (Centrifugo's are 36-character UUIDs).
const MAX_CLIENT_ID_BYTES: usize = 256;

/// The old protocol's method numbers.
const METHOD_SUBSCRIBE: u8 = 1;
const METHOD_PING: u8 = 7;

/// The id of the CONNECT command, the first one on every socket.
const CONNECT_ID: u32 = 1;

/// Everything a Centrifugo socket can end in other than success.
#[derive(Debug, thiserror::Error)]
pub enum CentrifugoError {
    /// The websocket failed (refused, reset, TLS, a bad handshake).
    #[error("the Centrifugo websocket failed")]
    Transport(#[source] Box<tungstenite::Error>),
    /// No answer to the handshake, connect or subscribe within the client's timeout.
    #[error("Centrifugo did not answer in time")]
    Timeout,
    /// Centrifugo sent something this client does not understand.
    #[error("Centrifugo sent something unexpected: {0}")]
    Protocol(String),
    /// An error reply to connect or subscribe (e.g. 103 permission denied).
    #[error("Centrifugo refused the command ({code}): {message}")]
    Refused { code: u32, message: String },
    /// Error 109: the socket token (or the channel token) expired; fetch a new one.
    #[error("Centrifugo says the token expired")]
    TokenExpired,
    /// The server closed the socket; `reason` and `reconnect` come from its JSON reason
    /// (`{"reason":…,"reconnect":…}`) when it sent one.
    #[error("Centrifugo closed the socket (code {code:?}, reason {reason:?})")]
    Closed {
        code: Option<u16>,
        reason: Option<String>,
        reconnect: bool,
    },
    /// A ping got no answer within the ping timeout.
    #[error("Centrifugo did not answer a ping in time")]
    PingTimeout,
}

impl From<tungstenite::Error> for CentrifugoError {
    fn from(error: tungstenite::Error) -> Self {
        Self::Transport(Box::new(error))
    }
}

/// A publication (push type 0) on a channel.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: String,
    /// The publication's `seq` when its data carries one (`{"seq":15,"data":{…}}`).
    pub seq: Option<u64>,
    /// The push's `data`, as sent.
    pub data: Box<RawValue>,
}

/// Where and how to reach a Centrifugo server.
#[derive(Debug, Clone)]
pub struct CentrifugoClient {
    url: Url,
    connect_timeout: Duration,
    ping_interval: Duration,
    ping_timeout: Duration,
}

impl CentrifugoClient {
    /// A client of the server at `url` (`ws://` or `wss://`); `timeout` bounds the handshake
    /// and each command's reply. It pings every 25 s and waits 5 s for the answer.
    pub fn new(url: Url, timeout: Duration) -> Self {
        Self {
            url,
            connect_timeout: timeout,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
        }
    }

    /// The same client pinging every `interval` and waiting `timeout` for the answer.
    pub fn with_ping(self, interval: Duration, timeout: Duration) -> Self {
        Self {
            ping_interval: interval,
            ping_timeout: timeout,
            ..self
        }
    }

    /// Opens the socket, sends CONNECT `{"id":1,"params":{"token":…}}` and waits for the
    /// reply, which names the client id.
    pub async fn connect(&self, socket_token: &str) -> Result<CentrifugoSocket, CentrifugoError> {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(MAX_PROVIDER_BODY_BYTES))
            .max_frame_size(Some(MAX_PROVIDER_BODY_BYTES));
        let handshake =
            tokio_tungstenite::connect_async_with_config(self.url.as_str(), Some(config), true);
        let (ws, _) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| CentrifugoError::Timeout)??;
        let now = Instant::now();
        let mut socket = CentrifugoSocket {
            ws,
            client_id: String::new(),
            next_id: CONNECT_ID + 1,
            pending: VecDeque::new(),
            reply_timeout: self.connect_timeout,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            next_ping_at: now + self.ping_interval,
            ping_awaited: None,
        };
        let command = serde_json::json!({ "id": CONNECT_ID, "params": { "token": socket_token } });
        socket.send(command).await?;
        let result = socket.await_reply(CONNECT_ID).await?;
        let connected: ConnectResult = result
            .as_deref()
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()
            .map_err(|e| CentrifugoError::Protocol(format!("connect reply: {e}")))?
            .ok_or_else(|| CentrifugoError::Protocol("connect reply without result".into()))?;
        if connected.client.is_empty() || connected.client.len() > MAX_CLIENT_ID_BYTES {
            return Err(CentrifugoError::Protocol(
                "connect reply with an empty or overlong client id".into(),
            ));
        }
        socket.client_id = connected.client;
        Ok(socket)
    }
}

#[derive(Deserialize)]
struct ConnectResult {
    client: String,
}

/// A connected Centrifugo socket.
pub struct CentrifugoSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    client_id: String,
    /// The id of the next command.
    next_id: u32,
    /// Publications read while waiting for something else, oldest first.
    pending: VecDeque<Publication>,
    reply_timeout: Duration,
    ping_interval: Duration,
    ping_timeout: Duration,
    next_ping_at: Instant,
    /// The id of the ping sent and not answered yet, and when its answer is due.
    ping_awaited: Option<(u32, Instant)>,
}

impl std::fmt::Debug for CentrifugoSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CentrifugoSocket")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl CentrifugoSocket {
    /// The client id the server gave this connection (new on every connect).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// SUBSCRIBE `{"id":n,"method":1,"params":{"channel":…,"token":…}}` and wait for the
    /// reply; publications that arrive before it are kept for [`Self::next_push`].
    pub async fn subscribe(
        &mut self,
        channel: &str,
        channel_token: &str,
    ) -> Result<(), CentrifugoError> {
        let id = self.take_id();
        let command = serde_json::json!({
            "id": id,
            "method": METHOD_SUBSCRIBE,
            "params": { "channel": channel, "token": channel_token },
        });
        self.send(command).await?;
        self.await_reply(id).await.map(drop)
    }

    /// The next publication (push type 0) on any channel; join, leave and unsubscribe pushes
    /// are skipped. Pings are sent on schedule while waiting, and a ping not answered within
    /// the ping timeout ends the wait with [`CentrifugoError::PingTimeout`]. Cancelling the
    /// call between frames loses no publication.
    pub async fn next_push(&mut self) -> Result<Publication, CentrifugoError> {
        loop {
            if let Some(publication) = self.pending.pop_front() {
                return Ok(publication);
            }
            let wake = on_ping_tick(match self.ping_awaited {
                Some((_, due)) => due.min(self.next_ping_at),
                None => self.next_ping_at,
            });
            tokio::select! {
                biased;
                message = self.ws.next() => {
                    for reply in self.replies_of(message)? {
                        self.absorb(reply);
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if self.ping_awaited.is_some_and(|(_, due)| due <= now) {
                        return Err(CentrifugoError::PingTimeout);
                    }
                    if self.next_ping_at <= now {
                        self.ping(now).await?;
                    }
                }
            }
        }
    }

    /// Sends a close frame and waits briefly for the server's.
    pub async fn close(mut self) {
        if self.ws.close(None).await.is_err() {
            return;
        }
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(self.reply_timeout, drain).await;
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(CONNECT_ID + 1);
        id
    }

    async fn send(&mut self, command: serde_json::Value) -> Result<(), CentrifugoError> {
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .map_err(CentrifugoError::from)
    }

    async fn ping(&mut self, now: Instant) -> Result<(), CentrifugoError> {
        let id = self.take_id();
        self.send(serde_json::json!({ "id": id, "method": METHOD_PING }))
            .await?;
        if self.ping_awaited.is_none() {
            self.ping_awaited = Some((id, now + self.ping_timeout));
        }
        self.next_ping_at = now + self.ping_interval;
        Ok(())
    }

    /// Reads frames until the reply to command `id`, within the reply timeout; keeps the
    /// publications read meanwhile. An error reply becomes [`CentrifugoError::Refused`] or
    /// [`CentrifugoError::TokenExpired`].
    async fn await_reply(&mut self, id: u32) -> Result<Option<Box<RawValue>>, CentrifugoError> {
        let deadline = Instant::now() + self.reply_timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| CentrifugoError::Timeout)?;
            let mut answer = None;
            for reply in self.replies_of(message)? {
                match reply {
                    Incoming::Reply {
                        id: reply_id,
                        outcome,
                    } if reply_id == id && answer.is_none() => answer = Some(outcome),
                    other => self.absorb(other),
                }
            }
            if let Some(outcome) = answer {
                return outcome.map_err(|error| match error.code {
                    TOKEN_EXPIRED_CODE => CentrifugoError::TokenExpired,
                    code => CentrifugoError::Refused {
                        code,
                        message: bounded_message(&error.message),
                    },
                });
            }
        }
    }

    /// The replies of one websocket message, or the error that ends the socket.
    fn replies_of(
        &mut self,
        message: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<Vec<Incoming>, CentrifugoError> {
        match message {
            None => Err(CentrifugoError::Closed {
                code: None,
                reason: None,
                reconnect: true,
            }),
            Some(Err(error)) => Err(error.into()),
            Some(Ok(Message::Text(text))) => parse_frame(text.as_str()),
            Some(Ok(Message::Binary(bytes))) => std::str::from_utf8(&bytes)
                .map_err(|_| CentrifugoError::Protocol("a binary frame that is not UTF-8".into()))
                .and_then(parse_frame),
            Some(Ok(Message::Close(frame))) => Err(closed(frame.as_ref())),
            // Websocket pings are answered by tungstenite itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(Vec::new()),
        }
    }

    /// Keeps a publication, notes a ping's answer, and drops the rest (other pushes, late
    /// replies).
    fn absorb(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Publication(publication) => self.pending.push_back(publication),
            Incoming::Reply { id, .. } => {
                if self.ping_awaited.is_some_and(|(ping, _)| ping == id) {
                    self.ping_awaited = None;
                }
            }
            Incoming::OtherPush { kind } => {
                tracing::trace!(kind, "a Centrifugo push other than a publication, skipped");
            }
        }
    }
}

/// One reply or push of a frame.
#[derive(Debug)]
enum Incoming {
    /// The reply to command `id`: its result (`None` when it has none, as a ping's) or error.
    Reply {
        id: u32,
        outcome: Result<Option<Box<RawValue>>, ReplyError>,
    },
    /// A push of type 0.
    Publication(Publication),
    /// A push of another type (1 join, 2 leave, 3 unsubscribe, …).
    OtherPush { kind: u8 },
}

#[derive(Debug, Deserialize)]
struct ReplyError {
    code: u32,
    #[serde(default)]
    message: String,
}

/// A reply (`id` > 0) or a push (no `id`) as the old protocol sends it.
#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    id: u32,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<ReplyError>,
}

#[derive(Deserialize)]
struct WirePush {
    /// Absent for a publication.
    #[serde(default, rename = "type")]
    kind: u8,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct WireSeq {
    #[serde(default)]
    seq: Option<u64>,
}

/// The replies and pushes of one frame: JSON objects separated by newlines.
fn parse_frame(text: &str) -> Result<Vec<Incoming>, CentrifugoError> {
    let malformed = |e: serde_json::Error| CentrifugoError::Protocol(format!("a reply: {e}"));
    let mut replies = Vec::new();
    for line in text.split('\n').filter(|line| !line.trim().is_empty()) {
        let wire: WireReply = serde_json::from_str(line).map_err(malformed)?;
        if wire.id != 0 {
            let outcome = match wire.error {
                Some(error) => Err(error),
                None => Ok(wire.result),
            };
            replies.push(Incoming::Reply {
                id: wire.id,
                outcome,
            });
            continue;
        }
        let Some(result) = wire.result else {
            return Err(CentrifugoError::Protocol(
                "a push without a result".to_owned(),
            ));
        };
        let push: WirePush = serde_json::from_str(result.get()).map_err(malformed)?;
        if push.kind != 0 {
            replies.push(Incoming::OtherPush { kind: push.kind });
            continue;
        }
        let Some(data) = push.data else {
            return Err(CentrifugoError::Protocol(
                "a publication without data".to_owned(),
            ));
        };
        let seq = serde_json::from_str::<WireSeq>(data.get())
            .ok()
            .and_then(|wire| wire.seq);
        replies.push(Incoming::Publication(Publication {
            channel: push.channel,
            seq,
            data,
        }));
    }
    Ok(replies)
}

/// The error for a close frame: its code, and its reason read as Centrifugo's JSON
/// `{"reason":…,"reconnect":…}` (plain text is kept as the reason; reconnecting is allowed
/// unless the server says otherwise).
fn closed(frame: Option<&CloseFrame>) -> CentrifugoError {
    #[derive(Deserialize)]
    struct Advice {
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        reconnect: Option<bool>,
    }
    let Some(frame) = frame else {
        return CentrifugoError::Closed {
            code: None,
            reason: None,
            reconnect: true,
        };
    };
    let text = frame.reason.as_str();
    let (reason, reconnect) = match serde_json::from_str::<Advice>(text) {
        Ok(advice) => (advice.reason, advice.reconnect.unwrap_or(true)),
        Err(_) => ((!text.is_empty()).then(|| text.to_owned()), true),
    };
    CentrifugoError::Closed {
        code: Some(frame.code.into()),
        reason: reason.map(|r| bounded_message(&r)),
        reconnect,
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    use super::*;

    #[test]
    fn ping_times_fall_on_shared_ticks_never_early_and_at_most_one_tick_late() {
        let start = Instant::now();
        for ms in [0u64, 1, 100, 249, 250, 251, 10_001] {
            let at = start + Duration::from_millis(ms);
            let tick = on_ping_tick(at);
            assert!(tick >= at && tick < at + PING_TICK, "{ms} ms");
        }
        let a = on_ping_tick(start + Duration::from_millis(1_000) + Duration::from_micros(10));
        let b = on_ping_tick(start + Duration::from_millis(1_000) + Duration::from_micros(200));
        let c = on_ping_tick(start + Duration::from_millis(1_000) + Duration::from_micros(900));
        assert!(
            a == b || b == c,
            "sockets due within one tick mostly wake together"
        );
    }

    #[test]
    fn several_replies_in_one_frame_are_each_read_in_order() {
        let frame = concat!(
            r#"{"id":2,"result":{}}"#,
            "\n",
            r#"{"result":{"type":1,"channel":"$alerts:donation_7","data":{"info":{}}}}"#,
            "\n",
            r#"{"result":{"channel":"$alerts:donation_7","data":{"seq":3,"data":{"id":5}}}}"#,
            "\n",
        );

        let replies = parse_frame(frame).unwrap();

        assert_eq!(replies.len(), 3, "{replies:?}");
        assert!(matches!(
            replies[0],
            Incoming::Reply {
                id: 2,
                outcome: Ok(Some(_))
            }
        ));
        assert!(matches!(replies[1], Incoming::OtherPush { kind: 1 }));
        let Incoming::Publication(publication) = &replies[2] else {
            panic!("{replies:?}");
        };
        assert_eq!(publication.channel, "$alerts:donation_7");
        assert_eq!(publication.seq, Some(3));
        assert_eq!(publication.data.get(), r#"{"seq":3,"data":{"id":5}}"#);
    }

    #[test]
    fn a_push_of_type_0_is_a_publication_and_types_1_to_3_are_not() {
        for (kind, publication) in [("0", true), ("1", false), ("2", false), ("3", false)] {
            let frame = format!(
                r#"{{"result":{{"type":{kind},"channel":"c","data":{{"seq":1,"data":{{}}}}}}}}"#
            );
            let replies = parse_frame(&frame).unwrap();
            assert_eq!(replies.len(), 1);
            assert_eq!(
                matches!(replies[0], Incoming::Publication(_)),
                publication,
                "type {kind}: {replies:?}"
            );
        }
    }

    #[test]
    fn a_publication_without_seq_has_none() {
        let replies = parse_frame(r#"{"result":{"channel":"c","data":{"id":5}}}"#).unwrap();
        let Incoming::Publication(publication) = &replies[0] else {
            panic!("{replies:?}");
        };
        assert_eq!(publication.seq, None);
    }

    #[test]
    fn an_error_reply_keeps_its_code_and_message_and_a_reply_may_have_no_result() {
        let frame = "{\"id\":1,\"error\":{\"code\":109,\"message\":\"token expired\"}}\n{\"id\":4}";

        let replies = parse_frame(frame).unwrap();

        let Incoming::Reply {
            id: 1,
            outcome: Err(error),
        } = &replies[0]
        else {
            panic!("{replies:?}");
        };
        assert_eq!(error.code, 109);
        assert_eq!(error.message, "token expired");
        assert!(matches!(
            replies[1],
            Incoming::Reply {
                id: 4,
                outcome: Ok(None)
            }
        ));
    }

    #[test]
    fn a_line_that_is_not_a_reply_is_a_protocol_error() {
        for frame in ["not json", r#"{"result":{"type":0,"channel":"c"}}"#, "{}"] {
            assert!(
                matches!(parse_frame(frame), Err(CentrifugoError::Protocol(_))),
                "{frame}"
            );
        }
    }

    #[test]
    fn a_close_reason_in_json_is_read_and_plain_text_kept() {
        let frame = |reason: &str| CloseFrame {
            code: CloseCode::Library(3001),
            reason: reason.into(),
        };

        let advised = closed(Some(&frame(r#"{"reason":"shutdown","reconnect":false}"#)));
        let plain = closed(Some(&frame("bad request")));

        assert!(matches!(
            advised,
            CentrifugoError::Closed { code: Some(3001), reason: Some(ref r), reconnect: false }
                if r == "shutdown"
        ));
        assert!(matches!(
            plain,
            CentrifugoError::Closed { code: Some(3001), reason: Some(ref r), reconnect: true }
                if r == "bad request"
        ));
    }
}
