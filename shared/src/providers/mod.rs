//! Provider clients (Twitch, DonationAlerts and its Centrifugo push server) and what they share:
//! the HTTP client, token sets, and one error type for everything a provider can do wrong.

pub mod centrifugo;
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
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    pub(crate) fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Rejected { status: 401, .. })
    }

    /// The provider did not answer within the configured time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

/// The error body Twitch uses (`{"status":…,"message":…}`), also tolerated from others.
#[derive(Debug, Deserialize)]
pub(crate) struct ProviderErrorBody {
    pub status: Option<u16>,
    pub message: Option<String>,
    pub error: Option<String>,
}

/// The most a provider's answer may hold. Twitch's and DonationAlerts' answers are a few
/// kilobytes (a page of 30 donations is about 10 KiB); a larger one comes from a broken or
/// hostile provider and is refused before it is held whole.
pub const MAX_PROVIDER_BODY_BYTES: usize = 1024 * 1024;

/// The longest provider error message kept (for the log), in characters.
pub(crate) const MAX_ERROR_MESSAGE_CHARS: usize = 200;

/// The body of a provider's answer, refused as [`ProviderError::Malformed`] once it passes
/// [`MAX_PROVIDER_BODY_BYTES`] (by its `Content-Length`, or while it arrives).
pub(crate) async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let too_large = || ProviderError::Malformed {
        what: "the answer is larger than 1 MiB",
        source: None,
    };
    if response
        .content_length()
        .is_some_and(|length| length > MAX_PROVIDER_BODY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(ProviderError::from_transport)?
    {
        if body.len() + chunk.len() > MAX_PROVIDER_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `text` cut to [`MAX_ERROR_MESSAGE_CHARS`] (ending in "…" when cut), so a provider cannot
/// flood the log through its error messages.
pub(crate) fn bounded_message(text: &str) -> String {
    crate::text::truncated(text, MAX_ERROR_MESSAGE_CHARS).into_owned()
}

/// The message of an error response, for logs (bodies of error responses hold no tokens),
/// at most [`MAX_ERROR_MESSAGE_CHARS`] long.
pub(crate) async fn error_message(response: reqwest::Response) -> String {
    let Ok(body) = read_body(response).await else {
        return "(an error body that could not be read or was too large)".to_owned();
    };
    let text = String::from_utf8_lossy(&body);
    match serde_json::from_str::<ProviderErrorBody>(&text) {
        Ok(body) => bounded_message(&body.message.or(body.error).unwrap_or_default()),
        Err(_) => bounded_message(&text),
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
    let body = read_body(response).await?;
    serde_json::from_slice(&body).map_err(|e| ProviderError::Malformed {
        what: "unexpected JSON",
        source: Some(Box::new(e)),
    })
}

/// [`http_client`](crate::outbound::http_client), built on first use and shared by the
/// provider clients. Building it (the TLS roots, the connection pool) is a cold start's
/// largest piece of CPU work, and most functions (health, pages) never call a provider.
#[derive(Clone)]
pub struct ProviderHttp(Arc<(Duration, OnceLock<reqwest::Client>)>);

impl ProviderHttp {
    pub fn new(timeout: Duration) -> Self {
        Self(Arc::new((timeout, OnceLock::new())))
    }

    pub fn client(&self) -> &reqwest::Client {
        let (timeout, client) = &*self.0;
        client.get_or_init(|| crate::outbound::http_client(*timeout))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::body::Bytes;
    use http_body::Frame;

    use super::*;

    /// A body that arrives in chunks, its length unknown beforehand (chunked encoding).
    struct Chunks(VecDeque<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    fn answer(status: u16, body: impl Into<reqwest::Body>) -> reqwest::Response {
        oauth2::http::Response::builder()
            .status(status)
            .body(body)
            .unwrap()
            .into()
    }

    fn chunked(chunk: usize, count: usize) -> reqwest::Response {
        let chunks = (0..count).map(|_| Bytes::from(vec![b' '; chunk])).collect();
        answer(200, reqwest::Body::wrap(Chunks(chunks)))
    }

    fn is_too_large(result: Result<Vec<u8>, ProviderError>) -> bool {
        matches!(
            result,
            Err(ProviderError::Malformed { what, .. }) if what.contains("larger than 1 MiB")
        )
    }

    #[tokio::test]
    async fn an_answer_up_to_the_cap_is_read_whole() {
        let body = read_body(answer(200, vec![b'x'; MAX_PROVIDER_BODY_BYTES]))
            .await
            .unwrap();
        assert_eq!(body.len(), MAX_PROVIDER_BODY_BYTES);
        let body = read_body(chunked(1024, 1024)).await.unwrap();
        assert_eq!(body.len(), MAX_PROVIDER_BODY_BYTES);
    }

    #[tokio::test]
    async fn a_larger_answer_is_refused_by_its_length_or_as_it_arrives() {
        assert!(is_too_large(
            read_body(answer(200, vec![b'x'; MAX_PROVIDER_BODY_BYTES + 1])).await
        ));
        assert!(is_too_large(read_body(chunked(1024, 1025)).await));
    }

    #[tokio::test]
    async fn a_larger_json_answer_is_a_malformed_answer_not_a_parsed_one() {
        let padded = format!(
            r#"{{"ok":true,"padding":"{}"}}"#,
            " ".repeat(MAX_PROVIDER_BODY_BYTES)
        );
        let read: Result<serde_json::Value, _> = read_json(answer(200, padded)).await;
        assert!(
            matches!(read, Err(ProviderError::Malformed { .. })),
            "{read:?}"
        );
    }

    #[tokio::test]
    async fn error_messages_are_cut_before_they_are_kept() {
        let long = "é".repeat(10_000);
        let json = format!(r#"{{"status":400,"message":"{long}"}}"#);
        for body in [json, long.clone()] {
            let Err(ProviderError::Rejected { status, message }) =
                read_json::<serde_json::Value>(answer(400, body)).await
            else {
                panic!("a 400 is a refusal");
            };
            assert_eq!(status, 400);
            assert_eq!(message.chars().count(), MAX_ERROR_MESSAGE_CHARS);
            assert!(message.ends_with('…'), "{message}");
        }
        let huge = error_message(answer(400, vec![b'x'; MAX_PROVIDER_BODY_BYTES + 1])).await;
        assert!(huge.len() <= MAX_ERROR_MESSAGE_CHARS, "{huge}");
    }
}
