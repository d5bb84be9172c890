//! The functions as Lambda starts them (`coldstart`) and ships them (`size`).
//!
//! Cold start: each release function binary is started under the Runtime API emulator with
//! the configuration it gets in AWS (a private Redis on loopback, the database in `delete`
//! journal mode) and one queued invocation of a real event. Measured per start: spawn to its
//! first `invocation/next` (init: everything before it can take a request), spawn to its
//! answer, and its peak RSS (`VmHWM`) after answering. Beside them the same figures for
//! `lambda-floor`, the smallest `lambda_http` function, built the same way in the same run.
//! `health` is measured once more with `SECRETS_ARN` (its keys in a secret held by a local
//! Secrets Manager, moto, which checks the request's signature).
//!
//! Size: each binary zipped as `bootstrap`, as `sam build` ships it.
//!
//! `scripts/bench.sh` builds the function binaries and `lambda-floor` in a cargo invocation
//! of their own, so no test-only feature reaches them.

use std::collections::HashMap;
use std::time::Duration;

use avatar_tests::runtime_api::{RuntimeApi, lambda_vars};
use avatar_tests::{MotoServer, RedisServer};
use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig};
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig};
use shared::bundle::{Function, FunctionKind};
use tokio::time::Instant;

use crate::{Row, micros, percentile, release_binary};

/// Starts per binary (the medians are reported).
const STARTS: usize = 15;
const FLOOR: &str = "lambda-floor";

const SCHEDULED_EVENT: &str = include_str!("../../tests/events/eventbridge-schedule.json");

/// The event each function's cold start answers (the requests of the runtime test).
fn event(function: Function) -> &'static str {
    match function {
        Function::Health => include_str!("../../tests/events/apigw-v2-get-health.json"),
        Function::AuthStart => include_str!("../../tests/events/apigw-v2-get-auth-twitch.json"),
        Function::AuthCallback => {
            include_str!("../../tests/events/apigw-v2-get-callback-no-state.json")
        }
        Function::Pages => include_str!("../../tests/events/apigw-v2-get-landing.json"),
        Function::ChatToken => include_str!("../../tests/events/apigw-v2-get-chat-token-iam.json"),
        Function::DaPoll | Function::TokenValidate => SCHEDULED_EVENT,
    }
}

struct Start {
    init: Duration,
    answer: Duration,
    peak_rss_kib: u64,
}

/// How long an invocation may run. A scheduled job works until shortly before its deadline
/// (the poller keeps polling), so its answer time says nothing; its deadline is kept short.
fn invocation_timeout(event: &str) -> Duration {
    if event == SCHEDULED_EVENT {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(30)
    }
}

/// One cold start of `binary` answering `event`.
async fn cold_start(
    binary: &str,
    function_name: &str,
    event: &str,
    vars: &HashMap<String, String>,
) -> Start {
    let runtime = RuntimeApi::start(event, invocation_timeout(event)).await;
    let spawned = Instant::now();
    let process = runtime.spawn_function(binary, function_name, vars);
    let result = runtime
        .result(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("{function_name} did not answer"));
    assert!(result.ok, "{function_name}: {}", result.body);
    let handed_out = runtime.handed_out_at().expect("the invocation was taken");
    let peak_rss_kib = peak_rss_kib(process.child.id());
    Start {
        init: handed_out - spawned,
        answer: result.at - spawned,
        peak_rss_kib,
    }
}

/// `VmHWM` of a live process: the most resident memory it has had.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

struct Summary {
    init: Duration,
    answer: Duration,
    peak_rss_kib: u64,
}

/// One binary to start again and again, with its configuration and database directory.
struct Subject {
    label: String,
    function: Option<Function>,
    binary: String,
    function_name: String,
    event: &'static str,
    vars: HashMap<String, String>,
    _dir: tempfile::TempDir,
    starts: Vec<Start>,
}

impl Subject {
    fn summary(&self) -> Summary {
        let mut inits: Vec<Duration> = self.starts.iter().map(|s| s.init).collect();
        let mut answers: Vec<Duration> = self.starts.iter().map(|s| s.answer).collect();
        let mut peaks: Vec<u64> = self.starts.iter().map(|s| s.peak_rss_kib).collect();
        inits.sort();
        answers.sort();
        peaks.sort();
        Summary {
            init: percentile(&inits, 0.5),
            answer: percentile(&answers, 0.5),
            peak_rss_kib: peaks[peaks.len() / 2],
        }
    }
}

/// `STARTS` cold starts of every subject, in rounds (each subject once per round, so a drift
/// of the machine's speed touches all alike), after one unmeasured start of each that warms
/// the page cache and creates its database: in AWS every cold start but the very first
/// finds the database on EFS.
async fn measure_all(subjects: &mut [Subject]) {
    for round in 0..=STARTS {
        for subject in subjects.iter_mut() {
            let start = cold_start(
                &subject.binary,
                &subject.function_name,
                subject.event,
                &subject.vars,
            )
            .await;
            if round > 0 {
                subject.starts.push(start);
            }
        }
    }
}

