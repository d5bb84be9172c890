//! AWS Signature Version 4, just what one JSON call to an AWS API needs: a POST to `/` with
//! no query string. Written out (about as long as a client's set-up code) so that a function
//! reading `SECRETS_ARN` carries no AWS SDK: the SDK doubled each binary's size and its
//! set-up took most of a cold start.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// Credentials as Lambda gives them to a function: in its environment, temporary ones with a
/// session token.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret<String>,
    pub session_token: Option<Secret<String>>,
}

/// One request to sign.
pub struct Request<'a> {
    pub method: &'a str,
    /// Already canonical: `/` for the JSON APIs.
    pub path: &'a str,
    /// Already canonical (sorted, encoded); empty for the JSON APIs.
    pub query: &'a str,
    /// Header names in lower case, each once; `host` among them. Signed all.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The `Authorization` header of `request` for `service` in `region` at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`, also sent as `x-amz-date`, and with a session token the
/// `x-amz-security-token` header; both must be among the request's headers).
pub fn authorization(
    credentials: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    request: &Request<'_>,
) -> String {
    let mut headers: Vec<(&str, &str)> = request.headers.to_vec();
    headers.sort_by(|a, b| a.0.cmp(b.0));
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{}\n", value.trim()))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        request.path,
        request.query,
        hex::encode(Sha256::digest(request.body)),
    );
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credentials.secret_access_key.expose()).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` for a time.
pub(crate) fn amz_date(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn credentials(access_key_id: &str, session_token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(EXAMPLE_SECRET.into()),
            session_token: session_token.map(|t| Secret::new(t.into())),
        }
    }

    /// AWS's own worked example of a signed request (IAM ListUsers).
    #[test]
    fn the_documented_example_signs_to_the_documented_signature() {
        let request = Request {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &[
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
                ("host", "iam.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ],
            body: b"",
        };
        let header = authorization(
            &credentials("AKIDEXAMPLE", None),
            "us-east-1",
            "iam",
            "20150830T123600Z",
            &request,
        );
        assert_eq!(
            header,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    /// A GetSecretValue with a session token, as botocore's `SigV4Auth` signs it.
    #[test]
    fn a_get_secret_value_with_a_session_token_signs_as_botocore_does() {
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[
                ("x-amz-target", "secretsmanager.GetSecretValue"),
                ("content-type", "application/x-amz-json-1.1"),
                ("host", "secretsmanager.us-east-1.amazonaws.com"),
                ("x-amz-date", "20261127T120000Z"),
                ("x-amz-security-token", "session-token-example"),
            ],
            body: br#"{"SecretId":"arn:aws:secretsmanager:us-east-1:123456789012:secret:avatar"}"#,
        };
        let header = authorization(
            &credentials("ASIAEXAMPLE", Some("session-token-example")),
            "us-east-1",
            "secretsmanager",
            "20261127T120000Z",
            &request,
        );
        assert!(header.ends_with(
            "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, \
             Signature=d2ab34d3eb471ef54c830604c398d2358104e05888dcf5342840cea100b98b1a"
        ));
    }

    #[test]
    fn amz_date_is_the_compact_utc_form() {
        let at = time::macros::datetime!(2026-11-27 13:04:05 +01:00);
        assert_eq!(amz_date(at), "20261127T120405Z");
    }
}
