//! The local server's HTTP/1 edge: accepts connections on a listener and serves the route
//! table on each, under limits a slow or idle client cannot stretch (`HTTP_*`, see
//! [`HttpServerConfig`]):
//!
//! - a connection's request headers must arrive within the header timeout of its first
//!   byte (of the connection's opening, for the first request);
//! - a keep-alive connection may sit idle between requests for the idle timeout;
//! - a request body must arrive within the body timeout of the server starting to wait for
//!   it, else the answer is 408 and the connection closes;
//! - at most `max_connections` are served at once: the next one is accepted only when one
//!   closes, so the others wait in the kernel's listen backlog instead of holding memory;
//! - at most `max_connections_per_ip` of them come from one client address (an IPv6
//!   client's /64): one more from that address is closed as soon as it is accepted, so a
//!   single client holding idle sockets cannot take every slot from everyone else. It is
//!   closed rather than answered 503: a client over its share is holding sockets open, not
//!   reading answers, and writing one would spend a write on every attempt.
//!
//! A connection past its deadline is closed; every other connection is unaffected, since
//! each runs in its own task. Lambdas do not come here: API Gateway fronts them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderValue};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};

use super::headers::SecurityHeaders;
use crate::config::HttpServerConfig;
use crate::telemetry::error_chain;

/// How long to pause accepting after an error such as "too many open files", so that a
/// full descriptor table does not turn the accept loop into a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then stops
/// accepting, lets requests in progress finish (idle connections close at once) and
/// returns when every connection has closed. `headers` go on the responses the edge makes
/// itself (timeouts).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpServerConfig,
    headers: SecurityHeaders,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    ensure_open_file_limit(limits.max_connections);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(ClientConnections::new(limits.max_connections_per_ip));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        // A slot first: beyond the cap, clients wait in the backlog, not in memory.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    on_accept_error(e).await;
                    continue;
                }
            },
        };
        // Dropping the stream closes it, and the slot goes back to the others.
        let Some(client) = clients.admit(peer.ip()) else {
            tracing::debug!(client = %peer.ip(), "connection closed: its address has HTTP_MAX_CONNECTIONS_PER_IP open");
            continue;
        };
        // Responses are written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            router: router.clone(),
            limits,
            headers,
            _slot: slot,
            _client: client,
        };
        tokio::spawn(connection.serve(stream, stopping.clone()));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it closes.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

async fn on_accept_error(error: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    // These concern one client that has already gone; the listener is fine.
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %error_chain(&error), "accepting a connection failed; pausing briefly");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Raises this process's soft limit on open files so that `max_connections` sockets fit
/// (within the hard limit), and warns when they cannot.
fn ensure_open_file_limit(max_connections: usize) {
    // Room for the database, Redis connections, logs and the listener.
    const RESERVED: u64 = 256;
    let wanted = max_connections as u64 + RESERVED;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard
    // limit needs no privilege.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0;
    if !ok || raised.rlim_cur < wanted {
        tracing::warn!(
            open_files = if ok { raised.rlim_cur } else { limit.rlim_cur },
            max_connections,
            "the open-file limit is below HTTP_MAX_CONNECTIONS: connections beyond it are \
             refused until some close (raise `ulimit -n` or lower HTTP_MAX_CONNECTIONS)"
        );
    }
}

/// How many connections each client address has open, against the per-address cap.
struct ClientConnections {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientConnections {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A hold on one of `peer`'s connections, or `None` when its address has the cap open.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ClientHold> {
        let client = client_address(peer);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientHold {
            clients: Arc::clone(self),
            client,
        })
    }
}

/// What a connection counts against: an IPv4 address, or an IPv6 client's /64 (a host is
/// commonly given a whole /64, so counting single IPv6 addresses would limit nothing).
fn client_address(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

/// One connection of a client address, given back when the connection closes.
struct ClientHold {
    clients: Arc<ClientConnections>,
    client: IpAddr,
}

impl Drop for ClientHold {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                // Addresses with nothing open are forgotten, so the map stays small.
                open.remove(&self.client);
            }
        }
    }
}

