//! The local server's edge over real sockets: slow and idle clients are closed on the
//! configured deadlines while everyone else is served, the connection cap and the cap per
//! client address hold, and every response carries the security headers.

use std::time::Duration;

use avatar_tests::TestApp;
use shared::bundle::Function;
use shared::web::routes::function_router;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tower::ServiceExt as _;

/// Generous: the configured timeouts below are about a second.
const DEADLINE: Duration = Duration::from_secs(10);

/// Lets this test process hold a few thousand sockets (client and server ends).
fn allow_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= wanted,
        "the hard limit on open files ({}) is below {wanted}",
        limit.rlim_max
    );
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// A keep-alive GET over `stream`: (status, head, body).
async fn get_on(stream: &mut TcpStream, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    tokio::time::timeout(DEADLINE, read_response(stream))
        .await
        .expect("an answer in time")
}

/// Reads one response with a Content-Length body.
async fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before a whole response head: {bytes:?}");
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .map(|v| v.parse().expect("a length"))
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before the whole body");
        bytes.extend_from_slice(&chunk[..n]);
    }
    let status = head[9..12].parse().expect("a status code");
    let body = String::from_utf8_lossy(&bytes[head_end..head_end + length]).into_owned();
    (status, head, body)
}

/// Waits until the server closes `stream`; returns what it sent before closing.
async fn closed_by_server(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server did not close the connection within {DEADLINE:?}"
    );
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_half_open_requests_neither_block_others_nor_outlive_the_header_timeout() {
    // Arrange: 1,000 connections that send a request line and then nothing (the timeout
    // leaves time to open them all before the first is closed).
    allow_open_files(4096);
    let app = TestApp::spawn(&[
        ("HTTP_HEADER_TIMEOUT_MS", "2000"),
        // They all come from 127.0.0.1, standing for a thousand clients.
        ("HTTP_MAX_CONNECTIONS_PER_IP", "4096"),
    ])
    .await;
    let mut half_open = Vec::new();
    for _ in 0..1000 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\n")
            .await
            .expect("write");
        half_open.push(stream);
    }

    // Act: an ordinary request while they are held.
    let (status, _) = app.health().await;

    // Assert: it was answered, and every half-open connection gets closed, unanswered.
    assert_eq!(status, 200);
    let closings = half_open.iter_mut().map(closed_by_server);
    let sent = futures_util::future::join_all(closings).await;
    assert!(sent.iter().all(String::is_empty), "{:?}", sent.first());
    assert_eq!(app.health().await.0, 200);
}

#[tokio::test]
async fn a_client_dribbling_its_headers_is_cut_off() {
    // Arrange
    let app = TestApp::spawn(&[("HTTP_HEADER_TIMEOUT_MS", "1000")]).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .expect("write");
    let (mut reader, mut writer) = stream.split();

    // Act: one more header byte every 50 ms, for as long as the server listens.
    let dribble = async {
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticks.tick().await;
            if writer.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    let closed = async {
        let mut chunk = [0u8; 1024];
        let mut received = Vec::new();
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let outcome = tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            received = closed => received,
            () = dribble => Vec::new(),
        }
    })
    .await;

    // Assert: closed without an answer, while the server still serves others.
    let received = outcome.expect("the dribbling client was cut off within the deadline");
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(app.health().await.0, 200);
}

