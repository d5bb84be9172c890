//! The fake Twitch over real HTTP (a spawned server on a free loopback port), plus a few
//! in-process requests where the clock has to be paused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fake_providers::twitch::{FakeTwitch, FakeTwitchConfig, FakeUser, TokenFailure};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower::ServiceExt;

const REDIRECT_URI: &str = "http://localhost:3000/auth/twitch/callback";

/// Form fields or query parameters, in order.
type Pairs<'a> = &'a [(&'a str, &'a str)];

/// A spawned fake and a client that does not follow redirects, so they can be inspected.
struct TestTwitch {
    fake: FakeTwitch,
    addr: SocketAddr,
    http: reqwest::Client,
    server: JoinHandle<()>,
}

impl Drop for TestTwitch {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A successful token response, as the application reads it.
struct Tokens {
    access: String,
    refresh: String,
}

impl TestTwitch {
    async fn start() -> Self {
        Self::start_with(FakeTwitchConfig::demo(REDIRECT_URI)).await
    }

    async fn start_with(config: FakeTwitchConfig) -> Self {
        let fake = FakeTwitch::new(config);
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

    fn client_id(&self) -> &'static str {
        "demo0client0id0000000000000000"
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn authorize_page(&self, params: &[(&str, &str)]) -> reqwest::Response {
        let url = format!("{}/authorize", FakeTwitch::auth_base_url(self.addr));
        self.http
            .get(url)
            .query(params)
            .send()
            .await
            .expect("GET /oauth2/authorize")
    }

    async fn post_decision(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url("/oauth2/authorize"))
            .form(form)
            .send()
            .await
            .expect("POST /oauth2/authorize")
    }

    /// Consents with the demo client and returns the code from the redirect.
    async fn log_in(&self, scope: &str) -> String {
        let response = self
            .post_decision(&[
                ("client_id", self.client_id()),
                ("redirect_uri", REDIRECT_URI),
                ("scope", scope),
                ("state", "s"),
                ("decision", "authorize"),
            ])
            .await;
        assert_eq!(response.status(), StatusCode::FOUND);
        location_query(&response)
            .remove("code")
            .expect("a code in the redirect")
    }

