//! A local AWS API (moto) for the Secrets Manager tests, checking signatures as AWS does.

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The set-up script: a role, its temporary credentials and the secrets.
const SETUP_SCRIPT: &str = include_str!("scripts/moto_setup.py");

/// A private moto server holding secrets, readable with the temporary credentials of a role
/// allowed `secretsmanager:GetSecretValue`. After its set-up every call must be signed
/// (SigV4) with those credentials: moto recomputes each signature and refuses a mismatch.
pub struct MotoServer {
    pub endpoint: String,
    /// The ARN of the (first) secret.
    pub arn: String,
    /// The ARNs of all the secrets, in the order given.
    pub arns: Vec<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    child: Child,
}

impl MotoServer {
    /// Starts moto with the secret `name` holding `json`.
    pub fn start_with_secret(name: &str, json: &str) -> Self {
        Self::start_with_secrets(&[(name, json)])
    }

    /// Starts moto with one secret per `(name, json)`.
    pub fn start_with_secrets(secrets: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            // The set-up script's calls (three, and one per secret) go unsigned; every later
            // one is checked.
            .env(
                "INITIAL_NO_AUTH_ACTION_COUNT",
                (3 + secrets.len()).to_string(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto is not installed: run scripts/test.sh, which installs it");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut server = Self {
            endpoint: endpoint.clone(),
            arn: String::new(),
            arns: Vec::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            child,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < end,
                "moto server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut setup = Command::new("python3");
        setup.args(["-c", SETUP_SCRIPT, &endpoint]);
        for (name, json) in secrets {
            setup.args([name, json]);
        }
        let output = crate::output_within(&mut setup, Duration::from_secs(60));
        assert!(
            output.status.success(),
            "moto set-up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let setup: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("the set-up script prints JSON");
        let field = |name: &str| setup[name].as_str().expect("set-up field").to_owned();
        server.arns = setup["arns"]
            .as_array()
            .expect("set-up arns")
            .iter()
            .map(|arn| arn.as_str().expect("an ARN").to_owned())
            .collect();
        server.arn = server.arns.first().cloned().expect("at least one secret");
        server.access_key_id = field("accessKeyId");
        server.secret_access_key = field("secretAccessKey");
        server.session_token = field("sessionToken");
        server
    }

    /// The environment Lambda gives a function (its role's temporary credentials and its
    /// region), with the endpoint pointed at this server.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_SESSION_TOKEN", self.session_token.clone()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