fn millis(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        micros(d)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

pub async fn coldstart_rows() -> Vec<Row> {
    let redis = RedisServer::start();
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(
        "https://avatar.example/auth/twitch/callback",
    ));
    let (twitch_address, _twitch_server) = twitch.spawn(0).await.expect("fake Twitch");
    let donationalerts = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(
        "https://avatar.example/auth/donationalerts/callback",
    ));
    let (da_address, _da_server) = donationalerts.spawn(0).await.expect("fake DonationAlerts");
    let key = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    let moto = MotoServer::start_with_secret(
        "avatar/bench",
        &format!(r#"{{"TOKEN_ENCRYPTION_KEY":"{key}","SESSION_SECRET":"{key}"}}"#),
    );
    let subject = |label: String, function: Option<Function>, name: &str, secret: bool| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut vars = HashMap::new();
        if function.is_some() {
            vars = lambda_vars(dir.path(), &redis.url());
            vars.extend(twitch.app_variables(twitch_address));
            vars.extend(donationalerts.app_variables(da_address));
            vars.insert("RUST_LOG".into(), "warn".into());
        }
        if secret {
            vars.remove("TOKEN_ENCRYPTION_KEY");
            vars.remove("SESSION_SECRET");
            vars.insert("SECRETS_ARN".into(), moto.arn.clone());
            vars.extend(
                moto.environment()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
            );
        }
        Subject {
            label,
            function,
            binary: release_binary(name)
                .to_str()
                .expect("UTF-8 path")
                .to_owned(),
            function_name: name.to_owned(),
            event: event(function.unwrap_or(Function::Health)),
            vars,
            _dir: dir,
            starts: Vec::with_capacity(STARTS),
        }
    };
    let mut subjects = vec![subject(
        format!("{FLOOR} (the floor: smallest lambda_http function)"),
        None,
        FLOOR,
        false,
    )];
    for function in Function::ALL.iter().copied() {
        subjects.push(subject(
            function.binary().to_owned(),
            Some(function),
            function.binary(),
            false,
        ));
    }
    subjects.push(subject(
        "health with SECRETS_ARN".to_owned(),
        Some(Function::Health),
        Function::Health.binary(),
        true,
    ));
    measure_all(&mut subjects).await;

    let floor = subjects[0].summary();
    let mut rows = Vec::new();
    for subject in &subjects {
        let summary = subject.summary();
        let secret = subject.vars.contains_key("SECRETS_ARN");
        let (answer, event) = match subject.function.map(Function::kind) {
            Some(FunctionKind::Scheduled) => (
                // It works until its deadline.
                String::new(),
                "EventBridge schedule, run to a 2 s deadline",
            ),
            _ => (
                format!("answer {}, ", millis(summary.answer)),
                "API Gateway v2 event",
            ),
        };
        let ratio = match subject.function {
            Some(_) => format!(
                " ({:.2}x floor)",
                summary.init.as_secs_f64() / floor.init.as_secs_f64()
            ),
            None => String::new(),
        };
        let detail = match (subject.function, secret) {
            (None, _) => format!("median of {STARTS} starts under the Runtime API emulator"),
            (Some(_), false) => format!(
                "median of {STARTS}; {event}; Redis on loopback, `delete` journal (targets: \
                 init ≤ 2x floor, RSS ≤ 15 MB)"
            ),
            (Some(_), true) => format!(
                "median of {STARTS}; keys read from a local Secrets Manager (moto, signatures \
                 checked) over loopback (target: init ≤ 15 ms)"
            ),
        };
        rows.push(Row {
            name: format!("cold start, {}", subject.label),
            figure: format!(
                "init {}{ratio}, {answer}peak RSS {:.1} MB",
                millis(summary.init),
                summary.peak_rss_kib as f64 / 1024.0
            ),
            detail,
        });
    }
    rows
}

/// Each binary zipped as `bootstrap` (`zip`, deflate at its default level, as `sam build`
/// packs it).
pub fn size_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let names = std::iter::once(FLOOR).chain(Function::ALL.iter().map(|f| f.binary()));
    for name in names {
        let binary = release_binary(name);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(&binary, dir.path().join("bootstrap")).expect("copy the binary");
        let status = std::process::Command::new("zip")
            .args(["-q", "-X", "bootstrap.zip", "bootstrap"])
            .current_dir(dir.path())
            .status()
            .expect("zip is not installed: run scripts/bench.sh, which installs it");
        assert!(status.success(), "zip failed for {name}");
        let zipped = std::fs::metadata(dir.path().join("bootstrap.zip"))
            .expect("zip file")
            .len();
        let unzipped = std::fs::metadata(&binary).expect("binary").len();
        let target = match Function::ALL.iter().find(|f| f.binary() == name) {
            Some(f) if f.kind() == FunctionKind::Http => " (target: ≤ 4 MB)",
            _ => "",
        };
        rows.push(Row {
            name: format!("zipped bootstrap, {name}"),
            figure: format!("{:.2} MB", zipped as f64 / 1e6),
            detail: format!(
                "release x86_64, stripped: {:.2} MB unzipped{target}",
                unzipped as f64 / 1e6
            ),
        });
    }
    rows
}
