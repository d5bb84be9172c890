//! The Twitch client: authorize URL, code exchange and refresh (the `oauth2` crate, client
//! secret in the form body), `/validate`, Helix `GET /users`, and `/revoke`.
//! Base URLs come from configuration, so tests and the demo point it at a local fake.

use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AccessToken, AuthType, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    HttpRequest, HttpResponse, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardRevocableToken, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use super::{ProviderError, TokenSet, bounded_message, read_body, read_json};
use crate::config::TwitchConfig;
use crate::secret::Secret;

/// Twitch's token response. Twitch sends `scope` as a JSON array where RFC 6749 has a
/// space-separated string; both are accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TwitchTokenResponse {
    access_token: AccessToken,
    token_type: BasicTokenType,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
    #[serde(default, deserialize_with = "scopes_from_array_or_string")]
    scope: Option<Vec<Scope>>,
}

fn scopes_from_array_or_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Scope>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scopes {
        List(Vec<String>),
        Spaced(String),
    }
    Ok(match Option::<Scopes>::deserialize(deserializer)? {
        None => None,
        Some(Scopes::List(list)) => Some(list.into_iter().map(Scope::new).collect()),
        Some(Scopes::Spaced(text)) => Some(
            text.split_whitespace()
                .map(|s| Scope::new(s.to_owned()))
                .collect(),
        ),
    })
}

impl TokenResponse for TwitchTokenResponse {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scope.as_ref()
    }
}

