//! Every HTTP function's binary as Lambda runs it: under the Runtime API emulator, given a
//! real API Gateway v2 event, with a private Redis on loopback, the database in `delete`
//! journal mode (as on EFS) and only the secret settings its handlers use (as template.yaml
//! gives them), it answers what the route should. (The scheduled functions'
//! binaries have their own runtime tests in their crates.)

use std::time::Duration;

use avatar_tests::runtime_api::{RuntimeApi, lambda_vars};
use avatar_tests::{RedisServer, workspace_binary};
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig};
use shared::bundle::{Function, FunctionKind};
use shared::secrets::{SecretPurpose, needed_by};

/// (function, event, the status its answer must carry, a piece of its body or location).
const CASES: &[(Function, &str, u16, &str)] = &[
    (
        Function::Health,
        include_str!("../events/apigw-v2-get-health.json"),
        200,
        "distributed",
    ),
    (
        Function::AuthStart,
        include_str!("../events/apigw-v2-get-auth-twitch.json"),
        302,
        "/oauth2/authorize?client_id=",
    ),
    (
        Function::AuthCallback,
        include_str!("../events/apigw-v2-get-callback-no-state.json"),
        400,
        "state_missing",
    ),
    (
        Function::Pages,
        include_str!("../events/apigw-v2-get-landing.json"),
        200,
        "/auth/twitch",
    ),
    (
        Function::ChatToken,
        include_str!("../events/apigw-v2-get-chat-token-iam.json"),
        404,
        "unknown_user",
    ),
    (
        Function::ChatToken,
        include_str!("../events/apigw-v2-post-chat-token-refused-iam.json"),
        404,
        "unknown_user",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_function_binary_answers_its_api_gateway_event_under_the_runtime_api() {
    let covered: Vec<Function> = CASES.iter().map(|(function, ..)| *function).collect();
    for function in Function::ALL {
        assert_eq!(
            covered.contains(function),
            function.kind() == FunctionKind::Http,
            "{function:?}: every HTTP function has a case here, and only they"
        );
    }
    let redis = RedisServer::start();
    let twitch = FakeTwitch::new(FakeTwitchConfig::demo(
        "https://avatar.example/auth/twitch/callback",
    ));
    let (twitch_address, _twitch_server) = twitch.spawn(0).await.unwrap();

    for (function, event, status, expected) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = lambda_vars(dir.path(), &redis.url());
        vars.extend(twitch.app_variables(twitch_address));
        // As in AWS: the variables of the secrets the function is not given are unset.
        let given = needed_by(*function);
        for purpose in SecretPurpose::ALL.iter().filter(|p| !given.contains(p)) {
            for name in purpose.variables() {
                vars.remove(*name);
            }
        }
        let runtime = RuntimeApi::start(event, Duration::from_secs(10)).await;
        let binary = workspace_binary(function.binary());
        let _process = runtime.spawn_function(
            binary.to_str().expect("a UTF-8 path"),
            function.binary(),
            &vars,
        );

        let result = runtime
            .result(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{function:?} did not answer"));

        assert!(result.ok, "{function:?}: {}", result.body);
        let answer: serde_json::Value = serde_json::from_str(&result.body).unwrap();
        assert_eq!(answer["statusCode"], *status, "{function:?}: {answer}");
        let text = answer.to_string();
        assert!(
            text.contains(expected),
            "{function:?}: {expected} in {text}"
        );
        let journal = dir.path().join("data.sqlite-wal");
        assert!(!journal.exists(), "{function:?}: no WAL in delete mode");
    }
}
