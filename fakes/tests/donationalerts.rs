//! The fake DonationAlerts over real HTTP (a spawned server on a free loopback port).

use std::net::SocketAddr;
use std::time::Duration;

use fake_providers::donationalerts::{
    ApiFailure, FakeDaUser, FakeDonationAlerts, FakeDonationAlertsConfig, NewDonation, PER_PAGE,
    RequestKind,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const REDIRECT_URI: &str = "http://localhost:3000/auth/donationalerts/callback";
const SCOPES: &[&str] = &["oauth-user-show", "oauth-donation-index"];

struct TestDa {
    fake: FakeDonationAlerts,
    addr: SocketAddr,
    http: reqwest::Client,
    server: JoinHandle<()>,
}

impl Drop for TestDa {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestDa {
    async fn start() -> Self {
        let fake = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(REDIRECT_URI));
        let (addr, server) = fake.spawn(0).await.expect("bind a free loopback port");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build the HTTP client");
        Self {
            fake,
            addr,
            http,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/oauth/token"))
            .form(form)
            .send()
            .await
            .expect("token request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("API request")
    }

    fn donate(&self, da_user_id: Option<i64>, amount: Value) -> i64 {
        let donation: NewDonation = serde_json::from_value(json!({
            "da_user_id": da_user_id, "username": "Ivan", "message": "Hello!",
            "amount": amount, "currency": "RUB"
        }))
        .unwrap();
        self.fake.donate(donation).id
    }
}

#[tokio::test]
async fn the_code_flow_issues_tokens_that_read_the_account_and_a_code_works_once() {
    // Arrange
    let da = TestDa::start().await;
    let page = da
        .http
        .get(da.url("/oauth/authorize"))
        .query(&[
            ("client_id", "1000"),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "oauth-user-show oauth-donation-index"),
            ("state", "s1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Demo Streamer"));

    // Act
    let decision = da
        .http
        .post(da.url("/oauth/authorize"))
        .form(&[
            ("client_id", "1000"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "oauth-user-show oauth-donation-index"),
            ("state", "s1"),
            ("decision", "authorize"),
        ])
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(decision.status(), 302);
    let location = url::Url::parse(decision.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(REDIRECT_URI));
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "s1");
    let code = query["code"].clone();
    let exchange = [
        ("grant_type", "authorization_code"),
        ("client_id", "1000"),
        ("client_secret", "demo-da-client-secret"),
        ("redirect_uri", REDIRECT_URI),
        ("code", code.as_str()),
    ];
    let (status, tokens) = da.token(&exchange).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let user: Value = da
        .get("/api/v1/user/oauth", access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(user["data"]["id"], 7_130_000);
    assert_eq!(user["data"]["name"], "Demo Streamer");
    let (again, body) = da.token(&exchange).await;
    assert_eq!(again, 400);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn a_cancelled_consent_redirects_with_access_denied_and_the_state() {
    let da = TestDa::start().await;
    let decision = da
        .http
        .post(da.url("/oauth/authorize"))
        .form(&[
            ("client_id", "1000"),
            ("redirect_uri", REDIRECT_URI),
            ("state", "s2"),
            ("decision", "cancel"),
        ])
        .send()
        .await
        .unwrap();
    let location = decision.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("error=access_denied"), "{location}");
    assert!(location.contains("state=s2"), "{location}");
}

#[tokio::test]
async fn an_unregistered_redirect_uri_gets_an_error_page_and_no_redirect() {
    let da = TestDa::start().await;
    let page = da
        .http
        .get(da.url("/oauth/authorize"))
        .query(&[
            ("client_id", "1000"),
            ("redirect_uri", "https://evil.example/cb"),
            ("response_type", "code"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.headers().get("location").is_none());
}

#[tokio::test]
async fn refreshing_rotates_both_tokens_and_needs_the_granted_scopes() {
    // Arrange
    let da = TestDa::start().await;
    let first = da.fake.issue_tokens(7_130_000, SCOPES);
    let refresh = |token: &str, scope: &str| {
        [
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", "1000".to_owned()),
            ("client_secret", "demo-da-client-secret".to_owned()),
            ("refresh_token", token.to_owned()),
            ("scope", scope.to_owned()),
        ]
    };

    // Act: without the scopes, then with them
    let wrong = refresh(&first.refresh_token, "oauth-user-show");
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (wrong_status, wrong_body) = da.token(&wrong).await;
    let right = refresh(&first.refresh_token, "oauth-user-show oauth-donation-index");
    let right: Vec<(&str, &str)> = right.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, second) = da.token(&right).await;
    let (replay_status, replay) = da.token(&right).await;

    // Assert
    assert_eq!(wrong_status, 400);
    assert_eq!(wrong_body["error"], "invalid_scope");
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first.refresh_token.as_str());
    assert_eq!(replay_status, 400, "an old refresh token is spent");
    assert_eq!(replay["error"], "invalid_request");
    let old = da.get("/api/v1/user/oauth", &first.access_token).await;
    assert_eq!(old.status(), 401, "the old access token died with rotation");
    let new = da
        .get(
            "/api/v1/user/oauth",
            second["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(new.status(), 200);
}

#[tokio::test]
async fn donations_are_listed_newest_first_thirty_a_page_with_links_and_meta() {
    // Arrange
    let da = TestDa::start().await;
    let tokens = da.fake.issue_tokens(7_130_000, SCOPES);
    let ids: Vec<i64> = (0..65).map(|i| da.donate(None, json!(i))).collect();
    da.fake.add_account(FakeDaUser::numbered(42));
    da.donate(Some(42), json!(1));

    // Act
    let mut pages = Vec::new();
    let mut next = Some(da.url("/api/v1/alerts/donations"));
    while let Some(url) = next {
        let page: Value = da
            .http
            .get(&url)
            .bearer_auth(&tokens.access_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        next = page["links"]["next"].as_str().map(str::to_owned);
        pages.push(page);
    }

    // Assert
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0]["data"].as_array().unwrap().len(), PER_PAGE);
    assert_eq!(pages[2]["data"].as_array().unwrap().len(), 5);
    assert_eq!(pages[0]["meta"]["total"], 65);
    assert_eq!(pages[0]["meta"]["last_page"], 3);
    assert_eq!(pages[0]["links"]["prev"], Value::Null);
    let listed: Vec<i64> = pages
        .iter()
        .flat_map(|p| p["data"].as_array().unwrap().clone())
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(listed, expected, "newest first, only this account's");
}

#[tokio::test]
async fn a_control_donation_keeps_anonymous_donors_fractional_amounts_and_text_as_given() {
    // Arrange
    let da = TestDa::start().await;
    let tokens = da.fake.issue_tokens(7_130_000, SCOPES);
    let message = format!("Привет 👋 שלום {}", "x".repeat(1_990));

    // Act
    let created = da
        .http
        .post(da.url("/_control/donations"))
        .json(&json!({"username": null, "message": message, "amount": 12.34, "currency": "KZT"}))
        .send()
        .await
        .unwrap();
    let bad = da
        .http
        .post(da.url("/_control/donations"))
        .json(&json!({"message": "no amount"}))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(bad.status(), 422);
    let listed: Value = da
        .get("/api/v1/alerts/donations", &tokens.access_token)
        .await
        .json()
        .await
        .unwrap();
    let donation = &listed["data"][0];
    assert_eq!(donation, &created);
    assert_eq!(donation["username"], Value::Null);
    assert_eq!(donation["amount"].to_string(), "12.34");
    assert_eq!(donation["message"], message.as_str());
    let created_at = donation["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2019-09-29 09:00:00".len(),
        "{created_at}"
    );
    assert!(!created_at.contains('T') && !created_at.contains('Z'));
}

#[tokio::test]
async fn injected_failures_hit_only_their_account_and_are_logged() {
    // Arrange
    let da = TestDa::start().await;
    da.fake.add_account(FakeDaUser::numbered(1));
    da.fake.add_account(FakeDaUser::numbered(2));
    let one = da.fake.issue_tokens(1, SCOPES);
    let two = da.fake.issue_tokens(2, SCOPES);
    let path = "/api/v1/alerts/donations";

    // Act and assert
    da.fake.set_failure(
        Some(1),
        ApiFailure::TooManyRequests {
            retry_after_secs: Some(7),
        },
    );
    let limited = da.get(path, &one.access_token).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(da.get(path, &two.access_token).await.status(), 200);

    da.fake.set_failure(
        Some(1),
        ApiFailure::TooManyRequests {
            retry_after_secs: None,
        },
    );
    let limited = da.get(path, &one.access_token).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_none());

    da.fake.set_failure(Some(1), ApiFailure::ServerError);
    assert_eq!(da.get(path, &one.access_token).await.status(), 500);

    da.fake.set_failure(Some(1), ApiFailure::MalformedJson);
    let garbage = da.get(path, &one.access_token).await;
    assert_eq!(garbage.status(), 200);
    assert!(garbage.json::<Value>().await.is_err());

    da.fake.set_failure(Some(1), ApiFailure::None);
    assert_eq!(da.get(path, &one.access_token).await.status(), 200);

    let logged = da.fake.requests();
    assert_eq!(logged.len(), 6);
    assert_eq!(logged.iter().filter(|r| r.da_user_id == Some(1)).count(), 5);
    assert_eq!(da.fake.request_count(RequestKind::Donations), 6);
}

#[tokio::test]
async fn revoked_and_expired_tokens_get_401_and_only_expired_ones_can_be_refreshed() {
    let da = TestDa::start().await;
    da.fake.add_account(FakeDaUser::numbered(3));
    let revoked = da.fake.issue_tokens(3, SCOPES);
    let expired = da.fake.issue_tokens(7_130_000, SCOPES);
    da.fake.revoke_tokens_of(3);
    da.fake.expire_access_tokens_of(7_130_000);

    assert_eq!(
        da.get("/api/v1/alerts/donations", &revoked.access_token)
            .await
            .status(),
        401
    );
    let body: Value = da
        .get("/api/v1/alerts/donations", &expired.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["message"], "Unauthenticated.");
    let scope = SCOPES.join(" ");
    let form = |token: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", "1000".to_owned()),
            ("client_secret", "demo-da-client-secret".to_owned()),
            ("refresh_token", token.to_owned()),
            ("scope", scope.clone()),
        ]
    };
    let post = |form: Vec<(&'static str, String)>| {
        let http = da.http.clone();
        let url = da.url("/oauth/token");
        async move { http.post(url).form(&form).send().await.unwrap().status() }
    };
    assert_eq!(post(form(&revoked.refresh_token)).await, 400);
    assert_eq!(post(form(&expired.refresh_token)).await, 200);
}

#[tokio::test]
async fn latency_delays_answers_and_the_window_count_sees_bursts() {
    let da = TestDa::start().await;
    let tokens = da.fake.issue_tokens(7_130_000, SCOPES);
    da.fake.set_latency(Duration::from_millis(20));
    let started = std::time::Instant::now();
    for _ in 0..3 {
        da.get("/api/v1/alerts/donations", &tokens.access_token)
            .await;
    }
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(da.fake.max_requests_in_window(Duration::from_secs(60)), 3);
    assert_eq!(da.fake.max_requests_in_window(Duration::from_nanos(1)), 1);
}