    async fn post_token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url("/oauth2/token"))
            .form(form)
            .send()
            .await
            .expect("POST /oauth2/token")
    }

    async fn exchange(&self, code: &str) -> reqwest::Response {
        self.post_token(&[
            ("client_id", self.client_id()),
            ("client_secret", "demo-client-secret"),
            ("code", code),
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT_URI),
        ])
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_token(&[
            ("client_id", self.client_id()),
            ("client_secret", "demo-client-secret"),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Logs in and exchanges the code.
    async fn tokens(&self, scope: &str) -> Tokens {
        let code = self.log_in(scope).await;
        let response = self.exchange(&code).await;
        assert_eq!(response.status(), StatusCode::OK);
        tokens_of(json_of(response).await)
    }

    async fn validate(&self, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url("/oauth2/validate"));
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.send().await.expect("GET /oauth2/validate")
    }

    async fn users(
        &self,
        authorization: Option<&str>,
        client_id: Option<&str>,
        query: &[(&str, &str)],
    ) -> reqwest::Response {
        let url = format!("{}/users", FakeTwitch::api_base_url(self.addr));
        let mut request = self.http.get(url).query(query);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        if let Some(value) = client_id {
            request = request.header("Client-Id", value);
        }
        request.send().await.expect("GET /helix/users")
    }

    async fn revoke(&self, client_id: &str, token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/oauth2/revoke"))
            .form(&[("client_id", client_id), ("token", token)])
            .send()
            .await
            .expect("POST /oauth2/revoke")
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn tokens_of(body: Value) -> Tokens {
    let text = |name: &str| {
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .to_owned()
    };
    Tokens {
        access: text("access_token"),
        refresh: text("refresh_token"),
    }
}

/// The query of a redirect's `Location`, which must point at the registered URI.
fn location_query(response: &reqwest::Response) -> HashMap<String, String> {
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .expect("a Location header");
    let url = url::Url::parse(location).expect("an absolute Location");
    assert_eq!(
        format!("{}://{}{}", url.scheme(), url.authority(), url.path()),
        REDIRECT_URI
    );
    url.query_pairs().into_owned().collect()
}

/// `name`/`value` of every hidden input of a page, unescaped, in page order.
fn hidden_fields(page: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + tag[start..].find('"')?;
        Some(
            tag[start..end]
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    page.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value")?)))
        .collect()
}

#[tokio::test]
async fn the_full_code_flow_logs_the_demo_user_in() {
    let twitch = TestTwitch::start().await;

    // The consent page carries what the browser posts back.
    let page = twitch
        .authorize_page(&[
            ("client_id", twitch.client_id()),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "chat:read user:read:chat"),
            ("state", "c3ab8aa6"),
        ])
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|value| value.starts_with("text/html"))
    );
    let page = page.text().await.expect("page text");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<meta charset=\"utf-8\">"));
    assert!(page.contains("<title>Authorize application</title>"));
    assert!(page.contains("Demo Streamer"));
    assert!(page.contains("chat:read") && page.contains("user:read:chat"));
    assert!(!page.contains("<script"));
    assert_eq!(page.matches("<form").count(), 1);
    assert!(page.contains("<form method=\"post\" action=\"/oauth2/authorize\">"));
    assert!(page.contains(
        "<button type=\"submit\" name=\"decision\" value=\"authorize\" id=\"authorize\">Authorize</button>"
    ));
    assert!(page.contains(
        "<button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"cancel\">Cancel</button>"
    ));

    // The user clicks Authorize.
    let mut form = hidden_fields(&page);
    form.push(("decision".to_owned(), "authorize".to_owned()));
    let decision = twitch.post_decision(&form_refs(&form)).await;
    assert_eq!(decision.status(), StatusCode::FOUND);
    let location = decision.headers()[header::LOCATION]
        .to_str()
        .expect("ASCII Location")
        .to_owned();
    assert!(
        location.contains("&scope=chat%3Aread+user%3Aread%3Achat&state=c3ab8aa6"),
        "{location}"
    );
    let callback = location_query(&decision);
    assert_eq!(callback["state"], "c3ab8aa6");
    assert_eq!(callback["scope"], "chat:read user:read:chat");
    let code = &callback["code"];
    assert_eq!(code.len(), 30);

    // The application exchanges the code.
    let exchange = twitch.exchange(code).await;
    assert_eq!(exchange.status(), StatusCode::OK);
    let body = json_of(exchange).await;
    assert_eq!(body["expires_in"], 14400);
    assert_eq!(body["scope"], json!(["chat:read", "user:read:chat"]));
    assert_eq!(body["token_type"], "bearer");
    let tokens = tokens_of(body);
    assert_eq!(tokens.access.len(), 30);
    assert_eq!(tokens.refresh.len(), 50);
    for token in [&tokens.access, &tokens.refresh] {
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
    assert_eq!(
        twitch.fake.issued_tokens(),
        [tokens.access.clone(), tokens.refresh.clone()]
    );

    // It validates the token...
    let validate = twitch
        .validate(Some(&format!("OAuth {}", tokens.access)))
        .await;
    assert_eq!(validate.status(), StatusCode::OK);
    assert_eq!(
        json_of(validate).await,
        json!({
            "client_id": twitch.client_id(),
            "login": "demo_streamer",
            "scopes": ["chat:read", "user:read:chat"],
            "user_id": "141981764",
            "expires_in": 14400,
        })
    );

    // ...and fetches the user.
    let users = twitch
        .users(
            Some(&format!("Bearer {}", tokens.access)),
            Some(twitch.client_id()),
            &[],
        )
        .await;
    assert_eq!(users.status(), StatusCode::OK);
    assert_eq!(users.headers()["ratelimit-limit"], "800");
    assert_eq!(
        json_of(users).await,
        json!({"data": [{
            "id": "141981764",
            "login": "demo_streamer",
            "display_name": "Demo Streamer",
            "type": "",
            "broadcaster_type": "",
            "description": "",
            "profile_image_url": format!("http://{}/avatar.svg", twitch.addr),
            "offline_image_url": "",
            "view_count": 0,
            "created_at": "2016-12-14T20:32:28Z",
        }]})
    );
}

