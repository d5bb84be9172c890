//! The `chat-token` binary as Lambda runs it, under a Runtime API emulator with real API
//! Gateway v2 events: a request that changes no figure prints nothing on stdout; one whose
//! token had to be refreshed prints one valid CloudWatch EMF record counting the refresh.

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
/// The user the event asks for.
const USER: u64 = 141_981_764;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_request_that_changed_a_figure_prints_an_emf_record() {
    // Arrange: the event's user, whose token expires within the (day-long) refresh margin.
    let dir = tempfile::tempdir().unwrap();
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(
        "https://avatar.example/auth/twitch/callback",
    ));
    let (twitch_address, _twitch_server) = twitch.spawn(0).await.unwrap();
    let mut vars: HashMap<String, String> = base_vars(dir.path());
    vars.extend([
        (
            "PUBLIC_BASE_URL".to_owned(),
            "https://avatar.example".to_owned(),
        ),
        ("TOKEN_REFRESH_MARGIN_MS".to_owned(), "86400000".to_owned()),
        ("STACK_NAME".to_owned(), "avatar-test-stack".to_owned()),
    ]);
    vars.extend(twitch.app_variables(twitch_address));
    let seeding = App::build(Config::from_vars(&vars).unwrap()).await.unwrap();
    seed_twitch_users(&seeding, &twitch, USER, 1).await;
    let unknown_user_event = CHAT_TOKEN_EVENT.replace(&USER.to_string(), "42");
    let runtime = RuntimeApi::start(&unknown_user_event, Duration::from_secs(10)).await;

    // Act: a cold invocation for a user nobody knows, then a warm one for the stored user.
    let function = runtime.spawn_function(env!("CARGO_BIN_EXE_chat-token"), "chat-token", &vars);
    let unknown = runtime
        .nth_result(0, Duration::from_secs(30))
        .await
        .expect("the function answered");
    runtime.invoke(CHAT_TOKEN_EVENT, Duration::from_secs(10));
    let refreshed = runtime
        .nth_result(1, Duration::from_secs(30))
        .await
        .expect("the function answered again");

    // Assert: 404, then the token, refreshed…
    let status =
        |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["statusCode"].clone();
    assert_eq!(status(&unknown.body), 404, "{}", unknown.body);
    assert_eq!(status(&refreshed.body), 200, "{}", refreshed.body);
    // … and stdout's first line is the second request's record: the first printed none.
    let line = function
        .next_line(Duration::from_secs(10))
        .expect("an EMF record");
    let record = avatar_tests::emf::parse_record(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(record["Function"], "chat-token");
    assert_eq!(record["Stack"], "avatar-test-stack");
    assert_eq!(record["TokenRefreshes"], 1, "{line}");
    assert_eq!(record["NeedReauth"], 0, "{line}");
    assert!(
        record["WriterBatchSize"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "the refresh was written: {line}"
    );
}