/// One accepted connection, holding its slot (and its address's) until it closes.
struct Connection {
    router: Router,
    limits: HttpServerConfig,
    headers: SecurityHeaders,
    _slot: OwnedSemaphorePermit,
    _client: ClientHold,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut stopping: watch::Receiver<bool>) {
        let clock = Arc::new(ConnectionClock::new());
        let io = TokioIo::new(TrackedStream {
            stream,
            clock: Arc::clone(&clock),
        });
        let service = ConnectionService {
            router: self.router,
            clock: Arc::clone(&clock),
            body_timeout: self.limits.body_timeout,
            headers: self.headers,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The deadlines below replace hyper's own header timer, which cannot tell a
        // slow request from an idle keep-alive connection.
        builder.header_read_timeout(None);
        let mut connection = pin!(builder.serve_connection(io, service));
        let mut stop = pin!(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
        let mut stopped = false;
        let mut timer = pin!(tokio::time::sleep(ConnectionClock::recheck_within(
            &self.limits
        )));
        let outcome = poll_fn(|cx| {
            if !stopped && stop.as_mut().poll(cx).is_ready() {
                stopped = true;
                connection.as_mut().graceful_shutdown();
            }
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(ConnectionEnd::Http));
            }
            while timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let recheck = now + ConnectionClock::recheck_within(&self.limits);
                match clock.deadline(&self.limits) {
                    Some((deadline, phase)) if deadline <= now => {
                        return Poll::Ready(Err(ConnectionEnd::TimedOut(phase)));
                    }
                    Some((deadline, _)) => timer.as_mut().reset(deadline.min(recheck)),
                    None => timer.as_mut().reset(recheck),
                }
            }
            Poll::Pending
        })
        .await;
        // Returning drops the connection, which closes the socket.
        if let Err(end) = outcome {
            tracing::debug!(reason = %end, "connection closed");
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("HTTP error")]
    Http(#[source] hyper::Error),
    #[error("timed out {0}")]
    TimedOut(Phase),
}

/// Where a connection stands, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Opened, nothing received yet: the header timeout runs from the opening.
    Opened = 0,
    /// Between requests: the idle timeout runs from the end of the last one.
    Idle = 1,
    /// A request's headers are arriving: the header timeout runs from its first byte.
    ReadingHeaders = 2,
    /// A request is being handled (its body has its own timeout).
    Handling = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Opened,
            1 => Self::Idle,
            2 => Self::ReadingHeaders,
            _ => Self::Handling,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Opened => "waiting for the first request",
            Self::Idle => "idle between requests",
            Self::ReadingHeaders => "reading request headers",
            Self::Handling => "handling a request",
        })
    }
}

/// The phase of one connection and when it began. Only the connection's own task touches
/// it (the stream, the service and the body are all polled there), so relaxed atomics do.
struct ConnectionClock {
    opened: Instant,
    phase: AtomicU8,
    /// Nanoseconds from `opened` to the start of the phase.
    since: AtomicU64,
    body_timed_out: AtomicBool,
}

