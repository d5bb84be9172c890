//! `avatar-local` as a user runs it: invalid configuration is refused at start, naming the
//! variable, before anything is written.

use std::process::{Command, Output};

/// Runs avatar-local in an empty directory with only `vars` set (no .env, no inherited
/// configuration).
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
    (command.output().unwrap(), dir)
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
fn with_no_configuration_at_all_it_serves_health_and_stops_cleanly_on_sigterm() {
    use std::io::{BufRead as _, Read as _, Write as _};
    // Arrange: a fresh directory, no .env, no variables beyond PATH.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_avatar-local"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path())
        .args(["--port", "0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());

    // Act: wait for the address it logs, then ask for /health over plain HTTP.
    let mut address = None;
    let mut lines = Vec::new();
    for _ in 0..50 {
        let mut line = String::new();
        if log.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            address = Some(rest.trim().to_owned());
            break;
        }
        lines.push(line);
    }
    let address = address.unwrap_or_else(|| panic!("no listening line in {lines:?}"));
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
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
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
