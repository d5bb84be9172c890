//! The deployed API and the local server list the same routes: every route of the shared
//! route table is an HttpApi event of the function that serves it in template.yaml, and
//! nothing else is; every function of the bundle has its crate and its template resource;
//! each function's router answers its routes; the Lambda handlers answer real API Gateway
//! v2 events.

use std::collections::BTreeSet;
use std::path::PathBuf;

use shared::http::{Function, FunctionKind, ROUTES, function_router};
use tower::ServiceExt as _;

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// template.yaml, parsed (intrinsics such as `!Ref` are tagged values).
pub(crate) fn template() -> serde_yaml::Value {
    let text = std::fs::read_to_string(workspace_file("template.yaml")).expect("template.yaml");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

/// (binary, event types) of every function resource in template.yaml.
fn template_functions() -> Vec<(String, BTreeSet<String>)> {
    let template = template();
    let mut functions = Vec::new();
    for (_, resource) in template["Resources"].as_mapping().expect("Resources") {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        let events = resource["Properties"]["Events"]
            .as_mapping()
            .map(|events| {
                events
                    .values()
                    .filter_map(|e| e["Type"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        functions.push((binary, events));
    }
    functions
}

/// (method, path, binary) of every HttpApi event in template.yaml.
fn template_routes() -> BTreeSet<(String, String, String)> {
    let template = template();
    let mut routes = BTreeSet::new();
    for (_, resource) in template["Resources"].as_mapping().expect("Resources") {
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        for (_, event) in events {
            if event["Type"].as_str() == Some("HttpApi") {
                let properties = &event["Properties"];
                routes.insert((
                    properties["Method"].as_str().unwrap().to_uppercase(),
                    properties["Path"].as_str().unwrap().to_owned(),
                    binary.clone(),
                ));
            }
        }
    }
    routes
}

#[test]
fn template_http_events_match_the_route_table_function_by_function() {
    let local: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .map(|route| {
            (
                route.method.to_string(),
                route.path.to_owned(),
                route.function.binary().to_owned(),
            )
        })
        .collect();
    assert_eq!(template_routes(), local);
}

#[test]
fn every_function_of_the_bundle_has_its_crate_and_its_template_resource_and_nothing_else_does() {
    // Arrange
    let listed: BTreeSet<String> = Function::ALL
        .iter()
        .map(|f| f.binary().to_owned())
        .collect();
    let crates: BTreeSet<String> = std::fs::read_dir(workspace_file("functions"))
        .expect("functions/")
        .map(|entry| entry.expect("entry").file_name().into_string().unwrap())
        .collect();
    let template = template_functions();
    let resources: BTreeSet<String> = template.iter().map(|(b, _)| b.clone()).collect();

    // Assert: the same functions everywhere...
    assert_eq!(crates, listed, "functions/ against Function::ALL");
    assert_eq!(resources, listed, "template.yaml against Function::ALL");
    // ...HTTP ones triggered by their routes only, scheduled ones by a schedule only.
    for function in Function::ALL {
        let (_, events) = template
            .iter()
            .find(|(b, _)| b == function.binary())
            .expect("in the template");
        let routes = function.routes().count();
        match function.kind() {
            FunctionKind::Http => {
                assert!(routes > 0, "{function:?} serves no route");
                assert!(
                    events.iter().all(|e| e == "HttpApi"),
                    "{function:?}: {events:?}"
                );
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

#[tokio::test]
async fn each_function_router_serves_exactly_its_routes() {
    let app = avatar_tests::TestApp::spawn(&[]).await;
    for route in ROUTES {
        for other in Function::ALL {
            let request = axum::http::Request::builder()
                .method(route.method.clone())
                .uri(route.path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = function_router(*other, app.app.clone())
                .oneshot(request)
                .await
                .unwrap();
            let served = response.status() != 404 && response.status() != 405;
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
