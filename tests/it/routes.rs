//! The deployed API and the local server list the same routes: every route of the shared
//! route table is a route of template.yaml's HTTP API, integrated with the function that
//! serves it, and nothing else is; every function of the bundle has its crate and its
//! template resource; each function's router answers its routes; the Lambda handlers answer
//! real API Gateway v2 events.

use std::collections::BTreeSet;

use shared::bundle::{Function, FunctionKind};

use shared::web::routes::{
    LOCAL_ONLY_ROUTES, ROUTE_TABLES, Route, all_routes, function_router, router, table_router,
};
use tower::ServiceExt as _;

use crate::template::Template;

#[test]
fn template_routes_match_the_route_table_function_by_function() {
    let template = Template::load();
    let binaries: std::collections::BTreeMap<String, String> = template
        .functions()
        .into_iter()
        .map(|(binary, id)| (id, binary))
        .collect();
    let deployed: BTreeSet<(String, String, String)> = template
        .routes()
        .into_iter()
        .map(|(method, path, id)| (method, path, binaries[&id].clone()))
        .collect();
    let local: BTreeSet<(String, String, String)> = all_routes()
        .map(|route| {
            (
                route.method.to_string(),
                route.path.to_owned(),
                route.function.binary().to_owned(),
            )
        })
        .collect();
    assert_eq!(deployed, local);
}

#[test]
fn every_function_of_the_bundle_has_its_crate_and_its_template_resource_and_nothing_else_does() {
    // Arrange
    let listed: BTreeSet<String> = Function::ALL
        .iter()
        .map(|f| f.binary().to_owned())
        .collect();
    let crates: BTreeSet<String> = std::fs::read_dir(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../functions"),
    )
    .expect("functions/")
    .map(|entry| entry.expect("entry").file_name().into_string().unwrap())
    .collect();
    let template = Template::load();
    let resources: BTreeSet<String> = template.functions().into_keys().collect();

    // Assert: the same functions everywhere...
    assert_eq!(crates, listed, "functions/ against Function::ALL");
    assert_eq!(resources, listed, "template.yaml against Function::ALL");
    // ...HTTP ones reached through their routes only (no SAM events: the API's routes are
    // resources of their own), scheduled ones by a schedule only.
    for function in Function::ALL {
        let events = template.event_types(&template.function_id(*function));
        let routes = function.routes().count();
        match function.kind() {
            FunctionKind::Http => {
                assert!(routes > 0, "{function:?} serves no route");
                assert!(events.is_empty(), "{function:?}: {events:?}");
            }
            FunctionKind::Scheduled => {
                assert_eq!(routes, 0, "{function:?} is scheduled but has routes");
                assert!(
                    !events.is_empty() && events.iter().all(|e| e.starts_with("Schedule")),
                    "{function:?}: {events:?}"
                );
            }
        }
    }
}

#[test]
fn each_http_function_has_one_table_and_the_table_names_it_alone() {
    let http: Vec<Function> = Function::ALL
        .iter()
        .copied()
        .filter(|f| f.kind() == FunctionKind::Http)
        .collect();
    assert_eq!(ROUTE_TABLES.len(), http.len());
    for function in http {
        let tables: Vec<&&[shared::web::routes::Route]> = ROUTE_TABLES
            .iter()
            .filter(|table| table.iter().any(|route| route.function == function))
            .collect();
        assert_eq!(tables.len(), 1, "{function:?} in {} tables", tables.len());
        assert!(
            tables[0].iter().all(|route| route.function == function),
            "{function:?}'s table names another function"
        );
    }
}

/// Whether `router` serves `route` (answers it with something other than 404 or 405).
async fn serves(router: axum::Router, route: &Route) -> bool {
    let request = axum::http::Request::builder()
        .method(route.method.clone())
        .uri(route.path)
        .body(axum::body::Body::empty())
        .unwrap();
    let status = router.oneshot(request).await.unwrap().status();
    status != 404 && status != 405
}

/// The router a function's binary builds from its own table serves what that function's
/// part of the whole table does.
#[tokio::test]
async fn each_table_router_serves_exactly_its_functions_routes() {
    let app = avatar_tests::TestApp::spawn(&[]).await;
    for table in ROUTE_TABLES {
        let function = table[0].function;
        for route in all_routes() {
            let served = serves(table_router(table, app.app.clone()), route).await;
            assert_eq!(
                served,
                route.function == function,
                "{} {} on {function:?}'s table",
                route.method,
                route.path
            );
        }
    }
}

