//! A local AWS API (moto) for the Secrets Manager tests.

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A private moto server (a local AWS API) for the Secrets Manager tests.
pub struct MotoServer {
    pub endpoint: String,
    child: Child,
}

impl MotoServer {
    pub fn start() -> Self {
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto is not installed: run scripts/test.sh, which installs it");
        let server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("moto server did not start on port {port}");
    }

    /// An AWS SDK configuration pointed at this server with throwaway credentials.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("test", "test", None, None, "tests"),
                ),
            )
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build()
    }

    /// The environment a process needs to reach this server through the default AWS chain.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            // Never fall through to the instance metadata address.
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Creates a secret holding `json`; returns its ARN.
    pub async fn create_secret(&self, name: &str, json: &str) -> String {
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk_config());
        client
            .create_secret()
            .name(name)
            .secret_string(json)
            .send()
            .await
            .expect("create secret in moto")
            .arn()
            .expect("secret arn")
            .to_owned()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
