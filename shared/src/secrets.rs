//! `SECRETS_ARN`: secret settings kept in AWS Secrets Manager rather than in the function's
//! environment. The secret is a JSON object whose keys are variable names (any of
//! [`SECRET_VARIABLES`]); it is read once per process (per cold start), before the
//! configuration is parsed. A variable set in the environment wins over the secret; one
//! declared blank (template.yaml declares the secret variables empty, so that `sam local`
//! can give them values) counts as unset, as everywhere in the configuration.

use std::collections::HashMap;

use crate::config::ConfigError;

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
];

fn problem(text: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: "SECRETS_ARN",
        problem: text.into(),
    }
}

/// Reads the secret `arn` and adds its values to `vars` where the environment has none.
pub async fn merge_into(
    vars: &mut HashMap<String, String>,
    arn: &str,
    aws: &aws_config::SdkConfig,
) -> Result<(), ConfigError> {
    let client = aws_sdk_secretsmanager::Client::new(aws);
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            problem(format!(
                "the secret could not be read: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            ))
        })?;
    let text = output
        .secret_string()
        .ok_or_else(|| problem("the secret has no string value (a JSON object is expected)"))?;
    fill_unset(vars, parse(text)?);
    Ok(())
}

/// Adds `secret_vars` to `vars` where `vars` has no value: unset or blank.
pub fn fill_unset(vars: &mut HashMap<String, String>, secret_vars: Vec<(String, String)>) {
    for (name, value) in secret_vars {
        let slot = vars.entry(name).or_default();
        if slot.trim().is_empty() {
            *slot = value;
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