fn form_refs(form: &[(String, String)]) -> Vec<(&str, &str)> {
    form.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

#[tokio::test]
async fn the_authorize_page_escapes_what_it_echoes_and_posts_it_back_intact() {
    let twitch = TestTwitch::start().await;
    let state = r#""><script>alert('x')</script>&"#;

    let page = twitch
        .authorize_page(&[
            ("client_id", twitch.client_id()),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "<b>chat:read</b>"),
            ("state", state),
        ])
        .await
        .text()
        .await
        .expect("page text");

    assert!(!page.contains("<script>") && !page.contains("<b>"));
    assert!(page.contains("&lt;b&gt;chat:read&lt;/b&gt;"));
    let fields: HashMap<_, _> = hidden_fields(&page).into_iter().collect();
    assert_eq!(fields["state"], state);
    assert_eq!(fields["scope"], "<b>chat:read</b>");
}

#[tokio::test]
async fn every_authorize_request_is_recorded_with_its_query_parameters() {
    let twitch = TestTwitch::start().await;

    twitch
        .authorize_page(&[
            ("client_id", twitch.client_id()),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "chat:read"),
            ("state", "abc"),
            ("force_verify", "true"),
        ])
        .await;
    twitch.authorize_page(&[("client_id", "nobody")]).await;

    let requests = twitch.fake.authorize_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["force_verify"], "true");
    assert_eq!(requests[0]["scope"], "chat:read");
    assert_eq!(requests[0]["redirect_uri"], REDIRECT_URI);
    assert_eq!(
        requests[1],
        HashMap::from([("client_id".to_owned(), "nobody".to_owned())])
    );
}

#[tokio::test]
async fn an_unregistered_redirect_uri_gets_a_400_page_and_no_redirect() {
    let twitch = TestTwitch::start().await;
    // A prefix of the registered URI is not the registered URI.
    for redirect_uri in [
        "http://evil.example/callback",
        "http://localhost:3000/auth/twitch/callback/",
        "http://localhost:3000/auth/twitch",
    ] {
        let page = twitch
            .authorize_page(&[
                ("client_id", twitch.client_id()),
                ("redirect_uri", redirect_uri),
                ("response_type", "code"),
                ("scope", "chat:read"),
            ])
            .await;
        assert_eq!(page.status(), StatusCode::BAD_REQUEST, "{redirect_uri}");
        assert!(page.headers().get(header::LOCATION).is_none());
        let text = page.text().await.expect("page text");
        assert!(text.contains("redirect_uri does not match"), "{text}");

        // Posting the decision directly does not redirect there either.
        let decision = twitch
            .post_decision(&[
                ("client_id", twitch.client_id()),
                ("redirect_uri", redirect_uri),
                ("decision", "authorize"),
            ])
            .await;
        assert_eq!(decision.status(), StatusCode::BAD_REQUEST);
        assert!(decision.headers().get(header::LOCATION).is_none());
    }
}

#[tokio::test]
async fn an_unknown_client_or_a_response_type_other_than_code_gets_a_400_page() {
    let twitch = TestTwitch::start().await;
    let cases = [
        [
            ("client_id", "unknown0client"),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
        ],
        [
            ("client_id", twitch.client_id()),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "token"),
        ],
    ];
    for params in cases {
        let page = twitch.authorize_page(&params).await;
        assert_eq!(page.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert!(page.headers().get(header::LOCATION).is_none());
        let text = page.text().await.expect("page text");
        assert!(text.contains("<title>Authorization error</title>"));
    }
}

#[tokio::test]
async fn cancel_redirects_with_access_denied_and_the_state() {
    let twitch = TestTwitch::start().await;

    let response = twitch
        .post_decision(&[
            ("client_id", twitch.client_id()),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "chat:read"),
            ("state", "xyz"),
            ("decision", "cancel"),
        ])
        .await;

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()[header::LOCATION],
        format!(
            "{REDIRECT_URI}?error=access_denied&error_description=The+user+denied+you+access&state=xyz"
        )
    );
    assert!(twitch.fake.issued_tokens().is_empty());
}