impl From<TwitchTokenResponse> for TokenSet {
    fn from(response: TwitchTokenResponse) -> Self {
        TokenSet {
            access_token: Secret::new(response.access_token.secret().to_owned()),
            refresh_token: response
                .refresh_token
                .map(|r| Secret::new(r.secret().to_owned())),
            expires_in: response.expires_in.map(Duration::from_secs),
            scopes: response
                .scope
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TwitchTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What `/validate` says about a token.
#[derive(Debug, Clone, Deserialize)]
pub struct Validation {
    pub client_id: String,
    pub login: Option<String>,
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub scopes: Vec<String>,
    pub expires_in: u64,
}

fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The Helix user record this project keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct HelixUser {
    pub id: String,
    pub login: String,
    pub display_name: String,
    #[serde(default)]
    pub profile_image_url: Option<String>,
}

#[derive(Deserialize)]
struct HelixUsers {
    data: Vec<HelixUser>,
}

#[derive(Deserialize)]
struct AppToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Streams {
    data: Vec<Stream>,
}

#[derive(Deserialize)]
struct Stream {
    user_id: String,
    #[serde(default, rename = "type")]
    kind: String,
}

/// Helix takes at most this many `user_id`s per `GET /streams`.
pub(crate) const STREAMS_PER_REQUEST: usize = 100;

pub struct TwitchClient {
    http: super::ProviderHttp,
    /// The app access token (client credentials) for Helix calls made for no user, with
    /// when it stops being used.
    app_token: tokio::sync::Mutex<Option<(Secret<String>, std::time::Instant)>>,
    /// `None` in a function not given it: see [`TwitchConfig::client_secret_given`].
    client_secret: Option<Secret<String>>,
    oauth: OAuthClient,
    client_id: String,
    redirect_uri: Url,
    scopes: Vec<String>,
    auth_base: String,
    api_base: String,
}

impl TwitchClient {
    /// `None` when `TWITCH_CLIENT_ID`/`TWITCH_CLIENT_SECRET` are unset (login is then refused
    /// with a page saying so); a function not given the secret needs only the client ID.
    pub fn new(config: &TwitchConfig, http: super::ProviderHttp) -> Option<Self> {
        let client_id = config.client_id.clone()?;
        let secret = config.client_secret.as_ref();
        if secret.is_none() && config.client_secret_given {
            return None;
        }
        let auth_base = config
            .auth_base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let token_url = TokenUrl::new(format!("{auth_base}/token")).ok()?;
        let oauth = oauth2::Client::new(ClientId::new(client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url)
            .set_redirect_uri(RedirectUrl::from_url(config.redirect_uri.clone()));
        let oauth = match secret {
            Some(secret) => oauth.set_client_secret(ClientSecret::new(secret.expose().clone())),
            None => oauth,
        };
        Some(Self {
            http,
            app_token: tokio::sync::Mutex::new(None),
            client_secret: secret.cloned(),
            oauth,
            client_id,
            redirect_uri: config.redirect_uri.clone(),
            scopes: config.scopes.clone(),
            auth_base,
            api_base: config
                .api_base_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret, for the calls that authenticate the application.
    fn client_secret(&self) -> Result<&Secret<String>, ProviderError> {
        self.client_secret
            .as_ref()
            .ok_or(ProviderError::SecretNotGiven("TWITCH_CLIENT_SECRET"))
    }

    /// Where the browser goes to approve the login.
    pub(crate) fn authorize_url(&self, state: &str, force_verify: bool) -> Url {
        let mut url = Url::parse(&format!("{}/authorize", self.auth_base))
            .expect("the auth base URL was validated at start");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", self.redirect_uri.as_str())
                .append_pair("response_type", "code")
                .append_pair("scope", &self.scopes.join(" "))
                .append_pair("state", state);
            if force_verify {
                query.append_pair("force_verify", "true");
            }
        }
        url
    }

    pub(crate) async fn exchange_code(&self, code: &str) -> Result<TokenSet, ProviderError> {
        self.client_secret()?;
        let http = self.http.client();
        self.oauth
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .request_async(&CappedHttp(http))
            .await
            .map(TokenSet::from)
            .map_err(token_error)
    }

    /// Trades a refresh token for new tokens; Twitch rotates the refresh token, so the
    /// returned one must be stored.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, ProviderError> {
        self.client_secret()?;
        let refresh_token = RefreshToken::new(refresh_token.to_owned());
        let http = self.http.client();
        self.oauth
            .exchange_refresh_token(&refresh_token)
            .request_async(&CappedHttp(http))
            .await
            .map(TokenSet::from)
            .map_err(token_error)
    }

    /// `GET /validate`: whose token this is, its scopes and remaining lifetime.
    pub async fn validate(&self, access_token: &str) -> Result<Validation, ProviderError> {
        let response = self
            .http
            .client()
            .get(format!("{}/validate", self.auth_base))
            .header("Authorization", format!("OAuth {access_token}"))
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        read_json(response).await
    }

    /// Helix `GET /users` for the token's own user.
    pub async fn user(&self, access_token: &str) -> Result<HelixUser, ProviderError> {
        let response = self
            .http
            .client()
            .get(format!("{}/users", self.api_base))
            .bearer_auth(access_token)
            .header("Client-Id", &self.client_id)
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        let users: HelixUsers = read_json(response).await?;
        users
            .data
            .into_iter()
            .next()
            .ok_or(ProviderError::Malformed {
                what: "Helix returned no user for the token",
                source: None,
            })
    }

    /// An app access token (client credentials grant), reused until shortly before it
    /// expires.
    async fn app_access_token(&self) -> Result<Secret<String>, ProviderError> {
        let client_secret = self.client_secret()?;
        let mut cached = self.app_token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && std::time::Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let response = self
            .http
            .client()
            .post(format!("{}/token", self.auth_base))
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", client_secret.expose().as_str()),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        let token: AppToken = read_json(response).await?;
        // Renewed a minute early (or hourly when Twitch gives no lifetime).
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600).saturating_sub(60));
        let token = Secret::new(token.access_token);
        *cached = Some((token.clone(), std::time::Instant::now() + lifetime));
        Ok(token)
    }

    /// Which of `user_ids` are live now (Helix `GET /streams`, 100 ids a request, app
    /// access token).
    pub(crate) async fn live_user_ids(
        &self,
        user_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, ProviderError> {
        let mut live = std::collections::HashSet::new();
        for chunk in user_ids.chunks(STREAMS_PER_REQUEST) {
            let token = self.app_access_token().await?;
            let mut url = Url::parse(&format!("{}/streams", self.api_base)).map_err(|e| {
                ProviderError::Malformed {
                    what: "the Helix base URL",
                    source: Some(Box::new(e)),
                }
            })?;
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("first", "100");
                for id in chunk {
                    query.append_pair("user_id", id);
                }
            }
            let response = self
                .http
                .client()
                .get(url)
                .bearer_auth(token.expose())
                .header("Client-Id", &self.client_id)
                .send()
                .await
                .map_err(ProviderError::from_transport)?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                // The app token was revoked or expired early: ask for a new one next time.
                *self.app_token.lock().await = None;
            }
            let streams: Streams = read_json(response).await?;
            live.extend(
                streams
                    .data
                    .into_iter()
                    .filter(|s| s.kind == "live")
                    .map(|s| s.user_id),
            );
        }
        Ok(live)
    }

    /// `POST /revoke`: the token (access or refresh) stops working at Twitch.
    pub async fn revoke(&self, token: &str) -> Result<(), ProviderError> {
        let response = self
            .http
            .client()
            .post(format!("{}/revoke", self.auth_base))
            .form(&[("client_id", self.client_id.as_str()), ("token", token)])
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_server_error() {
            return Err(ProviderError::ServerError {
                status: status.as_u16(),
            });
        }
        Err(ProviderError::Rejected {
            status: status.as_u16(),
            message: super::error_message(response).await,
        })
    }
}

/// The shared client as the `oauth2` crate's HTTP client, reading answers within
/// [`super::MAX_PROVIDER_BODY_BYTES`] (the crate's own reqwest glue reads any size).
struct CappedHttp<'a>(&'a reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for CappedHttp<'_> {
    type Error = ProviderError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, ProviderError>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send_oauth(self.0, request))
    }
}

