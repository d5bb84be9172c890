//! The DonationAlerts client: authorize URL, code exchange and refresh (client secret in the
//! form body; a refresh resends the granted scopes, which DonationAlerts requires),
//! `GET /api/v1/user/oauth`, and the paged `GET /api/v1/alerts/donations`.
//!
//! DonationAlerts has no token introspection and no revocation endpoint: the scopes are
//! stored with the tokens, and disconnecting forgets the tokens on our side only.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{ProviderError, TokenSet, read_json};
use crate::config::DonationAlertsConfig;
use crate::secret::Secret;

/// The token endpoint's answer (Laravel Passport's shape).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The DonationAlerts account behind a token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DaUser {
    /// Unique and unchangeable: the key a link is stored under.
    pub id: i64,
    /// The unique textual code (user name).
    #[serde(default)]
    pub code: Option<String>,
    /// The display name.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Wrapped<T> {
    data: T,
}

/// A donation as DonationAlerts lists it (only the fields this project uses).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DaDonation {
    pub id: i64,
    /// `null` for anonymous donors.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub message: String,
    pub amount: serde_json::Number,
    pub currency: String,
    /// `YYYY-MM-DD HH:MM:SS` in UTC, without a zone.
    pub created_at: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// The longest `links.next` followed (DonationAlerts' are about 60 bytes).
pub const MAX_NEXT_LINK_BYTES: usize = 2048;

/// One page of `/api/v1/alerts/donations`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DonationPage {
    pub data: Vec<DaDonation>,
    #[serde(default)]
    pub links: PageLinks,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PageLinks {
    #[serde(default)]
    pub next: Option<String>,
}

pub struct DonationAlertsClient {
    http: super::ProviderHttp,
    client_id: String,
    /// `None` in a function not given it: see `DonationAlertsConfig::client_secret_given`.
    client_secret: Option<Secret<String>>,
    redirect_uri: Url,
    scopes: Vec<String>,
    base: Url,
}

impl DonationAlertsClient {
    /// `None` when `DA_CLIENT_ID`/`DA_CLIENT_SECRET` are unset (connecting is then refused
    /// with a page saying so); a function not given the secret needs only the client ID.
    pub fn new(config: &DonationAlertsConfig, http: super::ProviderHttp) -> Option<Self> {
        if config.client_secret.is_none() && config.client_secret_given {
            return None;
        }
        Some(Self {
            http,
            client_id: config.client_id.clone()?,
            client_secret: config.client_secret.clone(),
            redirect_uri: config.redirect_uri.clone(),
            scopes: config.scopes.clone(),
            base: config.base_url.clone(),
        })
    }

    /// The scopes this application asks for (and resends on refresh).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url.set_query(None);
        url
    }

    /// Where the browser goes to approve the connection.
    pub fn authorize_url(&self, state: &str) -> Url {
        let mut url = self.endpoint("/oauth/authorize");
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", self.redirect_uri.as_str())
            .append_pair("response_type", "code")
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", state);
        url
    }

    pub async fn exchange_code(&self, code: &str) -> Result<TokenSet, ProviderError> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
        ])
        .await
    }

    /// Trades a refresh token for new tokens, resending `scopes` (the ones granted; stored
    /// with the tokens). The returned refresh token replaces the old one.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        scopes: &[String],
    ) -> Result<TokenSet, ProviderError> {
        let scope = scopes.join(" ");
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("scope", &scope),
        ])
        .await
    }

    async fn token(&self, grant: &[(&str, &str)]) -> Result<TokenSet, ProviderError> {
        let client_secret = self
            .client_secret
            .as_ref()
            .ok_or(ProviderError::SecretNotGiven("DA_CLIENT_SECRET"))?;
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", &self.client_id),
            ("client_secret", client_secret.expose()),
        ];
        form.extend_from_slice(grant);
        let response = self
            .http
            .client()
            .post(self.endpoint("/oauth/token"))
            .form(&form)
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        let tokens: TokenResponse = read_json(rate_limited(response)?).await?;
        Ok(TokenSet {
            access_token: Secret::new(tokens.access_token),
            refresh_token: tokens.refresh_token.map(Secret::new),
            expires_in: tokens.expires_in.map(Duration::from_secs),
            // DonationAlerts grants what was asked for and does not say it again.
            scopes: self.scopes.clone(),
        })
    }

    /// `GET /api/v1/user/oauth`: the account behind the token.
    pub async fn user(&self, access_token: &str) -> Result<DaUser, ProviderError> {
        let response = self
            .http
            .client()
            .get(self.endpoint("/api/v1/user/oauth"))
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        let user: Wrapped<DaUser> = read_json(rate_limited(response)?).await?;
        Ok(user.data)
    }

    /// The first page of the donation list (newest first).
    pub async fn donations(&self, access_token: &str) -> Result<DonationPage, ProviderError> {
        self.donation_page(self.endpoint("/api/v1/alerts/donations"), access_token)
            .await
    }

    /// Where a page's `links.next` leads, if it may be followed: only a link to the donation
    /// list on the configured DonationAlerts host is (the token must never travel anywhere
    /// else), and only one of at most [`MAX_NEXT_LINK_BYTES`] (it may be kept to go on from).
    pub fn next_page_url(&self, next: &str) -> Result<Url, ProviderError> {
        if next.len() > MAX_NEXT_LINK_BYTES {
            return Err(ProviderError::Malformed {
                what: "links.next is longer than 2 KiB",
                source: None,
            });
        }
        let url = Url::parse(next).map_err(|e| ProviderError::Malformed {
            what: "links.next is not a URL",
            source: Some(Box::new(e)),
        })?;
        if url.origin() != self.base.origin() || url.path() != "/api/v1/alerts/donations" {
            return Err(ProviderError::Malformed {
                what: "links.next leads away from the donation list",
                source: None,
            });
        }
        Ok(url)
    }

    /// The page a previous page's `links.next` names, if [`Self::next_page_url`] allows it.
    pub async fn next_page(
        &self,
        next: &str,
        access_token: &str,
    ) -> Result<DonationPage, ProviderError> {
        let url = self.next_page_url(next)?;
        self.donation_page(url, access_token).await
    }

    async fn donation_page(
        &self,
        url: Url,
        access_token: &str,
    ) -> Result<DonationPage, ProviderError> {
        let response = self
            .http
            .client()
            .get(url)
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(ProviderError::from_transport)?;
        // "In some cases, a 204 No Content response … may be returned": no donations.
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(DonationPage {
                data: Vec::new(),
                links: PageLinks::default(),
            });
        }
        read_json(rate_limited(response)?).await
    }
}

/// A 429 becomes [`ProviderError::RateLimited`] with the provider's `Retry-After` (seconds).
fn rate_limited(response: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
    if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Err(ProviderError::RateLimited { retry_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_donation_page_parses_with_anonymous_donors_and_fractional_amounts() {
        let page: DonationPage = serde_json::from_str(
            r#"{"data":[{"id":30530030,"name":"donation","username":null,"message":null,
                "amount":12.5,"currency":"RUB","is_shown":1,"created_at":"2019-09-29 09:00:00",
                "shown_at":null,"payin_system":{"title":"Bank card RUB"}}],
               "links":{"first":"x","last":"x","prev":null,"next":null},
               "meta":{"current_page":1,"per_page":30,"total":1}}"#,
        )
        .unwrap();
        assert_eq!(page.data[0].username, None);
        assert_eq!(page.data[0].message, "");
        assert_eq!(page.data[0].amount.to_string(), "12.5");
        assert_eq!(page.links.next, None);
    }
}
