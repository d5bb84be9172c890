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