#[tokio::test]
async fn each_function_router_serves_exactly_its_routes() {
    let app = avatar_tests::TestApp::spawn(&[]).await;
    for route in all_routes() {
        for other in Function::ALL {
            let served = serves(function_router(*other, app.app.clone()), route).await;
            assert_eq!(
                served,
                *other == route.function,
                "{} {} on {other:?}",
                route.method,
                route.path
            );
        }
    }
}

#[tokio::test]
async fn local_only_routes_are_served_by_the_local_server_alone_and_deployed_nowhere() {
    let template = Template::load();
    let deployed: BTreeSet<String> = template
        .routes()
        .into_iter()
        .map(|(_, path, _)| path)
        .collect();
    let app = avatar_tests::TestApp::spawn(&[]).await;
    assert!(!LOCAL_ONLY_ROUTES.is_empty());
    for route in LOCAL_ONLY_ROUTES {
        assert!(
            !deployed.contains(route.path),
            "{} in template.yaml",
            route.path
        );
        assert!(
            all_routes().all(|r| r.path != route.path),
            "{} in the deployed route table",
            route.path
        );
        let request = || {
            axum::http::Request::builder()
                .method(route.method.clone())
                .uri(route.path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let local = router(app.app.clone()).oneshot(request()).await.unwrap();
        assert_eq!(local.status(), 200, "{} on the local server", route.path);
        for function in Function::ALL {
            let response = function_router(*function, app.app.clone())
                .oneshot(request())
                .await
                .unwrap();
            assert_eq!(response.status(), 404, "{} on {function:?}", route.path);
        }
    }
}

async fn lambda_event(function: Function, fixture: &str) -> axum::response::Response {
    let app = avatar_tests::TestApp::spawn(&[]).await;
    let request =
        lambda_http::request::from_str(fixture).expect("fixture parses as a Lambda HTTP request");
    function_router(function, app.app.clone())
        .oneshot(request)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_health_lambda_answers_an_api_gateway_v2_event() {
    let response = lambda_event(
        Function::Health,
        include_str!("../events/apigw-v2-get-health.json"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["scalability"]["mode"], "single-instance");
}

#[tokio::test]
async fn the_auth_start_lambda_redirects_an_api_gateway_v2_event_to_twitch() {
    let response = lambda_event(
        Function::AuthStart,
        include_str!("../events/apigw-v2-get-auth-twitch.json"),
    )
    .await;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.contains("/oauth2/authorize?client_id="),
        "{location}"
    );
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly")
    );
}

#[tokio::test]
async fn the_auth_callback_lambda_refuses_an_api_gateway_v2_event_without_state() {
    let response = lambda_event(
        Function::AuthCallback,
        include_str!("../events/apigw-v2-get-callback-no-state.json"),
    )
    .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn the_pages_lambda_renders_the_landing_page_for_an_api_gateway_v2_event() {
    let response = lambda_event(
        Function::Pages,
        include_str!("../events/apigw-v2-get-landing.json"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("Вход"));
}

/// The chat-token function's answer to an API Gateway event for the logged-in demo user:
/// 200, `no-store`, and its JSON body.
async fn chat_token_lambda_answer(app: &avatar_tests::TestApp, fixture: &str) -> serde_json::Value {
    let request =
        lambda_http::request::from_str(fixture).expect("fixture parses as a Lambda HTTP request");
    let response = function_router(Function::ChatToken, app.app.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_chat_token_lambda_serves_an_iam_authorized_event_without_a_bearer_token() {
    // API Gateway's AWS_IAM authorizer checked the SigV4 signature before the function runs;
    // the function needs no INTERNAL_API_TOKEN and reads nothing into the Authorization header.
    let app = avatar_tests::TestApp::spawn(&[]).await;
    app.browser().log_in().await;

    let body = chat_token_lambda_answer(
        &app,
        include_str!("../events/apigw-v2-get-chat-token-iam.json"),
    )
    .await;

    assert_eq!(body["login"], "demo_streamer");
    assert_eq!(body["accessToken"], app.twitch.issued_tokens()[0].as_str());
}

#[tokio::test]
async fn the_chat_token_lambda_answers_an_iam_authorized_report_of_a_refused_token() {
    // The event's body reports a token older than the stored one: the stored one comes back
    // without a call to Twitch, which proves the body reached the handler through Lambda.
    let app = avatar_tests::TestApp::spawn(&[]).await;
    app.browser().log_in().await;
    let validations = app.twitch.validate_requests();

    let body = chat_token_lambda_answer(
        &app,
        include_str!("../events/apigw-v2-post-chat-token-refused-iam.json"),
    )
    .await;

    assert_eq!(body["accessToken"], app.twitch.issued_tokens()[0].as_str());
    assert_eq!(
        app.twitch.validate_requests(),
        validations,
        "Twitch was not asked"
    );
}