#[tokio::test]
async fn the_redirect_has_no_state_when_none_was_given() {
    let twitch = TestTwitch::start().await;

    let response = twitch
        .post_decision(&[
            ("client_id", twitch.client_id()),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "chat:read"),
            ("decision", "authorize"),
        ])
        .await;

    let query = location_query(&response);
    assert!(query.contains_key("code"));
    assert!(!query.contains_key("state"));
}

#[tokio::test]
async fn a_code_can_be_exchanged_only_once() {
    let twitch = TestTwitch::start().await;
    let code = twitch.log_in("chat:read").await;

    assert_eq!(twitch.exchange(&code).await.status(), StatusCode::OK);
    let again = twitch.exchange(&code).await;

    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(again).await,
        json!({"status": 400, "message": "Invalid authorization code"})
    );
    assert_eq!(twitch.fake.issued_tokens().len(), 2);
}

#[tokio::test]
async fn an_unknown_code_is_refused() {
    let twitch = TestTwitch::start().await;

    let response = twitch.exchange("notacode").await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(response).await,
        json!({"status": 400, "message": "Invalid authorization code"})
    );
}

#[tokio::test]
async fn an_exchange_with_another_redirect_uri_is_refused_and_leaves_the_code_usable() {
    let twitch = TestTwitch::start_with(FakeTwitchConfig {
        redirect_uris: vec![
            REDIRECT_URI.to_owned(),
            "http://127.0.0.1:3000/cb".to_owned(),
        ],
        ..FakeTwitchConfig::demo(REDIRECT_URI)
    })
    .await;
    let code = twitch.log_in("chat:read").await;

    let response = twitch
        .post_token(&[
            ("client_id", twitch.client_id()),
            ("client_secret", "demo-client-secret"),
            ("code", &code),
            ("grant_type", "authorization_code"),
            ("redirect_uri", "http://127.0.0.1:3000/cb"),
        ])
        .await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(response).await,
        json!({"status": 400, "message": "Parameter redirect_uri does not match registered URI"})
    );
    assert_eq!(twitch.exchange(&code).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn client_credentials_are_checked_before_the_grant() {
    let twitch = TestTwitch::start().await;
    let code = twitch.log_in("chat:read").await;
    let cases: [(Pairs, StatusCode, Value); 4] = [
        (
            &[("client_secret", "demo-client-secret")],
            StatusCode::BAD_REQUEST,
            json!({"status": 400, "message": "missing client id"}),
        ),
        (
            &[
                ("client_id", "other"),
                ("client_secret", "demo-client-secret"),
            ],
            StatusCode::BAD_REQUEST,
            json!({"status": 400, "message": "invalid client"}),
        ),
        (
            &[
                ("client_id", "demo0client0id0000000000000000"),
                ("client_secret", "wrong"),
            ],
            StatusCode::FORBIDDEN,
            json!({"status": 403, "message": "invalid client secret"}),
        ),
        (
            &[("client_id", "demo0client0id0000000000000000")],
            StatusCode::FORBIDDEN,
            json!({"status": 403, "message": "invalid client secret"}),
        ),
    ];

    for (credentials, status, body) in cases {
        let mut form = credentials.to_vec();
        form.extend([
            ("code", code.as_str()),
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT_URI),
        ]);
        let response = twitch.post_token(&form).await;
        assert_eq!(response.status(), status, "{credentials:?}");
        assert_eq!(json_of(response).await, body);
    }
    // None of them used the code up.
    assert_eq!(twitch.exchange(&code).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_secret_in_the_query_string_is_not_accepted() {
    let twitch = TestTwitch::start().await;
    let code = twitch.log_in("chat:read").await;

    let response = twitch
        .http
        .post(twitch.url("/oauth2/token"))
        .query(&[("client_secret", "demo-client-secret")])
        .form(&[
            ("client_id", twitch.client_id()),
            ("code", code.as_str()),
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT_URI),
        ])
        .send()
        .await
        .expect("POST /oauth2/token");

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_unsupported_grant_type_is_refused() {
    let twitch = TestTwitch::start().await;

    let response = twitch
        .post_token(&[
            ("client_id", twitch.client_id()),
            ("client_secret", "demo-client-secret"),
            ("grant_type", "password"),
        ])
        .await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(response).await,
        json!({"status": 400, "message": "unsupported grant type"})
    );
}

#[tokio::test]
async fn refreshing_rotates_both_tokens_and_refuses_the_old_refresh_token() {
    let twitch = TestTwitch::start().await;
    let first = twitch.tokens("chat:read chat:edit").await;

    let response = twitch.refresh(&first.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["scope"], json!(["chat:read", "chat:edit"]));
    assert_eq!(body["token_type"], "bearer");
    let second = tokens_of(body);
    assert_ne!(second.access, first.access);
    assert_ne!(second.refresh, first.refresh);

    let reused = twitch.refresh(&first.refresh).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(reused).await,
        json!({"error": "Bad Request", "status": 400, "message": "Invalid refresh token"})
    );

    // The new access token works; the old one keeps working until it dies.
    for access in [&second.access, &first.access] {
        let validate = twitch.validate(Some(&format!("OAuth {access}"))).await;
        assert_eq!(validate.status(), StatusCode::OK);
    }
    assert_eq!(
        twitch.refresh(&second.refresh).await.status(),
        StatusCode::OK
    );
    assert_eq!(twitch.fake.issued_tokens().len(), 6);
}