impl ConnectionClock {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            phase: AtomicU8::new(Phase::Opened as u8),
            since: AtomicU64::new(0),
            body_timed_out: AtomicBool::new(false),
        }
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn enter(&self, phase: Phase) {
        let since = self.opened.elapsed().as_nanos() as u64;
        self.since.store(since, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// A request's headers are in: no connection deadline until it is answered (so no
    /// clock reading either).
    fn begin_handling(&self) {
        self.phase.store(Phase::Handling as u8, Ordering::Relaxed);
    }

    /// Bytes arrived: a request has begun if none was in progress.
    fn on_bytes_received(&self) {
        if matches!(self.phase(), Phase::Opened | Phase::Idle) {
            self.enter(Phase::ReadingHeaders);
        }
    }

    /// When the connection must be closed if its phase does not change, and that phase.
    fn deadline(&self, limits: &HttpServerConfig) -> Option<(Instant, Phase)> {
        let phase = self.phase();
        let allowed = match phase {
            Phase::Opened | Phase::ReadingHeaders => limits.header_timeout,
            Phase::Idle => limits.idle_timeout,
            Phase::Handling => return None,
        };
        let since = self.opened + Duration::from_nanos(self.since.load(Ordering::Relaxed));
        Some((since + allowed, phase))
    }

    /// How soon the deadline must be looked at again: any phase entered from now on ends
    /// no earlier than this, so the timer never has to be moved earlier when one begins.
    fn recheck_within(limits: &HttpServerConfig) -> Duration {
        limits.header_timeout.min(limits.idle_timeout)
    }
}

/// The TCP stream, reporting received bytes to the connection's clock.
struct TrackedStream {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.clock.on_bytes_received();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router as hyper calls it on one connection: marks the request's phases and puts
/// the body under its deadline.
struct ConnectionService {
    router: Router,
    clock: Arc<ConnectionClock>,
    body_timeout: Duration,
    headers: SecurityHeaders,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        use http_body::Body as _;
        use tower::Service as _;
        self.clock.begin_handling();
        let request = if request.body().is_end_stream() {
            request.map(Body::new)
        } else {
            let clock = Arc::clone(&self.clock);
            let timeout = self.body_timeout;
            request.map(|body| Body::new(DeadlineBody::new(body, timeout, clock)))
        };
        let response = self.router.clone().call(request);
        let clock = Arc::clone(&self.clock);
        let headers = self.headers;
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let response = if clock.body_timed_out.swap(false, Ordering::Relaxed) {
                body_timeout_response(headers)
            } else {
                response
            };
            clock.enter(Phase::Idle);
            Ok(response)
        })
    }
}

/// 408, and the connection closes: the rest of the body may still be on its way.
fn body_timeout_response(headers: SecurityHeaders) -> Response {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        [
            (header::CONNECTION, HeaderValue::from_static("close")),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        "The request body did not arrive in time.\n",
    )
        .into_response();
    headers.apply(response.headers_mut());
    response
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    #[error("reading the request body failed")]
    Read(#[source] hyper::Error),
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
}

/// A request body that must arrive whole within `timeout` of the first wait for it.
struct DeadlineBody {
    body: Incoming,
    timeout: Duration,
    /// Started on the first wait, so a body that is already here costs no timer.
    deadline: Option<Pin<Box<Sleep>>>,
    clock: Arc<ConnectionClock>,
}

impl DeadlineBody {
    fn new(body: Incoming, timeout: Duration, clock: Arc<ConnectionClock>) -> Self {
        Self {
            body,
            timeout,
            deadline: None,
            clock,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(RequestBodyError::Read)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        this.clock.body_timed_out.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(RequestBodyError::TimedOut(timeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let address = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(client_address(address("192.0.2.7")), address("192.0.2.7"));
        assert_eq!(
            client_address(address("2001:db8:1:2:aaaa::1")),
            client_address(address("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_address(address("2001:db8:1:2::1")),
            client_address(address("2001:db8:1:3::1"))
        );
        assert_eq!(
            client_address(address("::ffff:192.0.2.7")),
            address("192.0.2.7")
        );
    }

    #[test]
    fn an_address_gets_its_connections_back_as_they_close() {
        let clients = Arc::new(ClientConnections::new(2));
        let one = "192.0.2.1".parse().unwrap();
        let other = "192.0.2.2".parse().unwrap();
        let first = clients.admit(one).expect("first");
        let _second = clients.admit(one).expect("second");
        assert!(
            clients.admit(one).is_none(),
            "a third from the same address"
        );
        assert!(clients.admit(other).is_some(), "another address");
        drop(first);
        assert!(clients.admit(one).is_some(), "a slot freed by a close");
    }
}
