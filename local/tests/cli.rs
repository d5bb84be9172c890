//! `avatar-local` as a user runs it: invalid configuration is refused at start, naming the
//! variable, before anything is written.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use avatar_tests::{ChildProcess, output_within};

/// Every wait below gives up after this, so a server that hangs fails the test.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs avatar-local in an empty directory with only `vars` set (no .env, no inherited
/// configuration), expecting it to refuse them and exit: still running after [`DEADLINE`]
/// means it accepted them, and fails the test.
fn run_with(vars: &[(&str, &str)]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_avatar-local"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .args(["--port", "0"]);
    for (k, v) in vars {
        command.env(k, v);
    }
    (output_within(&mut command, DEADLINE), dir)
}

#[test]
fn each_invalid_variable_stops_the_start_and_is_named() {
    let cases = [
        ("PUBLIC_BASE_URL", "localhost:3000"),
        ("TWITCH_AUTH_BASE_URL", "not a url"),
        ("DA_BASE_URL", "ftp://www.example.com"),
        ("DA_POLL_INTERVAL_MS", "five seconds"),
        ("DA_RATE_LIMIT_PER_MIN", "-1"),
        ("DB_CONCURRENCY", "0"),
        ("REDIS_URL", "127.0.0.1:6379"),
        ("REDIS_LOCK_URLS", "redis://127.0.0.1:1,bogus"),
        ("SQLITE_JOURNAL_MODE", "memory-ish"),
        ("TOKEN_ENCRYPTION_KEY", "dG9vIHNob3J0"),
        ("SESSION_SECRET", "not base64 at all!"),
        ("HTTP_HEADER_TIMEOUT_MS", "10s"),
        ("HTTP_IDLE_TIMEOUT_MS", "0"),
        ("HTTP_BODY_TIMEOUT_MS", "forever"),
        ("HTTP_MAX_CONNECTIONS", "unlimited"),
        ("HTTP_MAX_CONNECTIONS_PER_IP", "0"),
        ("INTERNAL_API_TOKEN", "only-31-characters-long-0123456"),
    ];
    for (name, value) in cases {
        let (output, dir) = run_with(&[(name, value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}={value:?} was accepted");
        assert!(stderr.contains(name), "{name}: stderr was {stderr}");
        let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(written.is_empty(), "{name}: wrote {written:?}");
    }
}

#[test]
fn redis_required_without_redis_is_refused() {
    let (output, _dir) = run_with(&[("REDIS_REQUIRED", "true")]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("REDIS_URL"));
}

#[test]
fn a_key_is_never_echoed_in_the_error() {
    let (output, _dir) = run_with(&[("TOKEN_ENCRYPTION_KEY", "c2VjcmV0LWJ1dC1zaG9ydA==")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(!stderr.contains("c2VjcmV0LWJ1dC1zaG9ydA"), "{stderr}");
}

#[test]
fn a_short_internal_api_token_is_refused_without_being_echoed() {
    let token = "0123456789abcdef0123456789abcde"; // 31 characters
    let (output, _dir) = run_with(&[("INTERNAL_API_TOKEN", token)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a 31-character token was accepted"
    );
    assert!(
        stderr.contains("INTERNAL_API_TOKEN: must be at least 32 characters"),
        "{stderr}"
    );
    assert!(!stderr.contains(token), "{stderr}");
}

#[test]
fn with_no_configuration_at_all_it_serves_health_and_stops_cleanly_on_sigterm() {
    use std::io::{Read as _, Write as _};
    // Arrange: a fresh directory, no .env, no variables beyond PATH.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_avatar-local"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .args(["--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = child.stderr.take().unwrap();
    let mut process = ChildProcess::adopt(child, log);

    // Act: wait for the address it logs, then ask for /health over plain HTTP.
    let mut lines = Vec::new();
    process.read_until(&mut lines, "the listening line", DEADLINE, |lines| {
        lines
            .last()
            .is_some_and(|l| l.contains("listening on http://"))
    });
    let address = lines
        .pop()
        .and_then(|line| Some(line.split("listening on http://").nth(1)?.trim().to_owned()))
        .expect("an address");
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();

    // Assert
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#""mode":"single-instance""#),
        "{response}"
    );
    assert!(
        lines.iter().any(|l| l.contains("single-instance mode")),
        "{lines:?}"
    );
    assert!(dir.path().join("data.sqlite").exists());
    assert!(dir.path().join("data.sqlite.keys").exists());
    avatar_tests::signal(process.child.id(), libc::SIGTERM);
    assert_eq!(process.wait(DEADLINE), Some(0), "a clean stop on SIGTERM");
}