#[tokio::test]
async fn an_unknown_refresh_token_is_refused() {
    let twitch = TestTwitch::start().await;

    let response = twitch.refresh("nosuchtoken").await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(response).await["message"], "Invalid refresh token");
}

#[tokio::test]
async fn a_revoked_token_is_dead_for_validate_and_helix() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("chat:read").await;

    let response = twitch.revoke(twitch.client_id(), &tokens.access).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.expect("body").is_empty());

    let validate = twitch
        .validate(Some(&format!("OAuth {}", tokens.access)))
        .await;
    assert_eq!(validate.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(validate).await,
        json!({"status": 401, "message": "invalid access token"})
    );
    let users = twitch
        .users(
            Some(&format!("Bearer {}", tokens.access)),
            Some(twitch.client_id()),
            &[],
        )
        .await;
    assert_eq!(users.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(users).await,
        json!({"error": "Unauthorized", "status": 401, "message": "Invalid OAuth token"})
    );
    assert_eq!(twitch.fake.revoked_tokens(), [tokens.access]);
}

#[tokio::test]
async fn revoke_refuses_an_unknown_client_and_a_token_that_is_not_live() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("chat:read").await;

    let unknown_client = twitch.revoke("nobody", &tokens.access).await;
    assert_eq!(unknown_client.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(unknown_client).await,
        json!({"status": 404, "message": "client does not exist"})
    );

    for token in ["nosuchtoken", ""] {
        let response = twitch.revoke(twitch.client_id(), token).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{token}");
        assert_eq!(
            json_of(response).await,
            json!({"status": 400, "message": "Invalid token"})
        );
    }

    assert_eq!(
        twitch
            .revoke(twitch.client_id(), &tokens.access)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        twitch
            .revoke(twitch.client_id(), &tokens.access)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(twitch.fake.revoked_tokens().len(), 1);
}

#[tokio::test]
async fn a_revoked_refresh_token_no_longer_refreshes_and_its_access_token_lives_on() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("chat:read").await;

    let response = twitch.revoke(twitch.client_id(), &tokens.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);

    let refresh = twitch.refresh(&tokens.refresh).await;
    assert_eq!(refresh.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(refresh).await["message"], "Invalid refresh token");
    let validate = twitch
        .validate(Some(&format!("OAuth {}", tokens.access)))
        .await;
    assert_eq!(validate.status(), StatusCode::OK);
    assert_eq!(
        twitch
            .revoke(twitch.client_id(), &tokens.refresh)
            .await
            .status(),
        StatusCode::BAD_REQUEST,
        "a dead refresh token cannot be revoked again"
    );
    assert_eq!(twitch.fake.revoked_tokens(), [tokens.refresh]);
}

