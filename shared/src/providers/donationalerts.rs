//! The DonationAlerts client: authorize URL, code exchange and refresh (client secret in the
//! form body; a refresh resends the granted scopes, which DonationAlerts requires),
//! `GET /api/v1/user/oauth`, the paged `GET /api/v1/alerts/donations`, and for realtime
//! pushes `POST /api/v1/centrifuge/subscribe` (a channel token) and the pushed donation's
//! parsing.
//!
//! DonationAlerts has no token introspection and no revocation endpoint: the scopes are
//! stored with the tokens, and disconnecting forgets the tokens on our side only.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use super::{ProviderError, TokenSet, read_json};
use crate::config::DonationAlertsConfig;
use crate::domain::{DaUserId, Donation, now_ms, rfc3339_utc};
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
    pub id: DaUserId,
    /// The unique textual code (user name).
    #[serde(default)]
    pub code: Option<String>,
    /// The display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The token a Centrifugo connect presents for this account (realtime pushes).
    #[serde(default, deserialize_with = "optional_secret")]
    pub socket_connection_token: Option<Secret<String>>,
}

fn optional_secret<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Secret<String>>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map(Secret::new))
}

/// The Centrifugo channel DonationAlerts pushes an account's donations on.
pub fn donation_channel(id: DaUserId) -> String {
    format!("$alerts:donation_{id}")
}

/// The longest channel token accepted (DonationAlerts' are JWTs of a few hundred bytes).
const MAX_CHANNEL_TOKEN_BYTES: usize = 4096;

/// The answer of `POST /api/v1/centrifuge/subscribe`.
#[derive(Deserialize)]
struct ChannelTokens {
    channels: Vec<ChannelToken>,
}

#[derive(Deserialize)]
struct ChannelToken {
    channel: String,
    token: String,
}

/// A pushed donation: the publication's `data`, `{"seq":…,"data":{…donation…}}` as
/// DonationAlerts sends it, or the donation itself.
#[derive(Deserialize)]
#[serde(untagged)]
enum PushedDonation {
    Wrapped { data: WireDonation },
    Bare(WireDonation),
}

/// The donation a Centrifugo publication carries, parsed and bounded as the REST list's
/// donations are.
pub fn parse_pushed_donation(data: &RawValue) -> Result<Donation, ProviderError> {
    let pushed: PushedDonation =
        serde_json::from_str(data.get()).map_err(|e| ProviderError::Malformed {
            what: "a pushed donation",
            source: Some(Box::new(e)),
        })?;
    let read_at = rfc3339_utc(now_ms());
    let (PushedDonation::Wrapped { data: wire } | PushedDonation::Bare(wire)) = pushed;
    Ok(wire.into_donation(&read_at))
}

#[derive(Deserialize)]
struct Wrapped<T> {
    data: T,
}

/// A donation as DonationAlerts lists it (only the fields this project uses); it becomes a
/// [`Donation`] as the page is read.
#[derive(Deserialize)]
struct WireDonation {
    id: i64,
    /// `null` for anonymous donors.
    #[serde(default)]
    username: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    message: String,
    amount: serde_json::Number,
    currency: String,
    /// `YYYY-MM-DD HH:MM:SS` in UTC, without a zone.
    created_at: String,
}

impl WireDonation {
    /// The donation, its time in RFC 3339 UTC (`read_at` when DonationAlerts' does not
    /// parse) and its fields bounded ([`Donation::within_limits`]).
    fn into_donation(self, read_at: &str) -> Donation {
        Donation {
            created_at: da_time_to_rfc3339(&self.created_at).unwrap_or_else(|| read_at.to_owned()),
            id: self.id,
            donor_name: self.username,
            message: self.message,
            amount: self.amount,
            currency: self.currency,
        }
        .within_limits()
    }
}

