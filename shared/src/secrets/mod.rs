//! `SECRETS_ARN`: secret settings kept in AWS Secrets Manager rather than in the function's
//! environment. It names one secret or several, comma-separated; each is a JSON object
//! whose keys are variable names (any of [`SECRET_VARIABLES`]). They are read once per
//! process (per cold start), at once, before the configuration is parsed, and merged: a
//! variable in two of them stops the start (which value would win is anyone's guess), so
//! each lives in one secret. A variable set in the environment wins over the secrets; one
//! declared blank (template.yaml declares the secret variables empty, so that `sam local`
//! can give them values) counts as unset, as everywhere in the configuration.
//!
//! The stack keeps one secret per purpose ([`SecretPurpose`]) and gives each function only
//! the ones it uses ([`needed_by`]).

mod purpose;
pub mod sigv4;

use std::collections::HashMap;
use std::time::Duration;

pub use self::purpose::{NEEDED_BY_REALTIME_BRIDGE, SecretPurpose, needed_by};
use crate::secret::Secret;
use crate::vars::ConfigError;

/// The variables a secret may carry.
pub const SECRET_VARIABLES: &[&str] = &[
    "TWITCH_CLIENT_ID",
    "TWITCH_CLIENT_SECRET",
    "DA_CLIENT_ID",
    "DA_CLIENT_SECRET",
    "TOKEN_ENCRYPTION_KEY",
    "TOKEN_ENCRYPTION_OLD_KEYS",
    "SESSION_SECRET",
    "INTERNAL_API_TOKEN",
    "REDIS_URL",
    "REDIS_LOCK_URLS",
    "REDIS_AUTH_TOKEN",
];

fn problem(text: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: "SECRETS_ARN",
        problem: text.into(),
    }
}

/// Reads the secrets `arns` names (one ARN, or several comma-separated) and adds their
/// values to `vars` where it has none. The AWS credentials, region and endpoint come from
/// `vars` too (see [`AwsEnvironment`]).
pub async fn merge_into(vars: &mut HashMap<String, String>, arns: &str) -> Result<(), ConfigError> {
    let arns: Vec<&str> = arns
        .split(',')
        .map(str::trim)
        .filter(|arn| !arn.is_empty())
        .collect();
    let Some(first) = arns.first() else {
        return Ok(());
    };
    let aws = AwsEnvironment::from_vars(vars, first)?;
    // At once: each read is a round trip a cold start waits for.
    let texts = futures_util::future::try_join_all(arns.iter().map(|arn| async {
        get_secret_string(&aws, arn)
            .await
            .map_err(|e| in_secret(arn, e))
    }))
    .await?;
    let mut merged = Vec::new();
    let mut holder: HashMap<String, &str> = HashMap::new();
    for (arn, text) in arns.iter().zip(&texts) {
        for (name, value) in parse(text.expose()).map_err(|e| in_secret(arn, e))? {
            if let Some(other) = holder.insert(name.clone(), arn) {
                return Err(problem(format!(
                    "{name} is in two of its secrets ({} and {}); keep each variable in one",
                    secret_name(other),
                    secret_name(arn)
                )));
            }
            merged.push((name, value));
        }
    }
    fill_unset(vars, merged);
    Ok(())
}

/// The secret's name in `arn` (`arn:aws:secretsmanager:{region}:{account}:secret:{name}`),
/// to say which secret a problem is in.
fn secret_name(arn: &str) -> &str {
    arn.split_once(":secret:").map_or(arn, |(_, name)| name)
}

fn in_secret(arn: &str, error: ConfigError) -> ConfigError {
    problem(format!("{}: {}", secret_name(arn), error.problem))
}

