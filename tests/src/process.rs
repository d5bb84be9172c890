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
        process.read_until(
            &mut log,
            "avatar-local to log its address",
            Duration::from_secs(30),
            |lines| {
                lines
                    .last()
                    .is_some_and(|l| l.contains("listening on http://"))
            },
        );
        let address = log
            .last()
            .and_then(|line| line.split("listening on http://").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the listening line names an address")
            .to_owned();
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

    /// A line of the child's log already received, if any (never waits); `None` also for a
    /// child whose log is not captured.
    pub fn try_log_line(&self) -> Option<String> {
        self.log.as_ref()?.try_recv().ok()
    }

    /// Every remaining line until the child closes stdout or `deadline` passes, whichever
    /// comes first: a child that never stops printing is read for `deadline`, no longer.
    pub fn remaining_lines(&self, deadline: Duration) -> Vec<String> {
        let end = Instant::now() + deadline;
        let mut lines = Vec::new();
        // The deadline is checked before every line, not only while waiting for one: lines
        // already queued would otherwise keep the loop going past it.
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    /// Reads stdout lines into `lines` until `done` holds for them, and panics, naming
    /// `what` and showing the last lines read, when the child closes stdout first or when
    /// `deadline` passes, also while the child keeps printing lines that do not satisfy
    /// `done`.
    pub fn read_until(
        &self,
        lines: &mut Vec<String>,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[String]) -> bool,
    ) {
        read_until(&self.lines, lines, what, deadline, done);
    }

    /// [`ChildProcess::read_until`] for the child's log (see
    /// [`ChildProcess::spawn_with_log`]).
    pub fn read_log_until(
        &self,
        lines: &mut Vec<String>,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[String]) -> bool,
    ) {
        let log = self.log.as_ref().expect("spawned with spawn_with_log");
        read_until(log, lines, what, deadline, done);
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

/// The lines of `output` into `lines` until `done` holds for them; panics on `deadline`,
/// checked before every line (lines already queued must not keep the loop going past it).
fn read_until(
    output: &std::sync::mpsc::Receiver<String>,
    lines: &mut Vec<String>,
    what: &str,
    deadline: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let end = Instant::now() + deadline;
    let last_lines = |lines: &[String]| lines[lines.len().saturating_sub(5)..].join("\n");
    while !done(lines) {
        let received = match end.checked_duration_since(Instant::now()) {
            Some(left) => output.recv_timeout(left),
            None => Err(RecvTimeoutError::Timeout),
        };
        match received {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Timeout) => panic!(
                "timed out after {deadline:?} waiting for {what}; the last lines:\n{}",
                last_lines(lines)
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "the child closed its output before {what}; the last lines:\n{}",
                last_lines(lines)
            ),
        }
    }
}

/// Runs `command` to completion like [`Command::output`], but kills it and panics when it has
/// not exited within `deadline`.
pub fn output_within(command: &mut Command, deadline: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    // Read on threads of their own, so that a child filling a pipe cannot block its exit.
    let collect = |mut output: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = output.read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
        rx
    };
    let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Something the child started may still hold its output open: wait for that within the
    // deadline too.
    let rest = |output: std::sync::mpsc::Receiver<Vec<u8>>| {
        output
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("{command:?} left its output open past {deadline:?}"))
    };
    std::process::Output {
        status,
        stdout: rest(stdout),
        stderr: rest(stderr),
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