#[tokio::test]
async fn a_request_body_that_never_arrives_gets_a_408_and_a_close() {
    let app = TestApp::spawn(&[("HTTP_BODY_TIMEOUT_MS", "1000")]).await;
    for declared in ["100", "10000000000"] {
        // Arrange: a POST that declares a body and sends 3 bytes of it.
        let mut stream = connect(&app).await;
        let request = format!(
            "POST /auth/logout HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {declared}\r\n\r\nabc"
        );
        stream.write_all(request.as_bytes()).await.expect("write");

        // Act
        let received = closed_by_server(&mut stream).await;

        // Assert
        assert!(
            received.starts_with("HTTP/1.1 408"),
            "Content-Length {declared}: {received}"
        );
        assert!(
            received.to_ascii_lowercase().contains("connection: close"),
            "{received}"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    // Arrange: idle connections may wait longer than headers may take.
    let app = TestApp::spawn(&[
        ("HTTP_HEADER_TIMEOUT_MS", "300"),
        ("HTTP_IDLE_TIMEOUT_MS", "3000"),
    ])
    .await;
    let mut keep_alive = connect(&app).await;
    assert_eq!(get_on(&mut keep_alive, "/health").await.0, 200);

    // Act: a half-open request opened after it is cut off by the header timeout...
    let mut half_open = connect(&app).await;
    half_open
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .expect("write");
    assert_eq!(closed_by_server(&mut half_open).await, "");

    // Assert: ...while the idle connection, idle for longer, still serves a request, and is
    // closed once idle for the idle timeout.
    assert_eq!(get_on(&mut keep_alive, "/health").await.0, 200);
    assert_eq!(closed_by_server(&mut keep_alive).await, "");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot_while_the_others_are_served() {
    // Arrange: three slots, each held by a keep-alive connection that has been served.
    let app = TestApp::spawn(&[
        ("HTTP_MAX_CONNECTIONS", "3"),
        ("HTTP_HEADER_TIMEOUT_MS", "30000"),
        ("HTTP_IDLE_TIMEOUT_MS", "30000"),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        assert_eq!(get_on(&mut stream, "/health").await.0, 200);
        held.push(stream);
    }

    // Act: a fourth client sends a whole request.
    let mut waiting = connect(&app).await;
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");

    // Assert: it is not served while the slots are held, the holders are...
    let early = tokio::time::timeout(Duration::from_millis(500), read_response(&mut waiting)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    assert_eq!(get_on(&mut held[0], "/auth/status").await.0, 200);
    // ...and it is served as soon as one of them leaves.
    drop(held.pop());
    let (status, _, _) = tokio::time::timeout(DEADLINE, read_response(&mut waiting))
        .await
        .expect("served once a slot freed");
    assert_eq!(status, 200);
}

/// A connection to `app` from `local`, one of this machine's loopback addresses (Linux routes
/// the whole of 127.0.0.0/8 to loopback), so the server sees another client address.
async fn connect_from(app: &TestApp, local: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::Ipv4Addr::from(local), 0).into())
        .expect("bind a loopback address");
    let server = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("a socket address");
    socket.connect(server).await.expect("connect")
}

#[tokio::test]
async fn one_address_holding_silent_sockets_gets_its_share_of_slots_and_others_are_still_served() {
    // Arrange: room for ten connections, three per client address; headers may take long.
    let app = TestApp::spawn(&[
        ("HTTP_MAX_CONNECTIONS", "10"),
        ("HTTP_MAX_CONNECTIONS_PER_IP", "3"),
        ("HTTP_HEADER_TIMEOUT_MS", "60000"),
        ("HTTP_IDLE_TIMEOUT_MS", "60000"),
    ])
    .await;

    // Act: 127.0.0.1 opens twenty connections and sends nothing on them.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(connect_from(&app, [127, 0, 0, 1]).await);
    }

    // Assert: every connection beyond its three is closed at once, unanswered...
    let mut held = silent;
    let mut beyond = held.split_off(3);
    for (n, stream) in beyond.iter_mut().enumerate() {
        assert_eq!(closed_by_server(stream).await, "", "connection {}", n + 4);
    }
    // ...a client at 127.0.0.2 is served while they are held...
    let mut other = connect_from(&app, [127, 0, 0, 2]).await;
    assert_eq!(get_on(&mut other, "/health").await.0, 200);
    // ...and the three held connections are live ones.
    for stream in &mut held {
        assert_eq!(get_on(stream, "/health").await.0, 200);
    }
}

#[tokio::test]
async fn shutdown_completes_while_idle_and_half_open_clients_hold_connections() {
    // Arrange: a second server over the same app, with long timeouts, and two lingering
    // clients: one idle after a request, one halfway through its headers.
    let app = TestApp::spawn(&[
        ("HTTP_HEADER_TIMEOUT_MS", "60000"),
        ("HTTP_IDLE_TIMEOUT_MS", "60000"),
    ])
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(shared::web::routes::serve(
        listener,
        app.app.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut idle = TcpStream::connect(address).await.expect("connect");
    assert_eq!(get_on(&mut idle, "/health").await.0, 200);
    let mut half_open = TcpStream::connect(address).await.expect("connect");
    half_open
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");

    // Act
    stop.send(()).expect("server running");

    // Assert: both are closed and the server returns, long before their timeouts.
    assert_eq!(closed_by_server(&mut idle).await, "");
    assert_eq!(closed_by_server(&mut half_open).await, "");
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("serve returned after shutdown")
        .expect("serve task")
        .expect("serve result");
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn json_pages_404s_and_405s_carry_nosniff_and_no_hsts_over_http() {
    // Arrange
    let app = TestApp::spawn(&[]).await;
    let requests = [
        ("GET", "/auth/status", 200),
        ("GET", "/health", 200),
        ("GET", "/", 200),
        ("GET", "/no/such/page", 404),
        ("POST", "/health", 405),
    ];
    for (method, path, expected) in requests {
        // Act
        let response = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .send()
            .await
            .expect("request");

        // Assert
        assert_eq!(response.status(), expected, "{method} {path}");
        assert_eq!(
            header(&response, "x-content-type-options"),
            Some("nosniff"),
            "{method} {path}"
        );
        assert_eq!(
            header(&response, "strict-transport-security"),
            None,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn hsts_is_sent_on_every_response_when_the_public_url_is_https() {
    // Arrange
    let app = TestApp::spawn(&[("PUBLIC_BASE_URL", "https://avatar.example")]).await;
    let hsts = Some("max-age=63072000; includeSubDomains");

    // Act + Assert: the local server...
    for (method, path) in [("GET", "/health"), ("GET", "/nope"), ("POST", "/health")] {
        let response = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .send()
            .await
            .expect("request");
        assert_eq!(
            header(&response, "strict-transport-security"),
            hsts,
            "{method} {path}"
        );
        assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
    }
    // ...and a Lambda function's router, for its route and for a path it does not serve.
    for path in ["/health", "/auth/status"] {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = function_router(Function::Health, app.app.clone())
            .oneshot(request)
            .await
            .unwrap();
        let headers = response.headers();
        assert_eq!(
            headers
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            hsts,
            "{path}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
}