#[tokio::test]
async fn issued_and_expired_tokens_behave_like_logged_in_ones() {
    let twitch = TestTwitch::start().await;
    let user = fake_providers::twitch::FakeUser {
        id: "1000001".into(),
        login: "seeded".into(),
        display_name: "Seeded".into(),
    };
    let issued =
        twitch
            .fake
            .issue_tokens(user, &["chat:read"], std::time::Duration::from_secs(3600));
    let validate = twitch
        .validate(Some(&format!("OAuth {}", issued.access_token)))
        .await;
    assert_eq!(validate.status(), StatusCode::OK);
    assert_eq!(json_of(validate).await["user_id"], "1000001");

    twitch.fake.expire_access_token(&issued.access_token);
    assert!(!twitch.fake.access_token_is_live(&issued.access_token));
    let validate = twitch
        .validate(Some(&format!("OAuth {}", issued.access_token)))
        .await;
    assert_eq!(validate.status(), StatusCode::UNAUTHORIZED);
    assert!(twitch.fake.refresh_token_is_live(&issued.refresh_token));
    assert_eq!(
        twitch.refresh(&issued.refresh_token).await.status(),
        StatusCode::OK
    );
    assert!(
        !twitch.fake.refresh_token_is_live(&issued.refresh_token),
        "rotated"
    );
    assert_eq!(twitch.fake.validate_requests(), 2);
}

#[tokio::test]
async fn an_invalidated_access_token_fails_validation_but_can_still_be_refreshed() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("chat:read").await;

    twitch.fake.invalidate_access_token(&tokens.access);

    let validate = twitch
        .validate(Some(&format!("OAuth {}", tokens.access)))
        .await;
    assert_eq!(validate.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        twitch.refresh(&tokens.refresh).await.status(),
        StatusCode::OK
    );
    assert!(twitch.fake.revoked_tokens().is_empty());
}

#[tokio::test]
async fn an_invalidated_refresh_token_cannot_be_refreshed() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("chat:read").await;

    twitch.fake.invalidate_refresh_token(&tokens.refresh);

    let response = twitch.refresh(&tokens.refresh).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(response).await["message"], "Invalid refresh token");
}

#[tokio::test]
async fn validate_accepts_the_bearer_prefix_and_refuses_a_missing_or_bad_header() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("").await;

    let bearer = twitch
        .validate(Some(&format!("Bearer {}", tokens.access)))
        .await;
    assert_eq!(bearer.status(), StatusCode::OK);
    assert_eq!(json_of(bearer).await["scopes"], json!([]));

    let missing = twitch.validate(None).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(missing).await,
        json!({"status": 401, "message": "missing authorization token"})
    );
    for header in ["OAuth nosuchtoken", "Basic abc", &tokens.access] {
        let response = twitch.validate(Some(header)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(json_of(response).await["message"], "invalid access token");
    }
}

#[tokio::test]
async fn helix_refuses_a_missing_client_id_or_one_that_is_not_the_tokens() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("chat:read").await;
    let authorization = format!("Bearer {}", tokens.access);

    for client_id in [None, Some("someoneelse0000000000000000000")] {
        let response = twitch.users(Some(&authorization), client_id, &[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{client_id:?}");
        assert_eq!(
            json_of(response).await,
            json!({
                "error": "Unauthorized",
                "status": 401,
                "message": "Client ID and OAuth token do not match",
            })
        );
    }
}

#[tokio::test]
async fn helix_refuses_a_missing_or_unknown_token() {
    let twitch = TestTwitch::start().await;

    let missing = twitch.users(None, Some(twitch.client_id()), &[]).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(missing).await,
        json!({"error": "Unauthorized", "status": 401, "message": "OAuth token is missing"})
    );

    let unknown = twitch
        .users(Some("Bearer nosuchtoken"), Some(twitch.client_id()), &[])
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(unknown).await["message"], "Invalid OAuth token");
}

#[tokio::test]
async fn helix_returns_the_user_only_when_the_query_names_them() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("chat:read").await;
    let authorization = format!("Bearer {}", tokens.access);
    let cases: [(Pairs, usize); 5] = [
        (&[("id", "141981764")], 1),
        (&[("login", "Demo_Streamer")], 1),
        (&[("id", "1"), ("login", "demo_streamer")], 1),
        (&[("id", "1")], 0),
        (&[("login", "someone_else")], 0),
    ];

    for (query, expected) in cases {
        let response = twitch
            .users(Some(&authorization), Some(twitch.client_id()), query)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = json_of(response).await;
        assert_eq!(
            body["data"].as_array().map(Vec::len),
            Some(expected),
            "{query:?}"
        );
    }
}