/// DonationAlerts writes `YYYY-MM-DD HH:MM:SS` in UTC without a zone; the event carries
/// RFC 3339 UTC. A time that already names its zone is converted to UTC.
pub(crate) fn da_time_to_rfc3339(text: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let naive = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let utc = match time::PrimitiveDateTime::parse(text.trim(), &naive) {
        Ok(at) => at.assume_utc(),
        Err(_) => time::OffsetDateTime::parse(text.trim(), &Rfc3339)
            .ok()?
            .to_offset(time::UtcOffset::UTC),
    };
    utc.format(&Rfc3339).ok()
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// The longest `links.next` followed (DonationAlerts' are about 60 bytes).
pub(crate) const MAX_NEXT_LINK_BYTES: usize = 2048;

/// One page of `/api/v1/alerts/donations`, its donations parsed and bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct DonationPage {
    pub data: Vec<Donation>,
    pub links: PageLinks,
}

/// The page as DonationAlerts sends it.
#[derive(Deserialize)]
struct WirePage {
    data: Vec<WireDonation>,
    #[serde(default)]
    links: PageLinks,
}

impl WirePage {
    fn into_page(self) -> DonationPage {
        let read_at = rfc3339_utc(now_ms());
        DonationPage {
            data: self
                .data
                .into_iter()
                .map(|d| d.into_donation(&read_at))
                .collect(),
            links: self.links,
        }
    }
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
    pub(crate) fn authorize_url(&self, state: &str) -> Url {
        let mut url = self.endpoint("/oauth/authorize");
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", self.redirect_uri.as_str())
            .append_pair("response_type", "code")
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", state);
        url
    }

    pub(crate) async fn exchange_code(&self, code: &str) -> Result<TokenSet, ProviderError> {
        // DonationAlerts grants what was asked for and does not say it again.
        self.token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", self.redirect_uri.as_str()),
            ],
            &self.scopes,
        )
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
        // The refreshed grant holds the scopes resent, not the ones DA_SCOPES asks for now: a
        // streamer who connected before a scope was added still lacks it.
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("scope", &scope),
            ],
            scopes,
        )
        .await
    }

    /// Calls the token endpoint with `grant`; the tokens hold `granted`.
    async fn token(
        &self,
        grant: &[(&str, &str)],
        granted: &[String],
    ) -> Result<TokenSet, ProviderError> {
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
            scopes: granted.to_vec(),
        })
    }

    /// `GET /api/v1/user/oauth`: the account behind the token.
    pub async fn user(&self, access_token: &str) -> Result<DaUser, ProviderError> {
        let request = self.http.client().get(self.endpoint("/api/v1/user/oauth"));
        let user: Wrapped<DaUser> = read_json(send_as(request, access_token).await?).await?;
        Ok(user.data)
    }

    /// `POST /api/v1/centrifuge/subscribe`: the token that lets Centrifugo client
    /// `client_id` subscribe to `channel` (one of the token's account's channels; scope
    /// `oauth-donation-subscribe`).
    pub async fn subscribe_channel(
        &self,
        access_token: &str,
        client_id: &str,
        channel: &str,
    ) -> Result<Secret<String>, ProviderError> {
        let request = self
            .http
            .client()
            .post(self.endpoint("/api/v1/centrifuge/subscribe"))
            .json(&serde_json::json!({ "client": client_id, "channels": [channel] }));
        let answer: ChannelTokens = read_json(send_as(request, access_token).await?).await?;
        let token = answer
            .channels
            .into_iter()
            .find(|c| c.channel == channel)
            .ok_or(ProviderError::Malformed {
                what: "no token for the channel asked for",
                source: None,
            })?
            .token;
        if token.is_empty() || token.len() > MAX_CHANNEL_TOKEN_BYTES {
            return Err(ProviderError::Malformed {
                what: "a channel token empty or longer than 4 KiB",
                source: None,
            });
        }
        Ok(Secret::new(token))
    }

    /// The first page of the donation list (newest first).
    pub async fn donations(&self, access_token: &str) -> Result<DonationPage, ProviderError> {
        self.donation_page(self.endpoint("/api/v1/alerts/donations"), access_token)
            .await
    }

    /// Where a page's `links.next` leads, if it may be followed: only a link to the donation
    /// list on the configured DonationAlerts host is (the token must never travel anywhere
    /// else), and only one of at most [`MAX_NEXT_LINK_BYTES`] (it may be kept to go on from).
    pub(crate) fn next_page_url(&self, next: &str) -> Result<Url, ProviderError> {
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
    pub(crate) async fn next_page(
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
        let response = send_as(self.http.client().get(url), access_token).await?;
        // "In some cases, a 204 No Content response … may be returned": no donations.
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(DonationPage {
                data: Vec::new(),
                links: PageLinks::default(),
            });
        }
        let page: WirePage = read_json(response).await?;
        Ok(page.into_page())
    }
}

