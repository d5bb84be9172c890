//! template.yaml's build and environment settings: one architecture parameter for every
//! function, every function built by cargo-lambda, and the variables declared empty (so that
//! `sam local start-api` can set them) behaving as unset in the deployed configuration.

use std::collections::HashMap;

use serde_yaml::Value;
use serde_yaml::value::TaggedValue;
use shared::config::Config;

/// template.yaml as YAML, intrinsics (`!Ref`, `!If`) kept as tagged values.
fn template() -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

fn functions(template: &Value) -> Vec<(&str, &Value)> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(name, r)| (name.as_str().expect("a logical id"), r))
        .collect()
}

#[test]
fn every_function_is_built_by_cargo_lambda_for_the_architecture_parameter() {
    let template = template();
    let parameter = &template["Parameters"]["Architecture"];
    assert_eq!(parameter["Default"].as_str(), Some("arm64"));
    let allowed: Vec<&str> = parameter["AllowedValues"]
        .as_sequence()
        .expect("AllowedValues")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(allowed, ["arm64", "x86_64"]);
    let Value::Tagged(reference) = &template["Globals"]["Function"]["Architectures"][0] else {
        panic!("Globals.Function.Architectures is not [!Ref Architecture]");
    };
    assert_eq!(
        **reference,
        TaggedValue {
            tag: serde_yaml::value::Tag::new("Ref"),
            value: Value::from("Architecture"),
        }
    );
    for (name, function) in functions(&template) {
        assert!(
            function["Properties"].get("Architectures").is_none(),
            "{name} must take the architecture from Globals"
        );
        assert_eq!(
            function["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{name}"
        );
        assert!(
            function["Metadata"]["BuildProperties"]["Binary"].is_string(),
            "{name} names its binary"
        );
    }
}

#[test]
fn variables_declared_empty_for_sam_local_are_unset_in_aws() {
    // Arrange: a function's environment in AWS before SECRETS_ARN is read: the variables
    // template.yaml declares empty, as Lambda sets them.
    let template = template();
    let declared = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .expect("Globals.Function.Environment.Variables");
    let mut vars: HashMap<String, String> = declared
        .iter()
        .filter(|(_, value)| value.as_str() == Some(""))
        .map(|(name, _)| (name.as_str().unwrap().to_owned(), String::new()))
        .collect();
    for needed in [
        "TWITCH_CLIENT_SECRET",
        "TOKEN_ENCRYPTION_KEY",
        "SESSION_SECRET",
        "TWITCH_AUTH_BASE_URL",
        "TWITCH_API_BASE_URL",
    ] {
        assert!(
            vars.contains_key(needed),
            "{needed} is not declared empty, so sam local cannot set it"
        );
    }
    vars.insert("AWS_LAMBDA_FUNCTION_NAME".into(), "health".into());

    // Act + Assert: empty required keys are errors naming them...
    let errors = Config::from_vars(&vars).unwrap_err();
    assert!(errors.names("TOKEN_ENCRYPTION_KEY"), "{errors}");
    assert!(errors.names("SESSION_SECRET"), "{errors}");

    // ...and with the keys given (as SECRETS_ARN gives them), the rest keep their defaults.
    let key = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    vars.insert("TOKEN_ENCRYPTION_KEY".into(), key.into());
    vars.insert("SESSION_SECRET".into(), key.into());
    let config = Config::from_vars(&vars).expect("empty means unset");
    assert!(config.twitch.client_id.is_none());
    assert!(config.twitch.client_secret.is_none());
    assert_eq!(
        config.twitch.auth_base_url.as_str(),
        "https://id.twitch.tv/oauth2"
    );
    assert_eq!(
        config.twitch.api_base_url.as_str(),
        "https://api.twitch.tv/helix"
    );
    assert_eq!(
        config.donationalerts.base_url.as_str(),
        "https://www.donationalerts.com/"
    );
    assert!(config.donationalerts.client_id.is_none());
}
