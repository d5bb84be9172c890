//! The `chat-token` binary as Lambda runs it, given an API Gateway v2 event through the
//! AWS_IAM authorizer: the log line of the token it hands out names the caller's IAM ARN,
//! so every token says to whom it went.

use std::collections::HashMap;
use std::time::Duration;

use avatar_tests::base_vars;
use avatar_tests::runtime_api::RuntimeApi;
use avatar_tests::twitch_users::seed_twitch_users;
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig};
use shared::app::App;
use shared::config::Config;

const CHAT_TOKEN_EVENT: &str =
    include_str!("../../../tests/events/apigw-v2-get-chat-token-iam.json");
/// The user the event asks for, and who signed the request.
const USER: u64 = 141_981_764;
const CALLER: &str = "arn:aws:iam::123456789012:user/chat-bot";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_handed_out_is_logged_with_the_iam_caller_it_went_to() {
    // Arrange: the event's user with a stored token; the function's log at info, and only
    // the secrets chat-token is given (no session key).
    let dir = tempfile::tempdir().unwrap();
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(
        "https://avatar.example/auth/twitch/callback",
    ));
    let (twitch_address, _twitch_server) = twitch.spawn(0).await.unwrap();
    let mut vars: HashMap<String, String> = base_vars(dir.path());
    vars.insert("PUBLIC_BASE_URL".into(), "https://avatar.example".into());
    vars.extend(twitch.app_variables(twitch_address));
    let seeding = App::build(Config::from_vars(&vars).unwrap()).await.unwrap();
    seed_twitch_users(&seeding, &twitch, USER, 1).await;
    vars.insert("RUST_LOG".into(), "info".into());
    vars.remove("SESSION_SECRET");
    let runtime = RuntimeApi::start(CHAT_TOKEN_EVENT, Duration::from_secs(10)).await;

    // Act
    let function = runtime.spawn_function(env!("CARGO_BIN_EXE_chat-token"), "chat-token", &vars);
    let answer = runtime
        .result(Duration::from_secs(30))
        .await
        .expect("the function answered");
    let mut log = Vec::new();
    function.read_log_until(
        &mut log,
        "the line of the token handed out",
        Duration::from_secs(30),
        |lines| lines.iter().any(|l| l.contains("chat token handed out")),
    );

    // Assert: the token went out, and its line says to whom (and for whom).
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["statusCode"], 200, "{}", answer.body);
    let line = log
        .iter()
        .find(|l| l.contains("chat token handed out"))
        .unwrap();
    let fields: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(fields["caller"], CALLER, "{line}");
    assert_eq!(fields["streamer"], USER.to_string(), "{line}");
}
