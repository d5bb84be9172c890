//! A Lambda Runtime API emulator: the HTTP interface a function's runtime talks to
//! (`AWS_LAMBDA_RUNTIME_API`), serving one invocation with a given event and deadline and
//! recording the function's answer, so a function binary can be run as Lambda runs it.
//!
//! `GET /2018-06-01/runtime/invocation/next` hands out the invocation once (later calls
//! wait, as Lambda freezes an idle function); `POST …/{id}/response` and `…/{id}/error`
//! record the result with the time it arrived; `POST …/init/error` records a failed start.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::time::Instant;

/// What the function answered.
#[derive(Debug, Clone)]
pub struct InvocationResult {
    /// `true` for `/response`, `false` for `/error` and `/init/error`.
    pub ok: bool,
    pub body: String,
    pub at: Instant,
}

#[derive(Default)]
struct Emulated {
    /// Request id, event, and how long the invocation may take once handed out.
    pending: Option<(String, String, Duration)>,
    handed_out_at: Option<Instant>,
    results: Vec<InvocationResult>,
}

/// The emulator, served on a free loopback port until dropped.
pub struct RuntimeApi {
    pub address: SocketAddr,
    state: Arc<Mutex<Emulated>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Serves one invocation of `event`, whose deadline is `timeout` after the function
    /// receives it (as Lambda counts a function's timeout).
    pub async fn start(event: &str, timeout: Duration) -> Self {
        let state = Arc::new(Mutex::new(Emulated {
            pending: Some((
                "8476a536-e9f4-11e8-9739-2dfe598c3fcd".to_owned(),
                event.to_owned(),
                timeout,
            )),
            ..Emulated::default()
        }));
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the runtime API");
        let address = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            address,
            state,
            server,
        }
    }

    /// The environment Lambda gives a function, pointing its runtime at this emulator.
    pub fn environment(&self, function_name: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.address.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// When the function received the invocation.
    pub fn handed_out_at(&self) -> Option<Instant> {
        self.state.lock().unwrap().handed_out_at
    }

    /// The function's answer, once it came (waits up to `deadline`).
    pub async fn result(&self, deadline: Duration) -> Option<InvocationResult> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(result) = self.state.lock().unwrap().results.first().cloned() {
                return Some(result);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type Shared = State<Arc<Mutex<Emulated>>>;

async fn next(State(state): Shared) -> Response {
    let pending = {
        let mut state = state.lock().unwrap();
        state.handed_out_at = Some(Instant::now());
        state.pending.take()
    };
    let Some((id, event, timeout)) = pending else {
        // Lambda freezes an idle function; waiting here is the closest a process gets.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let deadline_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .saturating_add(timeout)
        .as_millis() as u64;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, value.parse().expect("header value"));
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:000000000000:function:test".to_owned(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700".to_owned(),
    );
    set("content-type", "application/json".to_owned());
    (headers, event).into_response()
}

fn record(state: &Arc<Mutex<Emulated>>, ok: bool, body: Bytes) -> Response {
    state.lock().unwrap().results.push(InvocationResult {
        ok,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    StatusCode::ACCEPTED.into_response()
}

async fn respond(State(state): Shared, Path(_id): Path<String>, body: Bytes) -> Response {
    record(&state, true, body)
}

async fn fail(State(state): Shared, Path(_id): Path<String>, body: Bytes) -> Response {
    record(&state, false, body)
}

async fn init_error(State(state): Shared, body: Bytes) -> Response {
    record(&state, false, body)
}
