//! A browser without JavaScript and the page helpers tests read responses with.

use std::collections::HashMap;
use std::time::Duration;

/// A browser without JavaScript: a cookie jar, redirects followed by hand so each hop can
/// be checked.
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
}

/// One step of a login, for tests that stop or tamper half-way.
pub struct AuthorizePage {
    /// The Twitch authorize URL the app redirected to.
    pub url: reqwest::Url,
    /// Its query parameters (what the consent form posts back).
    pub params: HashMap<String, String>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .timeout(crate::REQUEST_DEADLINE)
                .build()
                .expect("http client"),
        }
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_owned()
        };
        self.client.get(url).send().await.expect("request")
    }

    /// GET /auth/twitch and then the authorize page it redirects to.
    pub async fn start_login(&self) -> AuthorizePage {
        let start = self.get("/auth/twitch").await;
        assert_eq!(start.status(), 302, "GET /auth/twitch");
        let location = location(&start);
        let page = self.get(&location).await;
        assert_eq!(page.status(), 200, "the authorize page");
        let url = reqwest::Url::parse(&location).expect("authorize URL");
        let params = url.query_pairs().into_owned().collect();
        AuthorizePage { url, params }
    }

    /// Clicks Authorize or Cancel on the consent page; returns the callback URL Twitch
    /// redirects to.
    pub async fn decide(&self, page: &AuthorizePage, decision: &str) -> String {
        let mut form = page.params.clone();
        form.insert("decision".into(), decision.into());
        let mut post_url = page.url.clone();
        post_url.set_query(None);
        let response = self
            .client
            .post(post_url)
            .form(&form)
            .send()
            .await
            .expect("consent");
        assert_eq!(response.status(), 302, "the consent form redirects");
        location(&response)
    }

    /// The whole login: start, authorize, callback. Returns the callback's response.
    pub async fn log_in(&self) -> reqwest::Response {
        let page = self.start_login().await;
        let callback = self.decide(&page, "authorize").await;
        self.get(&callback).await
    }

    /// GET /auth/donationalerts and the fake DonationAlerts' authorize page it leads to.
    pub async fn start_connect(&self) -> AuthorizePage {
        let start = self.get("/auth/donationalerts").await;
        assert_eq!(start.status(), 302, "GET /auth/donationalerts");
        let location = location(&start);
        let page = self.get(&location).await;
        assert_eq!(page.status(), 200, "the DonationAlerts authorize page");
        let url = reqwest::Url::parse(&location).expect("authorize URL");
        let params = url.query_pairs().into_owned().collect();
        AuthorizePage { url, params }
    }

    /// The whole DonationAlerts connection (the browser must be logged in): start,
    /// authorize, callback. Returns the callback's response.
    pub async fn connect_donationalerts(&self) -> reqwest::Response {
        let page = self.start_connect().await;
        let callback = self.decide(&page, "authorize").await;
        self.get(&callback).await
    }

    /// POSTs a form to `path` with the CSRF token read from the dashboard.
    pub async fn post_from_dashboard(&self, path: &str) -> reqwest::Response {
        let dashboard = self.get("/success").await.text().await.expect("dashboard");
        let csrf = csrf_field(&dashboard);
        self.client
            .post(format!("{}{path}", self.base))
            .form(&[("csrf", csrf)])
            .send()
            .await
            .expect("post")
    }

    /// `/auth/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        self.get("/auth/status")
            .await
            .json()
            .await
            .expect("status JSON")
    }
}

/// The status code of a GET sent over a plain socket (for requests an HTTP client refuses
/// to build, like a 100 KB URL).
pub async fn raw_get_status(base: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .expect("an answer within 10 s")
        .expect("a status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("a status code")
}

/// The value of the hidden `csrf` field of a page's forms.
pub fn csrf_field(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field on the page")
        .to_owned()
}

/// The Set-Cookie header that sets the cookie `name`, whole (value and attributes).
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&prefix))
        .map(str::to_owned)
}

/// The Location header of a redirect.
pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned()
}
