//! Child processes: this workspace's binaries (`avatar-local`, the coordination children)
//! run as a user runs them, their output read line by line, killed on drop.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Sends a signal to a process (SIGSTOP/SIGCONT for pause tests, SIGKILL for crashes).
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned; failure (already gone) is harmless here.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Sends a signal to every process of the group `leader` leads (a child spawned with
/// `process_group(0)` and whatever it started).
pub fn signal_group(leader: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the group of a child we spawned; failure (already gone) is harmless.
    unsafe {
        libc::kill(-(leader as libc::pid_t), signal);
    }
}

/// Path of a binary built from this workspace (`avatar-local`), next to the test binary.
/// `cargo test --workspace` builds it because the avatar-local package has tests of its own.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/it-<hash> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or scripts/test.sh), which builds it",
        path.display()
    );
    path
}

/// `avatar-local` started as a user would, in a fresh directory, with only PATH, `vars` and
/// `RUST_LOG` (the `log_filter` given, also over one in `vars`) in its environment; its log
/// is kept for the test to search. Killed on drop.
pub struct LocalServer {
    process: ChildProcess,
    /// `http://localhost:PORT`, the default public URL (cookies are bound to it).
    pub base: String,
    pub port: u16,
    pub log: Vec<String>,
    dir: TempDir,
}

impl LocalServer {
    pub async fn start(args: &[&str], vars: &[(String, String)], log_filter: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(workspace_binary("avatar-local"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter().cloned())
            .env("RUST_LOG", log_filter)
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("avatar-local starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let process = ChildProcess::adopt(child, stderr);
        let mut log = Vec::new();
        let address = loop {
            let line = process
                .next_line(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("avatar-local did not start: {log:?}"));
            let found = line
                .split("listening on http://")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned());
            log.push(line);
            if let Some(address) = found {
                break address;
            }
        };
        let port: u16 = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the listening line");
        Self {
            process,
            base: format!("http://localhost:{port}"),
            port,
            log,
            dir,
        }
    }

    /// Stops the server (SIGTERM) and returns everything it logged.
    pub fn stop(mut self) -> (Vec<String>, TempDir) {
        signal(self.process.child.id(), libc::SIGTERM);
        self.log
            .extend(self.process.remaining_lines(Duration::from_secs(20)));
        let log = std::mem::take(&mut self.log);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        (log, dir)
    }
}

impl LocalServer {
    /// Stops the server (SIGTERM) and waits up to `deadline` for it to exit: its exit code
    /// (`None` while it still runs; it is then killed on drop) and everything it logged.
    pub fn terminate(mut self, deadline: Duration) -> (Option<i32>, Vec<String>) {
        let end = Instant::now() + deadline;
        signal(self.process.child.id(), libc::SIGTERM);
        // Its log closes when it exits.
        self.log.extend(self.process.remaining_lines(deadline));
        let code = self
            .process
            .wait(end.saturating_duration_since(Instant::now()));
        (code, std::mem::take(&mut self.log))
    }
}

/// A child process whose stdout is read line by line; killed on drop.
pub struct ChildProcess {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Its stderr (its log), when captured.
    log: Option<std::sync::mpsc::Receiver<String>>,
}

/// Reads `output` line by line on a thread of its own.
fn line_reader(output: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

impl ChildProcess {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child process starts");
        let stdout = child.stdout.take().expect("piped stdout");
        Self::adopt(child, stdout)
    }

    /// Like [`ChildProcess::spawn`], also reading the child's stderr (its log) line by line.
    pub fn spawn_with_log(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("child process starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        Self {
            child,
            lines: line_reader(stdout),
            log: Some(line_reader(stderr)),
        }
    }

    /// Wraps an already spawned child, reading lines from `output` (its stdout or stderr).
    pub fn adopt(child: Child, output: impl Read + Send + 'static) -> Self {
        Self {
            child,
            lines: line_reader(output),
            log: None,
        }
    }

    /// The next stdout line, or `None` when the child closed stdout or `deadline` passed.
    pub fn next_line(&self, deadline: Duration) -> Option<String> {
        self.lines.recv_timeout(deadline).ok()
    }

    /// The next line of the child's log (see [`ChildProcess::spawn_with_log`]), or `None`
    /// when it closed stderr or `deadline` passed.
    pub fn next_log_line(&self, deadline: Duration) -> Option<String> {
        self.log
            .as_ref()
            .expect("spawned with spawn_with_log")
            .recv_timeout(deadline)
            .ok()
    }

    /// Every remaining line until the child closes stdout (bounded by `deadline`).
    pub fn remaining_lines(&self, deadline: Duration) -> Vec<String> {
        let end = Instant::now() + deadline;
        let mut lines = Vec::new();
        while let Some(line) = self.next_line(end.saturating_duration_since(Instant::now())) {
            lines.push(line);
        }
        lines
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        let _ = writeln!(stdin, "{line}");
        let _ = stdin.flush();
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub fn wait(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
