//! A Lambda Runtime API emulator: the HTTP interface a function's runtime talks to
//! (`AWS_LAMBDA_RUNTIME_API`), serving invocations with a given event and deadline and
//! recording the function's answers, so a function binary can be run as Lambda runs it.
//!
//! `GET /2018-06-01/runtime/invocation/next` hands out each queued invocation once (with
//! none queued it waits, as Lambda freezes an idle function, until [`RuntimeApi::invoke`]
//! queues another: a warm invocation of the same process); `POST …/{id}/response` and
//! `…/{id}/error` record the result with the time it arrived; `POST …/init/error` records a
//! failed start.

use std::collections::VecDeque;
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

/// The configuration a function gets in AWS, scaled to a test: `dir`'s database in `delete`
/// journal mode (as on EFS), the private Redis at `redis_url`, an https public URL and short
/// provider timeouts. Add the providers' variables and the test's own.
pub fn lambda_vars(
    dir: &std::path::Path,
    redis_url: &str,
) -> std::collections::HashMap<String, String> {
    let mut vars = crate::base_vars(dir);
    vars.extend(
        [
            ("REDIS_URL", redis_url),
            ("PUBLIC_BASE_URL", "https://avatar.example"),
            ("PROVIDER_TIMEOUT_MS", "500"),
            ("SQLITE_JOURNAL_MODE", "delete"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    vars
}

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
    pending: VecDeque<(String, String, Duration)>,
    invocations: usize,
    handed_out_at: Vec<Instant>,
    results: Vec<InvocationResult>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Emulated>,
    queued: tokio::sync::Notify,
}

/// The emulator, served on a free loopback port until dropped.
pub struct RuntimeApi {
    pub address: SocketAddr,
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the runtime API");
        let address = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let api = Self {
            address,
            shared,
            server,
        };
        api.invoke(event, timeout);
        api
    }

    /// Queues another invocation (handed to the waiting function: a warm start).
    pub fn invoke(&self, event: &str, timeout: Duration) {
        {
            let mut state = self.shared.state.lock().unwrap();
            state.invocations += 1;
            let id = Self::request_id(state.invocations - 1);
            state.pending.push_back((id, event.to_owned(), timeout));
        }
        self.shared.queued.notify_one();
    }

    /// The request id of invocation `n` (0 is the first), as the runtime hands it out.
    pub fn request_id(n: usize) -> String {
        format!("8476a536-e9f4-11e8-9739-{:012}", n + 1)
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

    /// Starts the function binary at `binary` as Lambda would: a clean environment with
    /// `vars` and the runtime's variables pointing at this emulator. Its stdout (EMF records)
    /// and stderr (its log) are read line by line. Killed on drop.
    pub fn spawn_function(
        &self,
        binary: &str,
        function_name: &str,
        vars: &std::collections::HashMap<String, String>,
    ) -> crate::ChildProcess {
        let mut command = std::process::Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter())
            .envs(self.environment(function_name));
        crate::ChildProcess::spawn_with_log(&mut command)
    }

    /// When the function received the first invocation.
    pub fn handed_out_at(&self) -> Option<Instant> {
        self.nth_handed_out_at(0)
    }

    /// When the function received invocation `n` (0 is the first).
    pub fn nth_handed_out_at(&self, n: usize) -> Option<Instant> {
        self.shared
            .state
            .lock()
            .unwrap()
            .handed_out_at
            .get(n)
            .copied()
    }

    /// The function's answer to the first invocation, once it came (waits up to `deadline`).
    pub async fn result(&self, deadline: Duration) -> Option<InvocationResult> {
        self.nth_result(0, deadline).await
    }

    /// The function's answer to invocation `n`, once it came (waits up to `deadline`).
    pub async fn nth_result(&self, n: usize, deadline: Duration) -> Option<InvocationResult> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(result) = self.shared.state.lock().unwrap().results.get(n).cloned() {
                return Some(result);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type SharedState = State<Arc<Shared>>;

async fn next(State(shared): SharedState) -> Response {
    let (id, event, timeout) = loop {
        // Registered before looking, so a notification between the two is not lost.
        let queued = shared.queued.notified();
        {
            let mut state = shared.state.lock().unwrap();
            if let Some(pending) = state.pending.pop_front() {
                state.handed_out_at.push(Instant::now());
                break pending;
            }
        }
        // Lambda freezes an idle function; waiting here is the closest a process gets.
        queued.await;
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

fn record(shared: &Shared, ok: bool, body: Bytes) -> Response {
    shared.state.lock().unwrap().results.push(InvocationResult {
        ok,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    StatusCode::ACCEPTED.into_response()
}

async fn respond(State(shared): SharedState, Path(_id): Path<String>, body: Bytes) -> Response {
    record(&shared, true, body)
}

async fn fail(State(shared): SharedState, Path(_id): Path<String>, body: Bytes) -> Response {
    record(&shared, false, body)
}

async fn init_error(State(shared): SharedState, body: Bytes) -> Response {
    record(&shared, false, body)
}
