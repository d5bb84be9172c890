//! Reading requests the way the providers do: query and form pairs, `Authorization`
//! headers, the host a client used.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};

/// Query or form pairs; with a repeated name the last value wins.
pub(crate) fn pairs_to_map(input: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(input).into_owned().collect()
}

/// The fields of a form body. A body of another type yields no fields, so the request
/// fails on its first required field, as it would at Twitch.
pub(crate) fn form_fields(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        tracing::warn!("a fake provider ignored a body that is not a urlencoded form");
        return HashMap::new();
    }
    pairs_to_map(body)
}

/// A field's value; an empty value counts as missing.
pub(crate) fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// Twitch's `scope` parameter: space-delimited (a `+` in the URL is a space).
pub(crate) fn split_scopes(scope: Option<&str>) -> Vec<String> {
    scope
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

pub(crate) enum Credential<'a> {
    Missing,
    Token(&'a str),
    /// Present but not `<scheme> <token>` with an accepted scheme.
    Malformed,
}

/// The token of an `Authorization: <scheme> <token>` header, schemes compared ignoring case.
pub(crate) fn credential<'a>(headers: &'a HeaderMap, schemes: &[&str]) -> Credential<'a> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credential::Missing;
    };
    let Ok(value) = value.to_str() else {
        return Credential::Malformed;
    };
    let value = value.trim();
    if value.is_empty() {
        return Credential::Missing;
    }
    match value.split_once(' ') {
        Some((scheme, token))
            if !token.trim().is_empty()
                && schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) =>
        {
            Credential::Token(token.trim())
        }
        _ => Credential::Malformed,
    }
}

/// The authority the client used to reach the fake, so that links it hands out work from
/// where the client stands.
pub(crate) fn request_host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| !host.is_empty())
        .unwrap_or("127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn an_authorization_header_yields_its_token_for_an_accepted_scheme() {
        let map = headers(&[(header::AUTHORIZATION, "oauth  abc ")]);
        assert!(matches!(
            credential(&map, &["OAuth", "Bearer"]),
            Credential::Token("abc")
        ));
    }

    #[test]
    fn an_authorization_header_with_another_scheme_or_no_token_is_malformed() {
        for value in ["Basic abc", "Bearer", "Bearer  ", "abc"] {
            let map = headers(&[(header::AUTHORIZATION, value)]);
            assert!(
                matches!(credential(&map, &["Bearer"]), Credential::Malformed),
                "{value}"
            );
        }
    }

    #[test]
    fn no_or_an_empty_authorization_header_is_missing() {
        assert!(matches!(
            credential(&HeaderMap::new(), &["Bearer"]),
            Credential::Missing
        ));
        let map = headers(&[(header::AUTHORIZATION, "")]);
        assert!(matches!(credential(&map, &["Bearer"]), Credential::Missing));
    }

    #[test]
    fn a_body_that_is_not_a_form_has_no_fields() {
        let json = headers(&[(header::CONTENT_TYPE, "application/json")]);
        assert!(form_fields(&json, b"client_id=x").is_empty());
        let form = headers(&[(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )]);
        assert_eq!(
            form_fields(&form, b"client_id=x&scope=chat%3Aread+chat%3Aedit")
                .get("scope")
                .map(String::as_str),
            Some("chat:read chat:edit")
        );
    }

    #[test]
    fn scopes_split_on_any_whitespace() {
        assert_eq!(
            split_scopes(Some(" chat:read  user:bot ")),
            ["chat:read", "user:bot"]
        );
        assert!(split_scopes(None).is_empty());
    }
}
