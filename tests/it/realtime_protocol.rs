//! The Centrifugo client and the DonationAlerts realtime calls against the fake
//! DonationAlerts: connect with the socket token from `/user/oauth`, a channel token from
//! `/centrifuge/subscribe`, subscribe, and what `next_push` yields when the server batches,
//! duplicates, reorders, closes, expires tokens or stops answering pings. The client yields
//! what arrives; deduplication is the store's job.

use std::net::SocketAddr;
use std::time::Duration;

use avatar_tests::donate_at_fake;
use fake_providers::donationalerts::centrifugo::SHUTDOWN_CLOSE_CODE;
use fake_providers::donationalerts::{
    FakeDaUser, FakeDonationAlerts, FakeDonationAlertsConfig, NewDonation, RequestKind,
};
use futures_util::{SinkExt, StreamExt};
use shared::config::{DONATION_SUBSCRIBE_SCOPE, DonationAlertsConfig};
use shared::domain::DaUserId;
use shared::providers::centrifugo::{
    CentrifugoClient, CentrifugoError, CentrifugoSocket, Publication,
};
use shared::providers::donationalerts::{
    DonationAlertsClient, donation_channel, parse_pushed_donation,
};
use shared::providers::{ProviderError, ProviderHttp};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

/// Two accounts besides the demo one.
const ALICE: i64 = 7_200_001;
const BOB: i64 = 7_200_002;

/// How long any single step may take before the test calls it hung.
const STEP: Duration = Duration::from_secs(5);

const ALL_SCOPES: [&str; 3] = [
    "oauth-user-show",
    "oauth-donation-index",
    DONATION_SUBSCRIBE_SCOPE,
];

/// A fake DonationAlerts (with its Centrifugo) on a free port and clients pointed at it.
struct Realtime {
    fake: FakeDonationAlerts,
    addr: SocketAddr,
    da: DonationAlertsClient,
    centrifugo: CentrifugoClient,
    server: JoinHandle<()>,
}

impl Drop for Realtime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Realtime {
    async fn start() -> Self {
        let fake = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(
            "http://127.0.0.1:1/callback",
        ));
        fake.add_account(FakeDaUser::numbered(ALICE));
        fake.add_account(FakeDaUser::numbered(BOB));
        let (addr, server) = fake.spawn(0).await.expect("the fake binds a free port");
        let base = Url::parse(&FakeDonationAlerts::base_url(addr)).unwrap();
        let centrifugo_url = Url::parse(&FakeDonationAlerts::centrifugo_url(addr)).unwrap();
        let config = DonationAlertsConfig {
            client_id: Some("1000".to_owned()),
            client_secret: None,
            client_secret_given: false,
            scopes: ALL_SCOPES.map(str::to_owned).to_vec(),
            redirect_uri: base.join("/callback").unwrap(),
            base_url: base,
            centrifugo_url: centrifugo_url.clone(),
        };
        let da = DonationAlertsClient::new(&config, ProviderHttp::new(STEP)).expect("configured");
        Self {
            fake,
            addr,
            da,
            centrifugo: CentrifugoClient::new(centrifugo_url, STEP),
            server,
        }
    }

    fn access_token(&self, da_user: i64, scopes: &[&str]) -> String {
        self.fake.issue_tokens(da_user, scopes).access_token
    }

    /// A fresh socket token for the account behind `access_token`, from `/user/oauth`.
    async fn socket_token(&self, access_token: &str) -> String {
        let user = self
            .da
            .user(access_token)
            .await
            .expect("/user/oauth answers");
        user.socket_connection_token
            .expect("/user/oauth carries a socket token")
            .expose()
            .clone()
    }

    async fn connect(&self, access_token: &str) -> CentrifugoSocket {
        let token = self.socket_token(access_token).await;
        self.centrifugo.connect(&token).await.expect("connects")
    }

    /// A socket of `da_user` subscribed to its donation channel, as the bridge makes one.
    async fn subscribed(&self, da_user: i64) -> CentrifugoSocket {
        self.subscribed_with(&self.centrifugo, da_user).await
    }

    async fn subscribed_with(&self, client: &CentrifugoClient, da_user: i64) -> CentrifugoSocket {
        let access = self.access_token(da_user, &ALL_SCOPES);
        let token = self.socket_token(&access).await;
        let mut socket = client.connect(&token).await.expect("connects");
        let channel = donation_channel(DaUserId(da_user));
        let channel_token = self
            .da
            .subscribe_channel(&access, socket.client_id(), &channel)
            .await
            .expect("a channel token");
        socket
            .subscribe(&channel, channel_token.expose())
            .await
            .expect("subscribes");
        socket
    }

    fn donate(&self, da_user: i64, message: &str) -> i64 {
        self.fake
            .donate(NewDonation {
                da_user_id: Some(da_user),
                username: Some("viewer".to_owned()),
                message: message.to_owned(),
                amount: serde_json::Number::from(100),
                currency: "RUB".to_owned(),
                created_at: None,
            })
            .id
    }
}