async fn send_oauth(
    http: &reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, ProviderError> {
    let request = reqwest::Request::try_from(request).map_err(ProviderError::from_transport)?;
    let response = http
        .execute(request)
        .await
        .map_err(ProviderError::from_transport)?;
    let mut answer = oauth2::http::Response::builder()
        .status(response.status())
        .version(response.version());
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    let body = read_body(response).await?;
    answer.body(body).map_err(|e| ProviderError::Malformed {
        what: "the token response's head",
        source: Some(Box::new(e)),
    })
}

fn token_error(error: RequestTokenError<ProviderError, BasicErrorResponse>) -> ProviderError {
    match error {
        RequestTokenError::ServerResponse(response) => ProviderError::Rejected {
            status: 400,
            message: bounded_message(response.error().as_ref()),
        },
        RequestTokenError::Request(e) => e,
        RequestTokenError::Parse(e, body) => {
            // Twitch's own error shape ({"status":400,"message":…}) is not RFC 6749's.
            match serde_json::from_slice::<super::ProviderErrorBody>(&body) {
                Ok(super::ProviderErrorBody {
                    status: Some(status),
                    message,
                    ..
                }) if (400..500).contains(&status) => ProviderError::Rejected {
                    status,
                    message: bounded_message(&message.unwrap_or_default()),
                },
                Ok(super::ProviderErrorBody {
                    status: Some(status),
                    ..
                }) => ProviderError::ServerError { status },
                _ => ProviderError::Malformed {
                    what: "the token response did not parse",
                    source: Some(Box::new(e)),
                },
            }
        }
        RequestTokenError::Other(detail) => ProviderError::Malformed {
            what: "the token response was not understood",
            source: Some(bounded_message(&detail).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_accepted_as_an_array_or_a_string() {
        let array: TwitchTokenResponse = serde_json::from_str(
            r#"{"access_token":"a","expires_in":14124,"refresh_token":"r","scope":["chat:read","chat:edit"],"token_type":"bearer"}"#,
        )
        .unwrap();
        let string: TwitchTokenResponse = serde_json::from_str(
            r#"{"access_token":"a","refresh_token":"r","scope":"chat:read chat:edit","token_type":"bearer"}"#,
        )
        .unwrap();
        let missing: TwitchTokenResponse =
            serde_json::from_str(r#"{"access_token":"a","token_type":"bearer"}"#).unwrap();
        assert_eq!(TokenSet::from(array).scopes, vec!["chat:read", "chat:edit"]);
        assert_eq!(
            TokenSet::from(string).scopes,
            vec!["chat:read", "chat:edit"]
        );
        assert!(TokenSet::from(missing).scopes.is_empty());
    }

    #[tokio::test]
    async fn without_the_client_secret_given_the_client_id_builds_urls_and_nothing_is_sent() {
        let config = TwitchConfig {
            client_id: Some("cid".into()),
            client_secret: None,
            client_secret_given: false,
            scopes: vec!["chat:read".into()],
            redirect_uri: Url::parse("https://a.example/auth/twitch/callback").unwrap(),
            // Nothing listens there: a request would fail differently.
            auth_base_url: Url::parse("http://127.0.0.1:9/oauth2").unwrap(),
            api_base_url: Url::parse("http://127.0.0.1:9/helix").unwrap(),
        };
        let http = || super::super::ProviderHttp::new(Duration::from_secs(1));

        let client = TwitchClient::new(&config, http()).expect("the client ID is enough");

        let url = client.authorize_url("st", false);
        assert_eq!(
            url.query_pairs().find(|(k, _)| k == "client_id").unwrap().1,
            "cid"
        );
        for answer in [
            client.exchange_code("code").await,
            client.refresh("refresh").await,
        ] {
            assert!(
                matches!(
                    answer,
                    Err(ProviderError::SecretNotGiven("TWITCH_CLIENT_SECRET"))
                ),
                "{answer:?}"
            );
        }
        // Where the secret is given but unset, there is no client (login is off).
        let given = TwitchConfig {
            client_secret_given: true,
            ..config
        };
        assert!(TwitchClient::new(&given, http()).is_none());
    }

    #[test]
    fn the_authorize_url_carries_every_parameter() {
        let config = TwitchConfig {
            client_id: Some("cid".into()),
            client_secret: Some(Secret::new("sec".into())),
            client_secret_given: true,
            scopes: vec!["chat:read".into(), "user:read:chat".into()],
            redirect_uri: Url::parse("http://localhost:3000/auth/twitch/callback").unwrap(),
            auth_base_url: Url::parse("https://id.twitch.tv/oauth2").unwrap(),
            api_base_url: Url::parse("https://api.twitch.tv/helix").unwrap(),
        };
        let client = TwitchClient::new(
            &config,
            super::super::ProviderHttp::new(Duration::from_secs(1)),
        )
        .unwrap();
        let url = client.authorize_url("st", true);
        assert_eq!(url.path(), "/oauth2/authorize");
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["client_id"], "cid");
        assert_eq!(
            query["redirect_uri"],
            "http://localhost:3000/auth/twitch/callback"
        );
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["scope"], "chat:read user:read:chat");
        assert_eq!(query["state"], "st");
        assert_eq!(query["force_verify"], "true");
        assert!(!url.as_str().contains("sec"));
        assert!(
            !client
                .authorize_url("st", false)
                .as_str()
                .contains("force_verify")
        );
    }
}