/// Where and as whom to call Secrets Manager: the variables Lambda sets for a function
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`), and
/// the AWS tools' endpoint overrides (`AWS_ENDPOINT_URL_SECRETS_MANAGER`,
/// `AWS_ENDPOINT_URL`). No profile files and no instance metadata: outside Lambda, export
/// credentials.
#[derive(Debug)]
pub struct AwsEnvironment {
    pub credentials: sigv4::Credentials,
    pub region: String,
    pub endpoint: url::Url,
}

impl AwsEnvironment {
    pub fn from_vars(vars: &HashMap<String, String>, arn: &str) -> Result<Self, ConfigError> {
        let get = |name: &str| crate::vars::value(vars, name).map(str::to_owned);
        let (Some(access_key_id), Some(secret_access_key)) =
            (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(problem(
                "reading the secret needs AWS credentials in AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones); Lambda \
                 sets them, elsewhere export them",
            ));
        };
        // arn:aws:secretsmanager:{region}:{account}:secret:{name}
        let arn_region = arn.split(':').nth(3).filter(|r| !r.is_empty());
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .or_else(|| arn_region.map(str::to_owned))
            .ok_or_else(|| problem("no region: set AWS_REGION or give a full secret ARN"))?;
        let endpoint = get("AWS_ENDPOINT_URL_SECRETS_MANAGER")
            .or_else(|| get("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"));
        let endpoint = url::Url::parse(&endpoint)
            .ok()
            .filter(|u| u.host_str().is_some() && matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                problem(format!(
                    "the Secrets Manager endpoint {endpoint:?} is not an http(s) URL"
                ))
            })?;
        Ok(Self {
            credentials: sigv4::Credentials {
                access_key_id,
                secret_access_key: Secret::new(secret_access_key),
                session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
            },
            region,
            endpoint,
        })
    }
}

/// How long reading the secret may take before the start fails (and Lambda retries it).
const SECRETS_MANAGER_TIMEOUT: Duration = Duration::from_secs(10);

/// `GetSecretValue` of `arn`: its string value.
pub(crate) async fn get_secret_string(
    aws: &AwsEnvironment,
    arn: &str,
) -> Result<Secret<String>, ConfigError> {
    let body = serde_json::to_vec(&serde_json::json!({ "SecretId": arn }))
        .expect("a JSON object serialises");
    let host = match aws.endpoint.port() {
        Some(port) => format!("{}:{port}", aws.endpoint.host_str().unwrap_or_default()),
        None => aws.endpoint.host_str().unwrap_or_default().to_owned(),
    };
    let amz_date = sigv4::amz_date(time::OffsetDateTime::now_utc());
    let mut headers = vec![
        ("content-type", "application/x-amz-json-1.1"),
        ("host", host.as_str()),
        ("x-amz-date", amz_date.as_str()),
        ("x-amz-target", "secretsmanager.GetSecretValue"),
    ];
    if let Some(token) = &aws.credentials.session_token {
        headers.push(("x-amz-security-token", token.expose().as_str()));
    }
    let authorization = sigv4::authorization(
        &aws.credentials,
        &aws.region,
        "secretsmanager",
        &amz_date,
        &sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: &body,
        },
    );
    let mut request = crate::outbound::http_client(SECRETS_MANAGER_TIMEOUT)
        .post(aws.endpoint.clone())
        .body(body);
    for (name, value) in &headers {
        request = request.header(*name, *value);
    }
    let response = request
        .header("authorization", authorization)
        .send()
        .await
        .map_err(|e| {
            problem(format!(
                "Secrets Manager at {} did not answer: {e}",
                aws.endpoint
            ))
        })?;
    let status = response.status();
    let text = response.text().await.map_err(|e| {
        problem(format!(
            "Secrets Manager's answer ({status}) was cut off: {e}"
        ))
    })?;
    if !status.is_success() {
        return Err(problem(format!(
            "the secret could not be read: {status} {}",
            refusal(&text)
        )));
    }
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| problem("Secrets Manager answered 200 with no JSON body"))?;
    match answer {
        serde_json::Value::Object(mut object) => match object.remove("SecretString") {
            Some(serde_json::Value::String(text)) => Ok(Secret::new(text)),
            _ => Err(problem(
                "the secret has no string value (a JSON object is expected)",
            )),
        },
        _ => Err(problem(
            "Secrets Manager answered with something other than an object",
        )),
    }
}

/// What an AWS error answer says: `{"__type": "…#Kind", "message": "…"}` from the JSON
/// APIs, `<Code>…</Code>` from a gateway in front of one. Names the refusal, never a value.
fn refusal(body: &str) -> String {
    if let Ok(answer) = serde_json::from_str::<serde_json::Value>(body) {
        let kind = answer["__type"].as_str().unwrap_or("unknown error");
        let kind = kind.rsplit('#').next().unwrap_or(kind);
        let message = answer["message"]
            .as_str()
            .or_else(|| answer["Message"].as_str())
            .unwrap_or("");
        return format!("{kind}: {message}");
    }
    match body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
    {
        Some((code, _)) => code.to_owned(),
        None => "with no error code".to_owned(),
    }
}

/// Adds `secret_vars` to `vars` where `vars` has no value: unset or blank.
pub(crate) fn fill_unset(vars: &mut HashMap<String, String>, secret_vars: Vec<(String, String)>) {
    for (name, value) in secret_vars {
        if crate::vars::value(vars, &name).is_none() {
            vars.insert(name, value);
        }
    }
}

/// The secret's JSON object as variables. Values never appear in an error.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|_| problem("the secret is not a JSON object of variable names to strings"))?;
    let mut vars = Vec::with_capacity(object.len());
    for (name, value) in object {
        if !SECRET_VARIABLES.contains(&name.as_str()) {
            return Err(problem(format!(
                "the secret has the key {name:?}, which is not one of {}",
                SECRET_VARIABLES.join(", ")
            )));
        }
        let serde_json::Value::String(value) = value else {
            return Err(problem(format!("the secret's {name} must be a string")));
        };
        vars.push((name, value));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_object_becomes_variables() {
        let vars = parse(r#"{"TWITCH_CLIENT_SECRET":"s1","SESSION_SECRET":"s2"}"#).unwrap();
        assert_eq!(vars.len(), 2);
        assert!(vars.contains(&("TWITCH_CLIENT_SECRET".into(), "s1".into())));
    }

    #[test]
    fn the_secret_fills_unset_and_blank_variables_and_the_environment_wins_otherwise() {
        let mut vars: HashMap<String, String> = [
            ("TWITCH_CLIENT_ID", "from-environment"),
            ("TWITCH_CLIENT_SECRET", ""),
            ("SESSION_SECRET", "  "),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let secret = parse(
            r#"{"TWITCH_CLIENT_ID":"s0","TWITCH_CLIENT_SECRET":"s1","SESSION_SECRET":"s2","DA_CLIENT_ID":"s3"}"#,
        )
        .unwrap();

        fill_unset(&mut vars, secret);

        assert_eq!(vars["TWITCH_CLIENT_ID"], "from-environment");
        assert_eq!(vars["TWITCH_CLIENT_SECRET"], "s1");
        assert_eq!(vars["SESSION_SECRET"], "s2");
        assert_eq!(vars["DA_CLIENT_ID"], "s3");
    }

    #[test]
    fn every_purpose_holds_only_secret_variables_and_every_function_reaches_redis() {
        for purpose in SecretPurpose::ALL {
            for name in purpose.variables() {
                assert!(SECRET_VARIABLES.contains(name), "{purpose:?}: {name}");
            }
        }
        for function in crate::bundle::Function::ALL {
            assert!(
                needed_by(*function).contains(&SecretPurpose::Redis),
                "{function:?}"
            );
        }
    }

    #[test]
    fn a_problem_names_the_secret_it_is_in() {
        let arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:avatar/session-AbCdEf";
        let error = in_secret(arn, problem("the secret is not a JSON object"));
        assert_eq!(error.variable, "SECRETS_ARN");
        assert_eq!(
            error.problem,
            "avatar/session-AbCdEf: the secret is not a JSON object"
        );
    }

    #[test]
    fn unknown_keys_and_non_strings_are_refused_without_echoing_values() {
        let unknown = parse(r#"{"PORT":"hunter2"}"#).unwrap_err();
        assert_eq!(unknown.variable, "SECRETS_ARN");
        assert!(unknown.problem.contains("PORT") && !unknown.problem.contains("hunter2"));
        let number = parse(r#"{"SESSION_SECRET":12345}"#).unwrap_err();
        assert!(!number.problem.contains("12345"));
        let garbage = parse("hunter2").unwrap_err();
        assert!(!garbage.problem.contains("hunter2"));
    }
}