#[tokio::test]
async fn the_avatar_is_an_svg_with_the_users_initials() {
    let twitch = TestTwitch::start().await;

    let response = twitch
        .http
        .get(twitch.url("/avatar.svg"))
        .send()
        .await
        .expect("GET /avatar.svg");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/svg+xml");
    let svg = response.text().await.expect("SVG text");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.contains(">DS</text>"));
}

#[tokio::test]
async fn a_server_error_failure_answers_500_with_json_and_leaves_the_code_usable() {
    let twitch = TestTwitch::start().await;
    let code = twitch.log_in("chat:read").await;
    twitch.fake.set_token_failure(TokenFailure::ServerError);

    let response = twitch.exchange(&code).await;

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        json_of(response).await,
        json!({"status": 500, "message": "Internal Server Error"})
    );
    twitch.fake.set_token_failure(TokenFailure::None);
    assert_eq!(twitch.exchange(&code).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_malformed_json_failure_answers_200_with_a_body_that_is_not_json() {
    let twitch = TestTwitch::start().await;
    let code = twitch.log_in("chat:read").await;
    twitch.fake.set_token_failure(TokenFailure::MalformedJson);

    let response = twitch.exchange(&code).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = response.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    assert!(twitch.fake.issued_tokens().is_empty());
}

#[tokio::test]
async fn a_slow_failure_answers_normally_only_after_the_delay() {
    let twitch = TestTwitch::start().await;
    let code = twitch.log_in("chat:read").await;
    let delay = Duration::from_millis(300);
    twitch.fake.set_token_failure(TokenFailure::Slow(delay));

    let started = std::time::Instant::now();
    let response = twitch.exchange(&code).await;

    assert!(started.elapsed() >= delay);
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_slow_failure_outlasts_a_client_timeout() {
    let twitch = TestTwitch::start().await;
    let code = twitch.log_in("chat:read").await;
    twitch
        .fake
        .set_token_failure(TokenFailure::Slow(Duration::from_secs(5)));

    let result = twitch
        .http
        .post(twitch.url("/oauth2/token"))
        .timeout(Duration::from_millis(100))
        .form(&[
            ("client_id", twitch.client_id()),
            ("client_secret", "demo-client-secret"),
            ("code", code.as_str()),
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT_URI),
        ])
        .send()
        .await;

    assert!(result.is_err_and(|error| error.is_timeout()));
}

#[tokio::test]
async fn token_failures_apply_to_refreshing_too_and_are_counted() {
    let twitch = TestTwitch::start().await;
    let tokens = twitch.tokens("chat:read").await;
    twitch.fake.set_token_failure(TokenFailure::ServerError);

    let failed = twitch.refresh(&tokens.refresh).await;

    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    twitch.fake.set_token_failure(TokenFailure::None);
    // The failed request did not rotate the refresh token.
    assert_eq!(
        twitch.refresh(&tokens.refresh).await.status(),
        StatusCode::OK
    );
    assert_eq!(twitch.fake.token_requests(), 3);
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let twitch = TestTwitch::start().await;

    let response = twitch
        .http
        .get(twitch.url("/helix/games"))
        .send()
        .await
        .expect("GET");

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(response).await["status"], 404);
}

#[tokio::test]
async fn the_base_urls_point_at_the_bound_address() {
    let addr: SocketAddr = "127.0.0.1:3001".parse().expect("address");

    assert_eq!(
        FakeTwitch::auth_base_url(addr),
        "http://127.0.0.1:3001/oauth2"
    );
    assert_eq!(
        FakeTwitch::api_base_url(addr),
        "http://127.0.0.1:3001/helix"
    );
}

