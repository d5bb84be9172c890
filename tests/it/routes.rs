//! The deployed API and the local server list the same paths: every route of the shared
//! route table is an HttpApi event in template.yaml, and nothing else is.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tower::ServiceExt as _;

fn template_routes() -> BTreeSet<(String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path).expect("template.yaml");
    let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("template.yaml is YAML");
    let mut routes = BTreeSet::new();
    for (_, resource) in template["Resources"].as_mapping().expect("Resources") {
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for (_, event) in events {
            if event["Type"].as_str() == Some("HttpApi") {
                let properties = &event["Properties"];
                routes.insert((
                    properties["Method"].as_str().unwrap().to_uppercase(),
                    properties["Path"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    routes
}

#[test]
fn template_http_events_match_the_route_table() {
    let local: BTreeSet<(String, String)> = shared::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(template_routes(), local);
}

#[tokio::test]
async fn the_health_lambda_answers_an_api_gateway_v2_event() {
    // Arrange: a real HTTP API (payload 2.0) event, as API Gateway sends it.
    let app = avatar_tests::TestApp::spawn(&[]).await;
    let request =
        lambda_http::request::from_str(include_str!("../events/apigw-v2-get-health.json"))
            .expect("fixture parses as a Lambda HTTP request");

    // Act: the same router the Lambda hands to lambda_http::run.
    let response = shared::http::router(app.app.clone())
        .oneshot(request)
        .await
        .unwrap();

    // Assert
    assert_eq!(response.status(), 200);
    let body = axum_body_json(response).await;
    assert_eq!(body["scalability"]["mode"], "single-instance");
}

async fn axum_body_json(response: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
