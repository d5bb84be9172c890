//! SECRETS_ARN against a local Secrets Manager (moto, checking every request's SigV4
//! signature): the secrets' values fill the configuration, several secrets are merged; a bad
//! secret, a variable in two secrets, a wrong key or no credentials are refused naming
//! SECRETS_ARN, without echoing a secret.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use avatar_tests::{ChildProcess, MotoServer, workspace_binary};
use shared::config::{Config, KeySource};

const KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

#[tokio::test]
async fn a_lambda_configuration_takes_its_keys_from_the_secret() {
    // Arrange
    let moto = MotoServer::start_with_secret(
        "avatar/config",
        &format!(
            r#"{{"TOKEN_ENCRYPTION_KEY":"{KEY}","SESSION_SECRET":"{KEY}","TWITCH_CLIENT_SECRET":"from-secret"}}"#
        ),
    );
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
    vars.extend(
        moto.environment()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );

    // Act
    shared::secrets::merge_into(&mut vars, &moto.arn)
        .await
        .unwrap();
    let config = Config::from_vars(&vars).unwrap();

    // Assert: keys from the secret (no local key file); the environment wins where it sets
    // a value.
    let KeySource::Configured(keys) = &config.keys else {
        panic!("expected the secret's keys, got {:?}", config.keys);
    };
    assert_eq!(
        keys.token_encryption_key.as_ref().unwrap().expose(),
        b"01234567890123456789012345678901"
    );
    assert!(keys.generated_key_file.is_none());
    assert_eq!(
        config.twitch.client_secret.as_ref().unwrap().expose(),
        "from-environment"
    );
}

#[tokio::test]
async fn a_function_given_two_secrets_reads_both_and_takes_its_settings_from_each() {
    // Arrange: the session key in one secret, the token key and a client secret in another,
    // as template.yaml splits them.
    let moto = MotoServer::start_with_secrets(&[
        (
            "avatar/session",
            &format!(r#"{{"SESSION_SECRET":"{KEY}"}}"#),
        ),
        (
            "avatar/tokens",
            &format!(r#"{{"TOKEN_ENCRYPTION_KEY":"{KEY}","TWITCH_CLIENT_SECRET":"from-secret"}}"#),
        ),
    ]);
    let mut vars = vars_of(moto.environment());
    vars.insert("AWS_LAMBDA_FUNCTION_NAME".into(), "auth-callback".into());
    let arns = moto.arns.join(",");

    // Act
    shared::secrets::merge_into(&mut vars, &arns).await.unwrap();
    let config = Config::from_vars(&vars).unwrap();

    // Assert
    let KeySource::Configured(keys) = &config.keys else {
        panic!("expected the secrets' keys, got {:?}", config.keys);
    };
    assert!(keys.session_secret.is_some() && keys.token_encryption_key.is_some());
    assert_eq!(
        config.twitch.client_secret.as_ref().unwrap().expose(),
        "from-secret"
    );
}

#[tokio::test]
async fn a_variable_in_two_secrets_is_refused_naming_both_without_its_values() {
    // Arrange
    let moto = MotoServer::start_with_secrets(&[
        ("avatar/one", &format!(r#"{{"SESSION_SECRET":"{KEY}"}}"#)),
        (
            "avatar/two",
            r#"{"SESSION_SECRET":"c2Vjb25kLXZhbHVlLW9mLXRoZS1rZXk="}"#,
        ),
    ]);
    let mut vars = vars_of(moto.environment());

    // Act
    let error = shared::secrets::merge_into(&mut vars, &moto.arns.join(","))
        .await
        .unwrap_err();

    // Assert
    assert_eq!(error.variable, "SECRETS_ARN");
    for named in ["SESSION_SECRET", "avatar/one", "avatar/two"] {
        assert!(error.problem.contains(named), "{named}: {}", error.problem);
    }
    for value in [KEY, "c2Vjb25kLXZhbHVlLW9mLXRoZS1rZXk"] {
        assert!(!error.to_string().contains(value), "{error}");
    }
    assert!(!vars.contains_key("SESSION_SECRET"), "nothing is filled in");
}

fn vars_of(environment: Vec<(&'static str, String)>) -> HashMap<String, String> {
    environment
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

#[tokio::test]
async fn an_unreadable_secret_is_reported_as_secrets_arn() {
    let moto = MotoServer::start_with_secret("avatar/config", "{}");
    let mut vars = vars_of(moto.environment());
    let error = shared::secrets::merge_into(
        &mut vars,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing",
    )
    .await
    .unwrap_err();
    assert_eq!(error.variable, "SECRETS_ARN");
    assert!(
        error.problem.contains("ResourceNotFoundException"),
        "{}",
        error.problem
    );
}

#[tokio::test]
async fn a_request_signed_with_the_wrong_key_is_refused_and_the_key_is_not_echoed() {
    // Arrange: the right key id and session token, a different secret key.
    let moto =
        MotoServer::start_with_secret("avatar/config", &format!(r#"{{"SESSION_SECRET":"{KEY}"}}"#));
    let mut vars = vars_of(moto.environment());
    let wrong_key = format!("{}x", moto.secret_access_key);
    vars.insert("AWS_SECRET_ACCESS_KEY".into(), wrong_key.clone());

    // Act
    let error = shared::secrets::merge_into(&mut vars, &moto.arn)
        .await
        .unwrap_err();

    // Assert: moto recomputed the signature and refused it; nothing was filled in.
    assert_eq!(error.variable, "SECRETS_ARN");
    assert!(
        error.problem.contains("SignatureDoesNotMatch"),
        "{}",
        error.problem
    );
    for secret in [wrong_key.as_str(), moto.session_token.as_str(), KEY] {
        assert!(!error.to_string().contains(secret));
    }
    assert!(!vars.contains_key("SESSION_SECRET"));
}

#[tokio::test]
async fn without_credentials_the_secret_is_not_requested() {
    let mut vars = vars_of(vec![(
        "AWS_ENDPOINT_URL",
        // Nothing listens here: asking would fail differently.
        "http://127.0.0.1:9".to_owned(),
    )]);
    let error = shared::secrets::merge_into(
        &mut vars,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:avatar",
    )
    .await
    .unwrap_err();
    assert_eq!(error.variable, "SECRETS_ARN");
    assert!(
        error.problem.contains("AWS_ACCESS_KEY_ID"),
        "{}",
        error.problem
    );
}

#[tokio::test]
async fn avatar_local_reads_secrets_arn_with_credentials_from_its_environment() {
    // Arrange: keys only in the secret.
    let moto = MotoServer::start_with_secret(
        "avatar/local",
        &format!(r#"{{"TOKEN_ENCRYPTION_KEY":"{KEY}","SESSION_SECRET":"{KEY}"}}"#),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(workspace_binary("avatar-local"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SECRETS_ARN", &moto.arn)
        .env("RUST_LOG", "info")
        .envs(moto.environment())
        .current_dir(dir.path())
        .args(["--port", "0"])
        .stderr(std::process::Stdio::piped());

    // Act
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let process = ChildProcess::adopt(child, stderr);
    let mut log = Vec::new();
    process.read_until(
        &mut log,
        "avatar-local to listen",
        Duration::from_secs(30),
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("listening on http://127.0.0.1:"))
        },
    );

    // Assert: it started with the secret's keys, so it generated none.
    assert!(dir.path().join("data.sqlite").exists());
    assert!(!dir.path().join("data.sqlite.keys").exists());
}