async fn next(socket: &mut CentrifugoSocket) -> Publication {
    tokio::time::timeout(STEP, socket.next_push())
        .await
        .expect("a push within the step")
        .expect("a publication")
}

async fn next_error(socket: &mut CentrifugoSocket) -> CentrifugoError {
    tokio::time::timeout(STEP, socket.next_push())
        .await
        .expect("next_push ended within the step")
        .expect_err("the socket ended")
}

fn donation_id(publication: &Publication) -> i64 {
    parse_pushed_donation(&publication.data)
        .expect("a donation")
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_donation_is_pushed_with_the_id_it_is_listed_under_and_the_join_push_is_skipped() {
    // Arrange
    let realtime = Realtime::start().await;
    let mut socket = realtime.subscribed(ALICE).await;

    // Act: one donation through the Rust API, one through the control endpoint
    let first = realtime.donate(ALICE, "first");
    let status = donate_at_fake(
        realtime.addr.port(),
        serde_json::json!({"da_user_id": ALICE, "username": null, "message": "second",
                           "amount": 5.5, "currency": "usd"}),
    )
    .await;
    let pushed = [next(&mut socket).await, next(&mut socket).await];

    // Assert: the join push that followed the subscribe reply never came out
    assert_eq!(status, 201);
    let channel = donation_channel(DaUserId(ALICE));
    assert!(pushed.iter().all(|p| p.channel == channel), "{pushed:?}");
    assert_eq!(pushed.each_ref().map(|p| p.seq), [Some(1), Some(2)]);
    let access = realtime.access_token(ALICE, &ALL_SCOPES);
    let listed = realtime.da.donations(&access).await.unwrap().data;
    let second = parse_pushed_donation(&pushed[1].data).unwrap();
    assert_eq!(donation_id(&pushed[0]), first);
    assert_eq!(
        [second.id, first],
        [listed[0].id, listed[1].id],
        "pushed under the ids the list shows"
    );
    assert_eq!(second, listed[0], "the same donation, field for field");
    assert_eq!(realtime.fake.subscribed_users(), vec![ALICE]);
    assert_eq!(realtime.fake.request_count(RequestKind::Subscribe), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_sends_the_subscribe_reply_and_its_join_push_in_one_frame() {
    // Arrange: a raw websocket, to see the frames themselves
    let realtime = Realtime::start().await;
    let access = realtime.access_token(BOB, &ALL_SCOPES);
    let socket_token = realtime.socket_token(&access).await;
    let url = FakeDonationAlerts::centrifugo_url(realtime.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let connect = serde_json::json!({"id": 1, "params": {"token": socket_token}});
    ws.send(Message::text(connect.to_string())).await.unwrap();
    let reply = read_text(&mut ws).await;
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let client = reply["result"]["client"].as_str().unwrap().to_owned();
    let channel = donation_channel(DaUserId(BOB));
    let token = realtime
        .da
        .subscribe_channel(&access, &client, &channel)
        .await
        .unwrap();

    // Act: the subscribe command and a ping in one frame, as the old protocol allows
    let commands = [
        serde_json::json!({"id": 2, "method": 1,
                           "params": {"channel": channel, "token": token.expose()}}),
        serde_json::json!({"id": 3, "method": 7}),
    ]
    .map(|c| c.to_string())
    .join("\n");
    ws.send(Message::text(commands)).await.unwrap();
    let answer = read_text(&mut ws).await;

    // Assert
    let lines: Vec<serde_json::Value> = answer
        .split('\n')
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{answer}");
    assert_eq!(lines[0], serde_json::json!({"id": 2, "result": {}}));
    assert_eq!(lines[1]["result"]["type"], 1, "a join push: {answer}");
    assert_eq!(lines[1]["result"]["channel"], channel.as_str());
    assert_eq!(lines[2], serde_json::json!({"id": 3}));
}

async fn read_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(_)) => {}
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_push_comes_out_twice_with_the_same_id_and_seq() {
    // Arrange
    let realtime = Realtime::start().await;
    let mut socket = realtime.subscribed(ALICE).await;
    realtime.fake.set_push_duplicates(true);

    // Act
    let id = realtime.donate(ALICE, "twice");
    let pushed = [next(&mut socket).await, next(&mut socket).await];

    // Assert
    assert_eq!(pushed.each_ref().map(donation_id), [id, id]);
    assert_eq!(pushed.map(|p| p.seq), [Some(1), Some(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_push_comes_out_after_the_one_that_overtook_it() {
    // Arrange
    let realtime = Realtime::start().await;
    let mut socket = realtime.subscribed(ALICE).await;
    realtime.fake.set_push_out_of_order(true);

    // Act
    let older = realtime.donate(ALICE, "older");
    let newer = realtime.donate(ALICE, "newer");
    let pushed = [next(&mut socket).await, next(&mut socket).await];

    // Assert
    assert_eq!(pushed.each_ref().map(donation_id), [newer, older]);
    assert_eq!(pushed.map(|p| p.seq), [Some(2), Some(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_push_still_arrives() {
    // Arrange
    let realtime = Realtime::start().await;
    let mut socket = realtime.subscribed(ALICE).await;
    realtime.fake.set_push_delay(Duration::from_millis(300));

    // Act
    let started = tokio::time::Instant::now();
    let id = realtime.donate(ALICE, "late");
    let pushed = next(&mut socket).await;

    // Assert
    assert_eq!(donation_id(&pushed), id);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_close_ends_the_socket_with_its_code_and_json_reason_and_spares_the_others() {
    // Arrange
    let realtime = Realtime::start().await;
    let mut alice = realtime.subscribed(ALICE).await;
    let mut bob = realtime.subscribed(BOB).await;
    assert_eq!(realtime.fake.socket_count(), 2);

    // Act
    realtime.fake.drop_sockets(Some(ALICE));
    let error = next_error(&mut alice).await;

    // Assert
    let CentrifugoError::Closed {
        code,
        reason,
        reconnect,
    } = error
    else {
        panic!("a close: {error:?}");
    };
    assert_eq!(code, Some(SHUTDOWN_CLOSE_CODE));
    assert_eq!(reason.as_deref(), Some("shutdown"));
    assert!(reconnect);
    assert_eq!(realtime.fake.subscribed_users(), vec![BOB]);
    let id = realtime.donate(BOB, "still here");
    assert_eq!(donation_id(&next(&mut bob).await), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_socket_token_is_error_109_and_a_fresh_one_from_user_oauth_connects() {
    // Arrange
    let realtime = Realtime::start().await;
    let access = realtime.access_token(ALICE, &ALL_SCOPES);
    let stale = realtime.socket_token(&access).await;
    realtime.fake.expire_socket_tokens();

    // Act
    let refused = realtime.centrifugo.connect(&stale).await;
    let fresh = realtime.socket_token(&access).await;
    let connected = realtime.centrifugo.connect(&fresh).await;

    // Assert
    assert!(
        matches!(refused, Err(CentrifugoError::TokenExpired)),
        "{refused:?}"
    );
    assert_ne!(fresh, stale);
    let socket = connected.expect("the fresh token connects");
    assert!(!socket.client_id().is_empty());
    assert_eq!(realtime.fake.connect_count(), 2);
    assert_eq!(realtime.fake.socket_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_socket_token_is_closed_without_reconnect_and_refused_connects_are_error_replies()
 {
    // Arrange
    let realtime = Realtime::start().await;
    let access = realtime.access_token(ALICE, &ALL_SCOPES);
    let token = realtime.socket_token(&access).await;

    // Act
    let unknown = realtime.centrifugo.connect("not-a-socket-token").await;
    realtime.fake.set_refuse_connects(true);
    let refused = realtime.centrifugo.connect(&token).await;

    // Assert
    assert!(
        matches!(
            unknown,
            Err(CentrifugoError::Closed {
                code: Some(3500),
                reconnect: false,
                ..
            })
        ),
        "{unknown:?}"
    );
    assert!(
        matches!(refused, Err(CentrifugoError::Refused { code: 100, .. })),
        "{refused:?}"
    );
    assert_eq!(realtime.fake.socket_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_pings_keep_the_socket_and_an_unanswered_one_is_a_ping_timeout() {
    // Arrange: pings every 50 ms, 500 ms to answer
    let realtime = Realtime::start().await;
    let pinging = CentrifugoClient::new(
        Url::parse(&FakeDonationAlerts::centrifugo_url(realtime.addr)).unwrap(),
        STEP,
    )
    .with_ping(Duration::from_millis(50), Duration::from_millis(500));
    let mut socket = realtime.subscribed_with(&pinging, ALICE).await;

    // Act: a quiet second of answered pings, then pings ignored
    let quiet = tokio::time::timeout(Duration::from_secs(1), socket.next_push()).await;
    realtime.fake.set_ignore_pings(true);
    let started = tokio::time::Instant::now();
    let error = next_error(&mut socket).await;

    // Assert
    assert!(
        quiet.is_err(),
        "no push and no error while pings are answered: {quiet:?}"
    );
    assert!(matches!(error, CentrifugoError::PingTimeout), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within a ping interval and timeout, not {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_with_a_token_for_another_client_or_channel_is_refused() {
    // Arrange: two sockets of Alice; a channel token for the first
    let realtime = Realtime::start().await;
    let access = realtime.access_token(ALICE, &ALL_SCOPES);
    let mut first = realtime.connect(&access).await;
    let mut second = realtime.connect(&access).await;
    let channel = donation_channel(DaUserId(ALICE));
    let token = realtime
        .da
        .subscribe_channel(&access, first.client_id(), &channel)
        .await
        .unwrap();

    // Act
    let other_client = second.subscribe(&channel, token.expose()).await;
    let other_channel = first
        .subscribe(&donation_channel(DaUserId(BOB)), token.expose())
        .await;
    let own = first.subscribe(&channel, token.expose()).await;

    // Assert
    for refused in [&other_client, &other_channel] {
        assert!(
            matches!(refused, Err(CentrifugoError::Refused { code: 103, .. })),
            "{refused:?}"
        );
    }
    own.expect("the token's own client and channel subscribe");
    assert_eq!(realtime.fake.subscribed_users(), vec![ALICE]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_token_is_refused_for_another_users_channel_or_without_the_scope() {
    // Arrange
    let realtime = Realtime::start().await;
    let access = realtime.access_token(ALICE, &ALL_SCOPES);
    let without_scope = realtime.access_token(ALICE, &ALL_SCOPES[..2]);
    let socket = realtime.connect(&access).await;
    let client = socket.client_id();

    // Act
    let bobs = realtime
        .da
        .subscribe_channel(&access, client, &donation_channel(DaUserId(BOB)))
        .await;
    let unscoped = realtime
        .da
        .subscribe_channel(&without_scope, client, &donation_channel(DaUserId(ALICE)))
        .await;
    let unknown = realtime
        .da
        .subscribe_channel("not-a-token", client, &donation_channel(DaUserId(ALICE)))
        .await;

    // Assert
    for (refused, status) in [(&bobs, 403), (&unscoped, 403), (&unknown, 401)] {
        assert!(
            matches!(refused, Err(ProviderError::Rejected { status: s, .. }) if *s == status),
            "{refused:?}"
        );
    }
    assert_eq!(realtime.fake.request_count(RequestKind::Subscribe), 3);
}