/// Sends `request` with the streamer's `access_token`; a 429 comes back as
/// [`ProviderError::RateLimited`].
async fn send_as(
    request: reqwest::RequestBuilder,
    access_token: &str,
) -> Result<reqwest::Response, ProviderError> {
    let response = request
        .bearer_auth(access_token)
        .send()
        .await
        .map_err(ProviderError::from_transport)?;
    rate_limited(response)
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
        let page: WirePage = serde_json::from_str(
            r#"{"data":[{"id":30530030,"name":"donation","username":null,"message":null,
                "amount":12.5,"currency":"RUB","is_shown":1,"created_at":"2019-09-29 09:00:00",
                "shown_at":null,"payin_system":{"title":"Bank card RUB"}}],
               "links":{"first":"x","last":"x","prev":null,"next":null},
               "meta":{"current_page":1,"per_page":30,"total":1}}"#,
        )
        .unwrap();
        let page = page.into_page();
        assert_eq!(page.data[0].donor_name, None);
        assert_eq!(page.data[0].message, "");
        assert_eq!(page.data[0].amount.to_string(), "12.5");
        assert_eq!(page.data[0].created_at, "2019-09-29T09:00:00Z");
        assert_eq!(page.links.next, None);
    }

    #[test]
    fn donationalerts_times_become_rfc3339_utc() {
        assert_eq!(
            da_time_to_rfc3339("2019-09-29 09:00:00").as_deref(),
            Some("2019-09-29T09:00:00Z")
        );
        assert_eq!(
            da_time_to_rfc3339("2019-09-29T12:00:00+03:00").as_deref(),
            Some("2019-09-29T09:00:00Z")
        );
        assert_eq!(da_time_to_rfc3339("yesterday"), None);
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn a_pushed_donation_parses_wrapped_as_sent_or_bare() {
        let donation = r#"{"id":30530031,"name":"donation","username":"viewer","message_type":"text",
            "message":"hi","amount":100.5,"currency":"rub","is_shown":0,
            "created_at":"2019-09-29 09:00:00","shown_at":null,"recipient":{"user_id":7},
            "reason":"Donation"}"#;
        let wrapped = format!(r#"{{"seq":15,"data":{donation}}}"#);

        for data in [wrapped.as_str(), donation] {
            let parsed = parse_pushed_donation(&raw(data)).unwrap();
            assert_eq!(parsed.id, 30530031);
            assert_eq!(parsed.donor_name.as_deref(), Some("viewer"));
            assert_eq!(parsed.amount.to_string(), "100.5");
            assert_eq!(
                parsed.currency, "RUB",
                "bounded as the list's donations are"
            );
            assert_eq!(parsed.created_at, "2019-09-29T09:00:00Z");
        }
    }

    #[test]
    fn a_pushed_donation_without_an_id_is_malformed() {
        let parsed = parse_pushed_donation(&raw(r#"{"seq":1,"data":{"amount":1}}"#));
        assert!(
            matches!(parsed, Err(ProviderError::Malformed { .. })),
            "{parsed:?}"
        );
    }

    #[test]
    fn the_socket_token_is_read_from_the_user_and_never_printed() {
        let user: Wrapped<DaUser> = serde_json::from_str(
            r#"{"data":{"id":7,"code":"c","name":"n","socket_connection_token":"eyJsecret"}}"#,
        )
        .unwrap();
        let token = user.data.socket_connection_token.as_ref().unwrap();
        assert_eq!(token.expose(), "eyJsecret");
        assert!(!format!("{:?}", user.data).contains("eyJsecret"));
        assert_eq!(donation_channel(user.data.id), "$alerts:donation_7");
    }
}
