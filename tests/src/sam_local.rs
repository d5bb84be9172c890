//! `sam local start-api` as a developer starts it (`scripts/sam-local.sh serve`): the
//! function binaries `sam build` made, in Docker, behind SAM's local API Gateway. It needs
//! `scripts/sam-local.sh prepare` first (Docker, the base image, the build).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{output_within, signal, signal_group};

/// How long SAM may take to answer its first request: it builds its emulator image over
/// the base image on a first run, then starts one warm container per function.
const START_DEADLINE: Duration = Duration::from_secs(300);
/// How long SAM may take to stop its containers after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// How long one `docker` command may take.
const DOCKER_DEADLINE: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sam_local_script() -> PathBuf {
    workspace().join("scripts/sam-local.sh")
}

/// Ids of SAM's function containers (running or not) that mount this workspace's build.
fn function_containers() -> BTreeSet<String> {
    let listed = output_within(
        Command::new("docker")
            .args(["ps", "--all", "--quiet", "--no-trunc"])
            .args(["--filter", "label=sam.cli.container.type=lambda"]),
        DOCKER_DEADLINE,
    );
    assert!(listed.status.success(), "docker ps failed");
    let build = workspace()
        .join(".aws-sam/build")
        .canonicalize()
        .unwrap_or_default();
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .filter(|id| {
            let inspected = output_within(
                Command::new("docker").args([
                    "inspect",
                    "--format",
                    "{{range .Mounts}}{{.Source}} {{end}}",
                    id,
                ]),
                DOCKER_DEADLINE,
            );
            String::from_utf8_lossy(&inspected.stdout)
                .split_whitespace()
                .any(|source| Path::new(source).starts_with(&build))
        })
        .map(str::to_owned)
        .collect()
}

/// The address of the Docker bridge on this machine, where containers reach the host: a
/// private Redis and the fake providers listen there for the functions under `sam local`.
pub fn docker_bridge_address() -> Ipv4Addr {
    let output = output_within(
        Command::new(sam_local_script()).arg("bridge-address"),
        DOCKER_DEADLINE,
    );
    assert!(
        output.status.success(),
        "no Docker bridge: run scripts/sam-local.sh prepare ({})",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("an IPv4 address from scripts/sam-local.sh bridge-address")
}

/// `sam local start-api` on a free loopback port, stopped (its containers too) on drop.
pub struct SamLocal {
    /// `http://127.0.0.1:PORT`, also the functions' `PUBLIC_BASE_URL`.
    pub base: String,
    child: Child,
    log: PathBuf,
    /// Function containers of this build that existed before the start (another run's).
    containers_before: BTreeSet<String>,
    stopped: bool,
    _dir: TempDir,
}

impl SamLocal {
    /// Starts `scripts/sam-local.sh serve PORT` with only PATH, HOME and `vars` in its
    /// environment, and waits until SAM answers HTTP. `base` is known before the start
    /// (fakes register the callback URL under it): `http://127.0.0.1:{port}`.
    pub async fn start(port: u16, vars: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("sam-local.log");
        let output = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(sam_local_script());
        command
            .args(["serve", &port.to_string()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .envs(vars.iter().cloned())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file"))
            .stderr(output)
            // Its own process group, so that a last resort can kill whatever it started.
            .process_group(0);
        let containers_before = function_containers();
        let child = command.spawn().expect("scripts/sam-local.sh starts");
        let mut sam = Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
            log,
            containers_before,
            stopped: false,
            _dir: dir,
        };
        sam.wait_until_serving().await;
        sam
    }

    async fn wait_until_serving(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let end = Instant::now() + START_DEADLINE;
        loop {
            // SAM's own 404 for an unknown path answers once it listens, without invoking a
            // function (so no container start is counted against the deadline twice).
            let probe = format!("{}/sam-local-probe", self.base);
            if client.get(&probe).send().await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sam local start-api exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < end,
                "sam local start-api did not answer within {START_DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything SAM and the functions printed so far, OAuth codes masked (SAM logs every
    /// request's query).
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut masked = String::with_capacity(log.len());
        let mut rest = log.as_str();
        while let Some(at) = rest.find("code=") {
            masked.push_str(&rest[..at + "code=".len()]);
            rest = &rest[at + "code=".len()..];
            let end = rest
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(rest.len());
            masked.push_str("***");
            rest = &rest[end..];
        }
        masked.push_str(rest);
        masked
    }

    /// Stops SAM (SIGTERM: it stops its containers before it exits) and returns the
    /// containers of this run it left behind, after removing them.
    pub fn stop(mut self) -> Vec<String> {
        self.terminate();
        let left: Vec<String> = function_containers()
            .difference(&self.containers_before)
            .cloned()
            .collect();
        if !left.is_empty() {
            output_within(
                Command::new("docker").args(["rm", "--force"]).args(&left),
                DOCKER_DEADLINE,
            );
        }
        left
    }

    fn terminate(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        signal(self.child.id(), libc::SIGTERM);
        let end = Instant::now() + STOP_DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("sam local start-api ignored SIGTERM for {STOP_DEADLINE:?}; killing it");
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for SamLocal {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- sam local start-api log ---\n{}", self.log());
        }
        self.terminate();
    }
}
