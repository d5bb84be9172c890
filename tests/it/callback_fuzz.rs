//! Property test: whatever query string and cookies reach the callback, the answer is never
//! a 5xx and nothing is written.

use std::sync::OnceLock;

use avatar_tests::TestApp;
use proptest::prelude::*;
use tower::ServiceExt as _;

/// One app for all cases (built once; proptest cases are synchronous).
fn shared_app() -> &'static (tokio::runtime::Runtime, TestApp) {
    static APP: OnceLock<(tokio::runtime::Runtime, TestApp)> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = runtime.block_on(TestApp::spawn(&[]));
        (runtime, app)
    })
}

fn query_part() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("code".to_owned()),
        Just("state".to_owned()),
        Just("error".to_owned()),
        Just("scope".to_owned()),
        Just("error_description".to_owned()),
        "[a-z%=&+]{0,8}",
    ];
    let value = prop_oneof![
        "[A-Za-z0-9_-]{0,64}",
        "(%[0-9A-Fa-f]{2}){0,16}",
        ".{0,32}".prop_map(|s: String| s.replace(['&', '#', ' '], "")),
    ];
    (key, value).prop_map(|(k, v)| format!("{k}={v}"))
}

fn cookie_header() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "avatar_oauth_twitch=[A-Za-z0-9_.-]{0,100}",
        "avatar_session=[A-Za-z0-9_.-]{0,100}",
        "[ -~]{0,120}",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn random_queries_and_cookies_never_get_a_5xx_or_write(
        parts in prop::collection::vec(query_part(), 0..6),
        cookie in cookie_header(),
    ) {
        let (runtime, app) = shared_app();
        let writes = app.writes();
        let uri = format!("/auth/twitch/callback?{}", parts.join("&"));
        let Ok(mut builder) = std::panic::catch_unwind(|| axum::http::Request::builder().uri(uri.as_str())) else {
            return Ok(());
        };
        if let Some(cookie) = &cookie {
            builder = builder.header("Cookie", cookie.as_str());
        }
        let Ok(request) = builder.body(axum::body::Body::empty()) else {
            // Not a valid HTTP request at all: no server would receive it.
            return Ok(());
        };
        let response = runtime
            .block_on(shared::web::routes::router(app.app.clone()).oneshot(request))
            .unwrap();
        prop_assert!(response.status().is_client_error(), "{} for {uri} {cookie:?}", response.status());
        prop_assert_eq!(app.writes(), writes);
    }
}
