//! SECRETS_ARN against a local Secrets Manager (moto): the secret's values fill the
//! configuration; a bad secret is refused naming SECRETS_ARN.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use avatar_tests::{ChildProcess, MotoServer, workspace_binary};
use shared::config::{Config, KeySource};

const KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

#[tokio::test]
async fn a_lambda_configuration_takes_its_keys_from_the_secret() {
    // Arrange
    let moto = MotoServer::start();
    let arn = moto
        .create_secret(
            "avatar/config",
            &format!(r#"{{"TOKEN_ENCRYPTION_KEY":"{KEY}","SESSION_SECRET":"{KEY}","TWITCH_CLIENT_SECRET":"from-secret"}}"#),
        )
        .await;
    let mut vars: HashMap<String, String> = [
        ("AWS_LAMBDA_FUNCTION_NAME", "health"),
        ("TWITCH_CLIENT_SECRET", "from-environment"),
        // Declared empty in template.yaml (so that sam local can set them): still unset.
        ("TOKEN_ENCRYPTION_KEY", ""),
        ("SESSION_SECRET", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    // Act
    shared::secrets::merge_into(&mut vars, &arn, &moto.sdk_config())
        .await
        .unwrap();
    let config = Config::from_vars(&vars).unwrap();

    // Assert: keys from the secret (no local key file); the environment wins where it sets
    // a value.
    let KeySource::Configured(keys) = &config.keys else {
        panic!("expected the secret's keys, got {:?}", config.keys);
    };
    assert_eq!(
        keys.token_encryption_key.expose(),
        b"01234567890123456789012345678901"
    );
    assert!(keys.generated_key_file.is_none());
    assert_eq!(
        config.twitch.client_secret.as_ref().unwrap().expose(),
        "from-environment"
    );
}

#[tokio::test]
async fn an_unreadable_secret_is_reported_as_secrets_arn() {
    let moto = MotoServer::start();
    let mut vars = HashMap::new();
    let error = shared::secrets::merge_into(
        &mut vars,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing",
        &moto.sdk_config(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.variable, "SECRETS_ARN");
}

#[tokio::test]
async fn avatar_local_reads_secrets_arn_through_the_default_aws_chain() {
    // Arrange: keys only in the secret.
    let moto = MotoServer::start();
    let arn = moto
        .create_secret(
            "avatar/local",
            &format!(r#"{{"TOKEN_ENCRYPTION_KEY":"{KEY}","SESSION_SECRET":"{KEY}"}}"#),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(workspace_binary("avatar-local"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SECRETS_ARN", &arn)
        .env("RUST_LOG", "info")
        .envs(moto.environment())
        .current_dir(dir.path())
        .args(["--port", "0"])
        .stderr(std::process::Stdio::piped());

    // Act
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let process = ChildProcess::adopt(child, stderr);
    let started = (0..20)
        .filter_map(|_| process.next_line(Duration::from_secs(30)))
        .any(|line| line.contains("listening on http://127.0.0.1:"));

    // Assert: it started with the secret's keys, so it generated none.
    assert!(started, "avatar-local did not start");
    assert!(dir.path().join("data.sqlite").exists());
    assert!(!dir.path().join("data.sqlite.keys").exists());
}
