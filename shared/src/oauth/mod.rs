//! Provider clients (Twitch, DonationAlerts) and what they share:
//! the HTTP client, token sets, and one error type for everything a provider can do wrong.

pub mod donationalerts;
pub mod twitch;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::secret::Secret;

/// Tokens as a provider hands them out. Never printed: the strings are `Secret`s.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: Secret<String>,
    pub refresh_token: Option<Secret<String>>,
    pub expires_in: Option<Duration>,
    pub scopes: Vec<String>,
}

/// The cause of a provider failure, kept for the log.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a provider call can end in other than success. Callers tell apart a refusal
/// (the provider answered no), a timeout and any other failure; causes are kept.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered and said no (bad code, invalid token, …).
    #[error("the provider refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// No answer within PROVIDER_TIMEOUT_MS.
    #[error("the provider did not answer in time")]
    Timeout(#[source] Cause),
    /// The connection failed (refused, reset, DNS).
    #[error("the provider could not be reached")]
    Unreachable(#[source] Cause),
    /// The provider's rate limit (429), with how long it asked us to wait.
    #[error("the provider's rate limit was hit")]
    RateLimited { retry_after: Option<Duration> },
    /// The provider answered with a server error (5xx).
    #[error("the provider failed with HTTP {status}")]
    ServerError { status: u16 },
    /// The provider answered something this client does not understand.
    #[error("the provider's answer was malformed: {what}")]
    Malformed {
        what: &'static str,
        #[source]
        source: Option<Cause>,
    },
    /// The call needs the client secret, which this function is not given (see
    /// `crate::secrets::needed_by`); nothing was sent.
    #[error("{0} is not given to this function")]
    SecretNotGiven(&'static str),
}

impl ProviderError {
    /// A request that got no usable answer: a timeout or a transport failure.
    pub(crate) fn from_transport(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::Timeout(Box::new(error))
        } else if error.is_decode() || error.is_body() {
            Self::Malformed {
                what: "the body could not be read",
                source: Some(Box::new(error)),
            }
        } else {
            Self::Unreachable(Box::new(error))
        }
    }

    /// The provider says the token is not (or no longer) valid.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Rejected { status: 401, .. })
    }

    /// The provider did not answer within the configured time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

/// An error and its causes on one line, for the one log line of a failed request. A cause
/// whose text its parent already ends with is not repeated. reqwest errors carry no query
/// strings or bodies here: tokens travel in headers and form bodies, never in URLs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The error body Twitch uses (`{"status":…,"message":…}`), also tolerated from others.
#[derive(Debug, Deserialize)]
pub(crate) struct ProviderErrorBody {
    pub status: Option<u16>,
    pub message: Option<String>,
    pub error: Option<String>,
}

/// The message of an error response, for logs (bodies of error responses hold no tokens).
pub(crate) async fn error_message(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ProviderErrorBody>(&text) {
        Ok(body) => body.message.or(body.error).unwrap_or_default(),
        Err(_) => text.chars().take(200).collect(),
    }
}

/// A 2xx JSON body as `T`; anything else as the matching error.
pub(crate) async fn read_json<T: DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ProviderError> {
    let status = response.status();
    if status.is_server_error() {
        return Err(ProviderError::ServerError {
            status: status.as_u16(),
        });
    }
    if !status.is_success() {
        return Err(ProviderError::Rejected {
            status: status.as_u16(),
            message: error_message(response).await,
        });
    }
    let body = response
        .bytes()
        .await
        .map_err(ProviderError::from_transport)?;
    serde_json::from_slice(&body).map_err(|e| ProviderError::Malformed {
        what: "unexpected JSON",
        source: Some(Box::new(e)),
    })
}

/// The HTTP client for calls to other services (the providers, Secrets Manager at start):
/// bounded time, no redirects (none of their endpoints needs one, and following them could
/// leak a token to another host).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("avatar-twitch-oauth/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}

/// [`http_client`], built on first use and shared by the provider clients. Building it
/// (the TLS roots, the connection pool) is a cold start's largest piece of CPU work, and
/// most functions (health, pages) never call a provider.
#[derive(Clone)]
pub struct ProviderHttp(Arc<(Duration, OnceLock<reqwest::Client>)>);

impl ProviderHttp {
    pub fn new(timeout: Duration) -> Self {
        Self(Arc::new((timeout, OnceLock::new())))
    }

    pub fn client(&self) -> &reqwest::Client {
        let (timeout, client) = &*self.0;
        client.get_or_init(|| http_client(*timeout))
    }
}