#[tokio::test]
async fn serving_stops_when_the_shutdown_future_resolves() {
    let fake = FakeTwitch::new(FakeTwitchConfig::demo(REDIRECT_URI));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let fake = fake.clone();
        async move {
            fake.serve(listener, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let avatar = reqwest::get(format!("http://{addr}/avatar.svg"))
        .await
        .expect("GET while serving");
    assert_eq!(avatar.status(), StatusCode::OK);

    let _ = stop.send(());

    let finished = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after shutdown");
    assert!(finished.is_ok_and(|served| served.is_ok()));
}

// In-process requests: with the clock paused, expiry is tested without waiting.

fn token_form(fields: &[(&str, &str)]) -> Request<Body> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    Request::post("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request")
}

async fn oneshot_json(fake: &FakeTwitch, request: Request<Body>) -> (StatusCode, Value) {
    let response = fake.router().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(start_paused = true)]
async fn an_access_token_counts_down_and_dies_when_its_ttl_runs_out() {
    let fake = FakeTwitch::new(FakeTwitchConfig {
        access_token_ttl: Duration::from_secs(60),
        user: FakeUser {
            id: "7".to_owned(),
            login: "someone".to_owned(),
            display_name: "Someone".to_owned(),
        },
        ..FakeTwitchConfig::demo(REDIRECT_URI)
    });
    let decision = Request::post("/oauth2/authorize")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "client_id=demo0client0id0000000000000000&redirect_uri={}&scope=chat%3Aread&decision=authorize",
            url::form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect::<String>()
        )))
        .expect("request");
    let response = fake.router().oneshot(decision).await.expect("infallible");
    let location = response.headers()[header::LOCATION]
        .to_str()
        .expect("ASCII Location")
        .to_owned();
    let code = url::Url::parse(&location)
        .expect("URL")
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .expect("code");
    let (status, body) = oneshot_json(
        &fake,
        token_form(&[
            ("client_id", "demo0client0id0000000000000000"),
            ("client_secret", "demo-client-secret"),
            ("code", &code),
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT_URI),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 60);
    let access = body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let validate = || {
        Request::get("/oauth2/validate")
            .header(header::AUTHORIZATION, format!("OAuth {access}"))
            .body(Body::empty())
            .expect("request")
    };

    tokio::time::advance(Duration::from_millis(20_500)).await;
    let (status, body) = oneshot_json(&fake, validate()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 40);
    assert_eq!(body["login"], "someone");

    tokio::time::advance(Duration::from_secs(40)).await;
    let (status, _) = oneshot_json(&fake, validate()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(start_paused = true)]
async fn a_slow_failure_holds_the_answer_for_exactly_its_delay() {
    let fake = FakeTwitch::new(FakeTwitchConfig::demo(REDIRECT_URI));
    fake.set_token_failure(TokenFailure::Slow(Duration::from_secs(30)));
    let started = tokio::time::Instant::now();

    let (status, body) = oneshot_json(&fake, token_form(&[("client_id", "x")])).await;

    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "invalid client");
}

#[tokio::test]
async fn a_token_request_that_is_not_a_form_is_missing_its_client_id() {
    let fake = FakeTwitch::new(FakeTwitchConfig::demo(REDIRECT_URI));
    let request = Request::post("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            r#"{"client_id":"demo0client0id0000000000000000"}"#,
        ))
        .expect("request");

    let (status, body) = oneshot_json(&fake, request).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"status": 400, "message": "missing client id"}));
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn an_app_token_from_client_credentials_reads_which_users_are_live() {
    // Arrange
    let twitch = TestTwitch::start().await;
    twitch.fake.set_live(&["2", "3"]);
    let token = json_of(
        twitch
            .post_token(&[
                ("client_id", twitch.client_id()),
                ("client_secret", "demo-client-secret"),
                ("grant_type", "client_credentials"),
            ])
            .await,
    )
    .await;
    let token = token["access_token"]
        .as_str()
        .expect("an app token")
        .to_owned();
    let streams = |query: String, bearer: String| {
        let request = twitch
            .http
            .get(format!("{}?{query}", twitch.url("/helix/streams")))
            .header("Client-Id", twitch.client_id())
            .bearer_auth(bearer);
        async move { request.send().await.expect("GET /helix/streams") }
    };

    // Act
    let answer = streams("user_id=1&user_id=2&first=100".into(), token.clone()).await;
    let too_many: String = (0..101).map(|i| format!("user_id={i}&")).collect();
    let refused = streams(too_many, token.clone()).await;
    let unauthorized = streams("user_id=2".into(), "not-a-token".into()).await;

    // Assert
    assert_eq!(answer.status(), StatusCode::OK);
    let body = json_of(answer).await;
    let live: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["2"]);
    assert_eq!(body["data"][0]["type"], "live");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(twitch.fake.streams_requests(), 3);
}
