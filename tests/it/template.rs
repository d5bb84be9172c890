//! The deployment (template.yaml) read as CloudFormation: it has no dependency cycle (so the
//! functions may be given the API's own URL), every function mounts only the database's
//! access point and is given (and may read) only the secrets its handlers use, the network
//! lets the functions out on HTTPS and to the database and Redis only, Redis needs TLS and
//! an AUTH token, the file system only IAM-authorized mounts through an access point over
//! TLS, every HTTP function is invoked only through its integration, the access log names
//! the IAM caller, scheduled functions fire on their schedule, the alarms watch every
//! function, the app's metric alarms match what the functions are given, and the outputs
//! name the redirect URIs the callbacks serve. The realtime bridge (ECS Fargate) exists only
//! with its image, runs in the functions' subnets on their instruction set, mounts their
//! access point, is given the secrets it uses by ECS from their JSON keys and may read no
//! other, leaves and is admitted as the functions are, logs to its own group, and an alarm
//! fires when none of its tasks runs. The routes themselves are checked against the route
//! table in `routes.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Map, Value, json};
use shared::bundle::{Function, FunctionKind};
use shared::secrets::{NEEDED_BY_REALTIME_BRIDGE, SecretPurpose, needed_by};
use shared::web::routes::all_routes;

/// template.yaml as CloudFormation JSON: short-form intrinsics (`!Ref X`, `!GetAtt A.B`,
/// `!Sub …`) become their long forms (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, …), so
/// checks compare plain values whichever form the template uses.
pub struct Template(Value);

impl Template {
    pub fn load() -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let text = std::fs::read_to_string(path).expect("template.yaml");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("template.yaml is YAML");
        Self(from_yaml(yaml))
    }

    pub fn resources(&self) -> &Map<String, Value> {
        self.0["Resources"].as_object().expect("Resources")
    }

    /// Logical id and resource of every resource of `kind`, in template order.
    pub fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> {
        self.resources()
            .iter()
            .filter(move |(_, resource)| resource["Type"] == kind)
            .map(|(id, resource)| (id.as_str(), resource))
    }

    /// Binary name → logical id of every function resource.
    pub fn functions(&self) -> BTreeMap<String, String> {
        self.of_type("AWS::Serverless::Function")
            .map(|(id, resource)| {
                let binary = resource["Metadata"]["BuildProperties"]["Binary"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{id} names no Binary"));
                (binary.to_owned(), id.to_owned())
            })
            .collect()
    }

    /// The logical id of the function resource of `function`.
    pub fn function_id(&self, function: Function) -> String {
        self.functions()
            .remove(function.binary())
            .unwrap_or_else(|| panic!("{} has no resource", function.binary()))
    }

    /// The event types of a function resource (SAM events: Schedule, HttpApi, …).
    pub fn event_types(&self, function_id: &str) -> BTreeSet<String> {
        self.resources()[function_id]["Properties"]["Events"]
            .as_object()
            .map(|events| {
                events
                    .values()
                    .filter_map(|event| event["Type"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (method, path, function logical id) of every route of the HTTP API.
    pub fn routes(&self) -> BTreeSet<(String, String, String)> {
        self.of_type("AWS::ApiGatewayV2::Route")
            .map(|(id, route)| {
                let key = route["Properties"]["RouteKey"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{id} has no RouteKey"));
                let (method, path) = key
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{id}: route key {key:?}"));
                let integration = self.route_integration(id);
                (
                    method.to_owned(),
                    path.to_owned(),
                    self.integrated_function(&integration),
                )
            })
            .collect()
    }

    /// The integration a route targets (`!Sub integrations/${X}`).
    fn route_integration(&self, route_id: &str) -> String {
        let target = &self.resources()[route_id]["Properties"]["Target"];
        target["Fn::Sub"]
            .as_str()
            .and_then(|s| s.strip_prefix("integrations/${"))
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{route_id} targets {target}, not one integration"))
            .to_owned()
    }

    /// The function an integration invokes (`!GetAtt F.Arn`).
    fn integrated_function(&self, integration_id: &str) -> String {
        let integration = &self.resources()[integration_id];
        assert_eq!(
            integration["Type"], "AWS::ApiGatewayV2::Integration",
            "{integration_id}"
        );
        integration["Properties"]["IntegrationUri"]["Fn::GetAtt"]
            .get(0)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{integration_id} invokes no function by !GetAtt F.Arn"))
            .to_owned()
    }

    pub fn globals(&self) -> &Value {
        &self.0["Globals"]["Function"]
    }

    pub fn output(&self, name: &str) -> &Value {
        &self.0["Outputs"][name]["Value"]
    }
}

/// Converts YAML to JSON, turning CloudFormation's short-form tags into long-form objects.
fn from_yaml(yaml: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).expect("a YAML number is a JSON number"),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(from_yaml).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Y::String(s) => s,
                        other => serde_yaml::to_string(&other).unwrap().trim().to_owned(),
                    };
                    (key, from_yaml(value))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = from_yaml(tagged.value);
            match name {
                "Ref" | "Condition" => json!({ name: value }),
                "GetAtt" => {
                    let parts = match value {
                        Value::String(s) => {
                            let (resource, attribute) = s
                                .split_once('.')
                                .unwrap_or_else(|| panic!("!GetAtt {s}: no attribute"));
                            json!([resource, attribute])
                        }
                        list => list,
                    };
                    json!({ "Fn::GetAtt": parts })
                }
                _ => json!({ format!("Fn::{name}"): value }),
            }
        }
    }
}

/// Logical ids that `value` refers to (Ref, GetAtt, Sub, DependsOn), among `resources`.
fn references(value: &Value, resources: &Map<String, Value>, found: &mut BTreeSet<String>) {
    names_referred_to(value, &|name| resources.contains_key(name), found);
}

/// The names `value` refers to (Ref, GetAtt, Sub, DependsOn) for which `known` holds.
fn names_referred_to(value: &Value, known: &dyn Fn(&str) -> bool, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let named: Vec<&str> = match (key.as_str(), inner) {
                    ("Ref" | "DependsOn", Value::String(name)) => vec![name],
                    ("DependsOn", Value::Array(names)) => {
                        names.iter().filter_map(Value::as_str).collect()
                    }
                    ("Fn::GetAtt", Value::Array(parts)) => {
                        parts.first().and_then(Value::as_str).into_iter().collect()
                    }
                    ("Fn::Sub", sub) => sub
                        .as_str()
                        .or_else(|| sub.get(0).and_then(Value::as_str))
                        .unwrap_or("")
                        .split("${")
                        .skip(1)
                        .filter_map(|piece| piece.split(['}', '.']).next())
                        .collect(),
                    _ => Vec::new(),
                };
                found.extend(
                    named
                        .into_iter()
                        .filter(|name| known(name))
                        .map(str::to_owned),
                );
                names_referred_to(inner, known, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                names_referred_to(item, known, found);
            }
        }
        _ => {}
    }
}

/// Each resource and what it depends on, as CloudFormation will see it once SAM has applied
/// the Globals to every function and turned API events into definitions that refer to
/// their function.
fn dependencies(template: &Template) -> BTreeMap<String, BTreeSet<String>> {
    let resources = template.resources();
    let mut globals = BTreeSet::new();
    references(template.globals(), resources, &mut globals);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, resource) in resources {
        let mut deps = BTreeSet::new();
        if resource["Type"] == "AWS::Serverless::Function" {
            // SAM turns an API event into a route of that API, which refers to the function.
            let mut function = resource.clone();
            let events = function["Properties"]
                .as_object_mut()
                .and_then(|properties| properties.remove("Events"));
            for event in events
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|e| e.values())
            {
                let mut apis = BTreeSet::new();
                references(&event["Properties"]["ApiId"], resources, &mut apis);
                for api in apis {
                    graph.entry(api).or_default().insert(id.clone());
                }
            }
            references(&function, resources, &mut deps);
            deps.extend(globals.iter().cloned());
        } else {
            references(resource, resources, &mut deps);
        }
        deps.remove(id);
        graph.entry(id.clone()).or_default().extend(deps);
    }
    graph
}

/// A dependency cycle, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_cycle_check_finds_a_function_given_the_url_of_an_api_defined_by_its_events() {
    // The shape SAM HttpApi events would give: the API's definition refers to the function.
    let yaml = r#"
Globals:
  Function:
    Environment:
      Variables:
        PUBLIC_BASE_URL: !GetAtt Api.ApiEndpoint
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Health:
          Type: HttpApi
          Properties:
            ApiId: !Ref Api
"#;
    let template = Template(from_yaml(serde_yaml::from_str(yaml).unwrap()));

    let cycle = find_cycle(&dependencies(&template));

    assert!(cycle.is_some(), "{:?}", dependencies(&template));
}

#[test]
fn the_template_has_no_dependency_cycle() {
    let template = Template::load();
    let graph = dependencies(&template);
    // The case that would close one: every function is given the API's own URL.
    for function in template.functions().values() {
        assert!(graph[function].contains("HttpApi"), "{function}");
    }
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn sam_local_start_api_meets_the_http_api_before_any_function() {
    // `sam local start-api` reads the routes of the first kind of API it meets in the
    // template: SAM events when a function comes first, and this template has none.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let first = yaml["Resources"]
        .as_mapping()
        .expect("Resources")
        .values()
        .find_map(|resource| {
            let kind = resource["Type"].as_str()?;
            (kind.starts_with("AWS::Serverless::") || kind.starts_with("AWS::ApiGateway"))
                .then_some(kind)
        })
        .expect("an API or a function");
    assert_eq!(first, "AWS::ApiGatewayV2::Api");
}

#[test]
fn every_http_function_is_invoked_through_one_integration_and_one_permission_of_this_api() {
    let template = Template::load();
    let integrations: Vec<(&str, String)> = template
        .of_type("AWS::ApiGatewayV2::Integration")
        .map(|(id, _)| (id, template.integrated_function(id)))
        .collect();
    let permissions: Vec<(&str, &Value)> = template.of_type("AWS::Lambda::Permission").collect();
    for function in Function::ALL {
        let id = template.function_id(*function);
        let its_integrations: Vec<&str> = integrations
            .iter()
            .filter(|(_, target)| *target == id)
            .map(|(integration, _)| *integration)
            .collect();
        let its_permissions: Vec<&Value> = permissions
            .iter()
            .filter(|(_, p)| p["Properties"]["FunctionName"] == json!({ "Ref": id }))
            .map(|(_, p)| &p["Properties"])
            .collect();
        match function.kind() {
            FunctionKind::Http => {
                assert_eq!(its_integrations.len(), 1, "{id}: {its_integrations:?}");
                let integration = &template.resources()[its_integrations[0]]["Properties"];
                assert_eq!(integration["IntegrationType"], "AWS_PROXY", "{id}");
                assert_eq!(integration["PayloadFormatVersion"], "2.0", "{id}");
                assert_eq!(integration["ApiId"], json!({ "Ref": "HttpApi" }), "{id}");
                assert_eq!(its_permissions.len(), 1, "{id}: {its_permissions:?}");
                let permission = its_permissions[0];
                assert_eq!(permission["Principal"], "apigateway.amazonaws.com", "{id}");
                assert_eq!(permission["Action"], "lambda:InvokeFunction", "{id}");
                let source = permission["SourceArn"]["Fn::Sub"].as_str().unwrap_or("");
                assert!(
                    source.starts_with("arn:${AWS::Partition}:execute-api:")
                        && source.ends_with(":${HttpApi}/*"),
                    "{id} may be invoked by more than this API: {source:?}"
                );
            }
            FunctionKind::Scheduled => {
                assert!(its_integrations.is_empty(), "{id}: {its_integrations:?}");
                assert!(its_permissions.is_empty(), "{id}: {its_permissions:?}");
            }
        }
    }
    assert_eq!(
        permissions.len(),
        integrations.len(),
        "a permission or an integration belongs to no function"
    );
}

#[test]
fn only_internal_routes_need_iam_and_every_other_route_is_public() {
    let template = Template::load();
    for (id, route) in template.of_type("AWS::ApiGatewayV2::Route") {
        let properties = &route["Properties"];
        let key = properties["RouteKey"].as_str().unwrap();
        let authorization = properties["AuthorizationType"].as_str().unwrap_or("NONE");
        let expected = if key.split(' ').nth(1).unwrap().starts_with("/internal/") {
            "AWS_IAM"
        } else {
            "NONE"
        };
        assert_eq!(authorization, expected, "{id} ({key})");
        assert_eq!(properties["ApiId"], json!({ "Ref": "HttpApi" }), "{id}");
    }
}

/// Each scheduled function's schedule (da-poll every minute).
const SCHEDULES: &[(&str, &str)] = &[
    ("da-poll", "rate(1 minute)"),
    ("token-validate", "rate(10 minutes)"),
];

#[test]
fn scheduled_functions_fire_on_their_schedule_and_no_other_function_does() {
    let template = Template::load();
    let scheduled: BTreeSet<&str> = Function::ALL
        .iter()
        .filter(|f| f.kind() == FunctionKind::Scheduled)
        .map(|f| f.binary())
        .collect();
    let expected: BTreeSet<&str> = SCHEDULES.iter().map(|(binary, _)| *binary).collect();
    assert_eq!(scheduled, expected, "Function::ALL against SCHEDULES");

    let mut found = BTreeMap::new();
    for (binary, id) in template.functions() {
        let events = &template.resources()[&id]["Properties"]["Events"];
        for event in events.as_object().into_iter().flat_map(|e| e.values()) {
            let properties = &event["Properties"];
            let expression = match event["Type"].as_str() {
                Some("Schedule") => &properties["Schedule"],
                Some("ScheduleV2") => &properties["ScheduleExpression"],
                _ => continue,
            };
            let previous = found.insert(binary.clone(), expression.as_str().unwrap().to_owned());
            assert!(previous.is_none(), "{binary} has two schedules");
        }
    }
    let expected: BTreeMap<String, String> = SCHEDULES
        .iter()
        .map(|(binary, expression)| (binary.to_string(), expression.to_string()))
        .collect();
    assert_eq!(found, expected);
}

/// The logical id of the secret of each purpose.
fn secret_resource(purpose: SecretPurpose) -> &'static str {
    match purpose {
        SecretPurpose::SessionKey => "SessionKeySecret",
        SecretPurpose::TokenKeys => "TokenKeysSecret",
        SecretPurpose::TwitchClient => "TwitchClientSecret",
        SecretPurpose::DonationAlertsClient => "DonationAlertsClientSecret",
        SecretPurpose::Redis => "RedisSecret",
    }
}

#[test]
fn every_function_mounts_only_the_access_point_and_is_given_only_the_secrets_it_uses() {
    // Arrange
    let template = Template::load();
    let access_point = json!([{
        "Arn": { "Fn::GetAtt": ["EfsAccessPoint", "Arn"] },
        "LocalMountPath": "/mnt/data",
    }]);
    let globals = template.globals();

    // Assert: the functions are told where the database is, and each where its own secrets
    // are...
    let variables = &globals["Environment"]["Variables"];
    assert_eq!(variables["SQLITE_PATH"], "/mnt/data/data.sqlite");
    assert!(variables.get("SECRETS_ARN").is_none(), "no secret for all");
    assert!(globals.get("FileSystemConfigs").is_none());
    assert!(globals.get("Policies").is_none() && globals.get("Role").is_none());

    // ...each mounts the access point, has the data access policy, and may read exactly the
    // secrets its SECRETS_ARN lists, which are the ones its handlers use...
    for function in Function::ALL {
        let id = template.function_id(*function);
        let properties = &template.resources()[&id]["Properties"];
        let secrets: Vec<Value> = needed_by(*function)
            .iter()
            .map(|purpose| json!({ "Ref": secret_resource(*purpose) }))
            .collect();
        assert_eq!(properties["FileSystemConfigs"], access_point, "{id}");
        assert_eq!(
            properties["Environment"]["Variables"]["SECRETS_ARN"],
            json!({ "Fn::Join": [",", secrets] }),
            "{id}"
        );
        let mut policies = vec![json!({ "Ref": "FunctionDataAccessPolicy" })];
        policies.extend(secrets.iter().map(
            |secret| json!({ "AWSSecretsManagerGetSecretValuePolicy": { "SecretArn": secret } }),
        ));
        assert_eq!(properties["Policies"], Value::Array(policies), "{id}");
        assert!(properties.get("Role").is_none(), "{id} has its own role");
    }
    // (health and auth-start, above all, never read a key that opens tokens or a client
    // secret.)
    for function in [Function::Health, Function::AuthStart] {
        let given = needed_by(function);
        for purpose in [
            SecretPurpose::TokenKeys,
            SecretPurpose::TwitchClient,
            SecretPurpose::DonationAlertsClient,
        ] {
            assert!(!given.contains(&purpose), "{function:?} reads {purpose:?}");
        }
    }

    // ...and the data access policy allows mounting and writing through that access point,
    // nothing else.
    let policy = &template.resources()["FunctionDataAccessPolicy"];
    assert_eq!(policy["Type"], "AWS::IAM::ManagedPolicy");
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .expect("statements");
    assert_eq!(statements.len(), 1, "{statements:?}");
    let mount = &statements[0];
    assert_eq!(mount["Effect"], "Allow");
    assert_eq!(
        mount["Action"],
        json!([
            "elasticfilesystem:ClientMount",
            "elasticfilesystem:ClientWrite"
        ])
    );
    assert_eq!(
        mount["Resource"],
        json!({ "Fn::GetAtt": ["EfsFileSystem", "Arn"] })
    );
    assert_eq!(
        mount["Condition"],
        json!({ "StringEquals": { "elasticfilesystem:AccessPointArn": { "Fn::GetAtt": ["EfsAccessPoint", "Arn"] } } })
    );
}

/// The security group rules that let `group`'s members out: the group's own and the
/// standalone egress resources attached to it, each with its resource's condition.
fn egress_of(template: &Template, group: &str) -> Vec<Value> {
    let properties = &template.resources()[group]["Properties"];
    let mut rules: Vec<Value> = properties["SecurityGroupEgress"]
        .as_array()
        .unwrap_or_else(|| panic!("{group} lists its egress, which drops the allow-all default"))
        .clone();
    for (_, resource) in template.of_type("AWS::EC2::SecurityGroupEgress") {
        let properties = &resource["Properties"];
        if properties["GroupId"] != json!({ "Fn::GetAtt": [group, "GroupId"] }) {
            continue;
        }
        let mut rule = properties.clone();
        rule["Condition"] = resource.get("Condition").cloned().unwrap_or(Value::Null);
        rules.push(rule);
    }
    rules
}

/// Each rule as `tcp FROM-TO to DESTINATION (CONDITION)`; `always` for a rule without one.
fn summarize_egress(rules: &[Value]) -> BTreeSet<String> {
    rules
        .iter()
        .map(|rule| {
            assert_eq!(rule["IpProtocol"], "tcp", "{rule}");
            let to = rule
                .get("DestinationSecurityGroupId")
                .map(|group| group["Fn::GetAtt"][0].as_str().unwrap().to_owned())
                .or_else(|| rule["CidrIp"].as_str().map(str::to_owned))
                .unwrap_or_else(|| panic!("a rule to nowhere: {rule}"));
            format!(
                "{} {}-{} to {to} ({})",
                rule["IpProtocol"].as_str().unwrap(),
                rule["FromPort"],
                rule["ToPort"],
                rule["Condition"].as_str().unwrap_or("always")
            )
        })
        .collect()
}

#[test]
fn the_functions_may_connect_out_on_https_and_to_the_database_and_redis_only() {
    let template = Template::load();
    let summary = summarize_egress(&egress_of(&template, "FunctionSecurityGroup"));
    let expected: BTreeSet<String> = [
        "tcp 443-443 to 0.0.0.0/0 (always)",
        "tcp 2049-2049 to EfsSecurityGroup (always)",
        r#"tcp 6379-6379 to RedisSecurityGroup (CreateRedis)"#,
        r#"tcp {"Ref":"RedisPort"}-{"Ref":"RedisPort"} to 0.0.0.0/0 (UseExistingRedis)"#,
    ]
    .map(str::to_owned)
    .into_iter()
    .collect();
    assert_eq!(summary, expected);
    // The other end admits them on the same ports.
    for (group, port) in [("EfsSecurityGroup", 2049), ("RedisSecurityGroup", 6379)] {
        let ingress = &template.resources()[group]["Properties"]["SecurityGroupIngress"];
        assert_eq!(ingress[0]["FromPort"], port, "{group}");
        assert_eq!(
            ingress[0]["SourceSecurityGroupId"],
            json!({ "Ref": "FunctionSecurityGroup" }),
            "{group}"
        );
    }
}

#[test]
fn redis_requires_tls_and_an_auth_token_and_an_existing_redis_url_travels_only_in_its_secret() {
    let template = Template::load();
    let resources = template.resources();

    // The stack's ElastiCache: TLS, and the AUTH token the Redis secret generates.
    let cluster = &resources["RedisReplicationGroup"]["Properties"];
    assert_eq!(cluster["TransitEncryptionEnabled"], true);
    assert_eq!(
        cluster["AuthToken"],
        json!({ "Fn::Sub": "{{resolve:secretsmanager:${RedisSecret}:SecretString:REDIS_AUTH_TOKEN}}" })
    );
    let secret = &resources["RedisSecret"]["Properties"];
    let generated = &secret["GenerateSecretString"]["Fn::If"];
    assert_eq!(generated[0], "CreateRedis");
    assert_eq!(generated[1]["GenerateStringKey"], "REDIS_AUTH_TOKEN");
    assert_eq!(
        generated[1]["ExcludePunctuation"], true,
        "a token AUTH accepts"
    );

    // The functions get its address over TLS, and no URL of an existing Redis.
    let url = &template.globals()["Environment"]["Variables"]["REDIS_URL"]["Fn::If"];
    assert_eq!(url[0], "CreateRedis");
    assert!(url[1]["Fn::Sub"].as_str().unwrap().starts_with("rediss://"));
    assert_eq!(url[2], "");
    let is_redis_url = |name: &str| name == "RedisUrl";
    let mut reached = vec![("Globals", template.globals())];
    reached.extend(template.of_type("AWS::Serverless::Function"));
    for (id, environment) in reached {
        let mut found = BTreeSet::new();
        names_referred_to(environment, &is_redis_url, &mut found);
        assert!(found.is_empty(), "RedisUrl reaches {id}");
    }

    // An existing Redis's URL (TLS only) goes into the secret, as the app reads it.
    let parameter = &template.0["Parameters"]["RedisUrl"];
    assert_eq!(parameter["NoEcho"], true);
    assert!(
        parameter["AllowedPattern"]
            .as_str()
            .unwrap()
            .starts_with("^(rediss://")
    );
    let stored = &secret["SecretString"]["Fn::If"];
    assert_eq!(stored[0], "CreateRedis");
    let text = stored[2]["Fn::Sub"]
        .as_str()
        .expect("!Sub of RedisUrl")
        .replace("${RedisUrl}", "rediss://:pw@redis.example:6380");
    let variables = shared::secrets::parse(&text).expect("the app reads the secret");
    assert_eq!(
        variables,
        vec![(
            "REDIS_URL".to_owned(),
            "rediss://:pw@redis.example:6380".to_owned()
        )]
    );
}

#[test]
fn the_file_system_admits_only_iam_authorized_mounts_through_an_access_point_over_tls() {
    let template = Template::load();
    let policy = &template.resources()["EfsFileSystem"]["Properties"]["FileSystemPolicy"];
    let statements = policy["Statement"]
        .as_array()
        .expect("a file system policy");
    let deny = |condition: Value| {
        statements
            .iter()
            .find(|s| s["Effect"] == "Deny" && s["Condition"] == condition)
            .unwrap_or_else(|| panic!("no Deny on {condition}"))
    };

    let insecure = deny(json!({ "Bool": { "aws:SecureTransport": "false" } }));
    assert_eq!(insecure["Action"], "*");
    let beside = deny(json!({ "Null": { "elasticfilesystem:AccessPointArn": "true" } }));
    for action in [
        "elasticfilesystem:ClientMount",
        "elasticfilesystem:ClientWrite",
    ] {
        assert!(
            beside["Action"]
                .as_array()
                .unwrap()
                .contains(&json!(action)),
            "{action}"
        );
    }
    // Every Deny applies to everyone; no Allow admits anyone outside the account (an
    // anonymous, unauthenticated mount included).
    for statement in statements {
        let principal = &statement["Principal"]["AWS"];
        if statement["Effect"] == "Deny" {
            assert_eq!(principal, "*", "{statement}");
        } else {
            assert_eq!(
                principal,
                &json!({ "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root" }),
                "{statement}"
            );
        }
    }
}

#[test]
fn the_api_access_log_names_the_iam_caller_and_carries_no_query_string() {
    let template = Template::load();
    let format = template.resources()["HttpApiStage"]["Properties"]["AccessLogSettings"]["Format"]
        .as_str()
        .expect("a format");

    let fields: Map<String, Value> = serde_json::from_str(format).expect("a JSON line");

    assert_eq!(
        fields.get("caller").and_then(Value::as_str),
        Some("$context.identity.userArn"),
        "{format}"
    );
    assert!(
        fields.values().all(|v| !v
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("query")),
        "{format}"
    );
}

#[test]
fn functions_keep_sqlite_off_wal_require_redis_and_log_json() {
    let template = Template::load();
    let globals = template.globals();
    let variables = &globals["Environment"]["Variables"];
    assert_eq!(variables["SQLITE_JOURNAL_MODE"], "delete");
    assert_eq!(variables["REDIS_REQUIRED"], "true");
    assert_eq!(globals["LoggingConfig"]["LogFormat"], "JSON");
    for (binary, id) in template.functions() {
        let properties = &template.resources()[&id]["Properties"];
        let environment = &properties["Environment"]["Variables"];
        for name in ["SQLITE_JOURNAL_MODE", "REDIS_REQUIRED", "SQLITE_PATH"] {
            assert!(environment.get(name).is_none(), "{binary} overrides {name}");
        }
    }
}

#[test]
fn the_outputs_name_both_redirect_uris_under_the_base_url_the_functions_use() {
    let template = Template::load();
    let base = &template.globals()["Environment"]["Variables"]["PUBLIC_BASE_URL"];
    assert_eq!(template.output("PublicBaseUrl"), base);
    let mut named = BTreeSet::new();
    for output in ["TwitchRedirectUri", "DonationAlertsRedirectUri"] {
        let join = &template.output(output)["Fn::Join"];
        assert_eq!(join[0], "", "{output}");
        assert_eq!(&join[1][0], base, "{output}");
        named.insert(join[1][1].as_str().expect("a path").to_owned());
    }
    let callbacks: BTreeSet<String> = all_routes()
        .filter(|route| route.function == Function::AuthCallback)
        .map(|route| route.path.to_owned())
        .collect();
    assert_eq!(named, callbacks);
}

fn alarm_functions(template: &Template, alarm: &str, metric: &str) -> BTreeSet<String> {
    let queries = template.resources()[alarm]["Properties"]["Metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("{alarm} has no metrics"));
    assert!(
        queries
            .iter()
            .any(|q| q["Expression"] == "SUM(METRICS())" && q["ReturnData"] == true),
        "{alarm} does not alarm on the sum"
    );
    queries
        .iter()
        .filter(|q| q.get("MetricStat").is_some())
        .map(|q| {
            let stat = &q["MetricStat"];
            assert_eq!(stat["Metric"]["Namespace"], "AWS/Lambda", "{alarm}");
            assert_eq!(stat["Metric"]["MetricName"], metric, "{alarm}");
            assert_eq!(stat["Stat"], "Sum", "{alarm}");
            let dimension = &stat["Metric"]["Dimensions"][0];
            assert_eq!(dimension["Name"], "FunctionName", "{alarm}");
            dimension["Value"]["Ref"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn every_function_is_watched_for_errors_and_throttles() {
    let template = Template::load();
    let functions: BTreeSet<String> = template.functions().into_values().collect();
    assert_eq!(
        alarm_functions(&template, "FunctionErrorsAlarm", "Errors"),
        functions
    );
    assert_eq!(
        alarm_functions(&template, "FunctionThrottlesAlarm", "Throttles"),
        functions
    );
}

#[test]
fn the_app_metric_alarms_watch_the_namespace_and_stack_the_functions_are_given() {
    let template = Template::load();
    let stack = json!({ "Ref": "AWS::StackName" });
    assert_eq!(
        template.globals()["Environment"]["Variables"]["STACK_NAME"],
        stack
    );
    for (alarm, metric) in [
        ("PollErrorsAlarm", "PollErrors"),
        ("NeedReauthAlarm", "NeedReauth"),
    ] {
        let properties = &template.resources()[alarm]["Properties"];
        assert_eq!(properties["Namespace"], "AvatarTwitchOAuth", "{alarm}");
        assert_eq!(properties["MetricName"], metric, "{alarm}");
        assert_eq!(
            properties["Dimensions"],
            json!([{ "Name": "Stack", "Value": stack }]),
            "{alarm}"
        );
        assert_eq!(properties["TreatMissingData"], "notBreaching", "{alarm}");
    }
    for (id, alarm) in template.of_type("AWS::CloudWatch::Alarm") {
        assert_eq!(
            alarm["Properties"]["AlarmActions"],
            json!([{ "Ref": "AlarmTopic" }]),
            "{id} notifies nobody"
        );
    }
}

#[test]
fn each_created_secret_holds_only_its_purposes_variables_and_no_value() {
    let template = Template::load();
    let mut held = BTreeSet::new();
    for purpose in SecretPurpose::ALL {
        let id = secret_resource(*purpose);
        let resource = template
            .resources()
            .get(id)
            .unwrap_or_else(|| panic!("no secret {id} for {purpose:?}"));
        assert_eq!(resource["Type"], "AWS::SecretsManager::Secret", "{id}");
        let names: Vec<String> = match resource["Properties"]["SecretString"].as_str() {
            Some(text) => {
                let variables = shared::secrets::parse(text)
                    .unwrap_or_else(|e| panic!("{id}: the app refuses it: {e}"));
                assert!(
                    variables.iter().all(|(_, value)| value.is_empty()),
                    "{id}: the template must carry no secret value"
                );
                variables.into_iter().map(|(name, _)| name).collect()
            }
            // The Redis secret: generated, or the URL given (checked with Redis above).
            None => {
                let generated = &resource["Properties"]["GenerateSecretString"]["Fn::If"][1];
                vec![
                    generated["GenerateStringKey"]
                        .as_str()
                        .expect(id)
                        .to_owned(),
                ]
            }
        };
        for name in names {
            assert!(purpose.variables().contains(&name.as_str()), "{id}: {name}");
            held.insert(name);
        }
    }
    for needed in [
        "SESSION_SECRET",
        "TOKEN_ENCRYPTION_KEY",
        "TWITCH_CLIENT_SECRET",
        "DA_CLIENT_SECRET",
        "REDIS_AUTH_TOKEN",
    ] {
        assert!(held.contains(needed), "no secret holds {needed}: {held:?}");
    }
    // The keys that open the stored tokens outlive the stack, with the database.
    let keys = &template.resources()["TokenKeysSecret"];
    assert_eq!(keys["DeletionPolicy"], "Retain");
    assert_eq!(keys["UpdateReplacePolicy"], "Retain");
}

// ---- The realtime bridge (ECS Fargate) ---------------------------------------------------

/// The container of the bridge's task definition.
fn realtime_container(template: &Template) -> &Value {
    let containers =
        template.resources()["RealtimeTaskDefinition"]["Properties"]["ContainerDefinitions"]
            .as_array()
            .expect("container definitions");
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    &containers[0]
}

/// A `{Name, Value}` or `{Name, ValueFrom}` list as (branch condition, name, entry): entries
/// under `!If [C, A, B]` come as (`C`, A) and (`!C`, B), `AWS::NoValue` dropped.
fn named_entries(list: &Value) -> Vec<(String, String, Value)> {
    let mut entries = Vec::new();
    for item in list.as_array().expect("a list") {
        let branches: Vec<(String, &Value)> = match item.get("Fn::If") {
            Some(branches) => {
                let condition = branches[0].as_str().expect("a condition").to_owned();
                vec![
                    (condition.clone(), &branches[1]),
                    (format!("!{condition}"), &branches[2]),
                ]
            }
            None => vec![("always".to_owned(), item)],
        };
        for (condition, entry) in branches {
            if entry == &json!({ "Ref": "AWS::NoValue" }) {
                continue;
            }
            let name = entry["Name"].as_str().expect("a Name").to_owned();
            entries.push((condition, name, entry.clone()));
        }
    }
    entries
}

/// The secrets the bridge reads ([`NEEDED_BY_REALTIME_BRIDGE`]: open and refresh the
/// DonationAlerts tokens, ask Helix who is live, Redis).
fn realtime_secrets() -> BTreeSet<SecretPurpose> {
    NEEDED_BY_REALTIME_BRIDGE.iter().copied().collect()
}

#[test]
fn the_realtime_bridge_exists_only_with_an_image_and_every_part_of_it_says_so() {
    let template = Template::load();
    let parameters = &template.0["Parameters"];
    assert_eq!(parameters["RealtimeImageUri"]["Default"], "");
    assert_eq!(parameters["RealtimeDesiredCount"]["Default"], 1);
    assert_eq!(parameters["RealtimeDesiredCount"]["MinValue"], 0);
    let conditions = &template.0["Conditions"];
    assert_eq!(
        conditions["CreateRealtime"],
        json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "RealtimeImageUri" }, ""] }] })
    );
    // The composite conditions all include CreateRealtime.
    for (name, other) in [
        ("CreateRealtimeWithRedis", "CreateRedis"),
        ("CreateRealtimeWithExistingRedis", "UseExistingRedis"),
    ] {
        assert_eq!(
            conditions[name],
            json!({ "Fn::And": [{ "Condition": "CreateRealtime" }, { "Condition": other }] }),
            "{name}"
        );
    }
    assert_eq!(
        conditions["RunsRealtime"]["Fn::And"][0],
        json!({ "Condition": "CreateRealtime" })
    );
    let bridge_conditions = [
        "CreateRealtime",
        "CreateRealtimeWithRedis",
        "CreateRealtimeWithExistingRedis",
        "RunsRealtime",
    ];

    // Whatever refers to a part of the bridge is a part of it: without an image the stack
    // is the one it was, and CloudFormation finds no reference to a resource not created.
    let resources = template.resources();
    let mut parts: BTreeSet<String> = resources
        .keys()
        .filter(|id| id.starts_with("Realtime"))
        .cloned()
        .collect();
    assert!(parts.len() >= 8, "{parts:?}");
    loop {
        let before = parts.len();
        for (id, resource) in resources {
            let mut refers = BTreeSet::new();
            references(resource, resources, &mut refers);
            if refers.iter().any(|r| parts.contains(r)) {
                parts.insert(id.clone());
            }
        }
        if parts.len() == before {
            break;
        }
    }
    for id in &parts {
        let condition = resources[id]["Condition"].as_str().unwrap_or("none");
        assert!(
            bridge_conditions.contains(&condition),
            "{id} is created without the bridge (condition {condition})"
        );
    }
    assert!(parts.contains("EfsIngressFromRealtime") && parts.contains("RedisIngressFromRealtime"));
    for (name, output) in template.0["Outputs"].as_object().unwrap() {
        let mut refers = BTreeSet::new();
        references(output, resources, &mut refers);
        if refers.iter().any(|r| parts.contains(r)) {
            assert_eq!(output["Condition"], "CreateRealtime", "output {name}");
        }
    }
}

#[test]
fn the_realtime_service_runs_the_desired_count_of_fargate_tasks_in_the_functions_subnets() {
    let template = Template::load();
    let resources = template.resources();
    assert_eq!(resources["RealtimeCluster"]["Type"], "AWS::ECS::Cluster");
    let service = &resources["RealtimeService"];
    assert_eq!(service["Type"], "AWS::ECS::Service");
    let service = &service["Properties"];
    assert_eq!(service["Cluster"], json!({ "Ref": "RealtimeCluster" }));
    assert_eq!(
        service["TaskDefinition"],
        json!({ "Ref": "RealtimeTaskDefinition" })
    );
    assert_eq!(
        service["DesiredCount"],
        json!({ "Ref": "RealtimeDesiredCount" })
    );
    assert_eq!(service["LaunchType"], "FARGATE");
    // A new task before the old one stops; a failing deployment rolled back, not retried.
    let deployment = &service["DeploymentConfiguration"];
    assert_eq!(deployment["MinimumHealthyPercent"], 100);
    assert_eq!(deployment["DeploymentCircuitBreaker"]["Enable"], true);
    assert_eq!(deployment["DeploymentCircuitBreaker"]["Rollback"], true);
    // The functions' private subnets, no public address, the bridge's own group.
    let network = &service["NetworkConfiguration"]["AwsvpcConfiguration"];
    assert_eq!(network["AssignPublicIp"], "DISABLED");
    assert_eq!(
        network["Subnets"],
        template.globals()["VpcConfig"]["SubnetIds"]
    );
    assert_eq!(
        network["SecurityGroups"],
        json!([{ "Ref": "RealtimeSecurityGroup" }])
    );

    // The smallest Fargate task, on the functions' instruction set, running the given image.
    let task = &resources["RealtimeTaskDefinition"];
    assert_eq!(task["Type"], "AWS::ECS::TaskDefinition");
    let task = &task["Properties"];
    assert_eq!(task["RequiresCompatibilities"], json!(["FARGATE"]));
    assert_eq!(task["NetworkMode"], "awsvpc");
    assert_eq!(task["Cpu"], "256");
    assert_eq!(task["Memory"], "512");
    assert_eq!(
        task["RuntimePlatform"]["CpuArchitecture"],
        json!({ "Fn::If": ["RunsOnArm", "ARM64", "X86_64"] })
    );
    assert_eq!(task["RuntimePlatform"]["OperatingSystemFamily"], "LINUX");
    assert_eq!(
        template.0["Conditions"]["RunsOnArm"],
        json!({ "Fn::Equals": [{ "Ref": "Architecture" }, "arm64"] })
    );
    let allowed = &template.0["Parameters"]["Architecture"]["AllowedValues"];
    assert_eq!(
        allowed,
        &json!(["arm64", "x86_64"]),
        "RunsOnArm's two cases"
    );
    let container = realtime_container(&template);
    assert_eq!(container["Image"], json!({ "Ref": "RealtimeImageUri" }));
    assert_eq!(container["Essential"], true);
    assert!(container.get("PortMappings").is_none(), "it serves nothing");
}

#[test]
fn the_realtime_task_mounts_the_functions_access_point_over_tls_with_its_role() {
    let template = Template::load();
    let task = &template.resources()["RealtimeTaskDefinition"]["Properties"];
    let volumes = task["Volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(
        volumes[0]["EFSVolumeConfiguration"],
        json!({
            "FilesystemId": { "Ref": "EfsFileSystem" },
            "TransitEncryption": "ENABLED",
            "AuthorizationConfig": {
                "AccessPointId": { "Ref": "EfsAccessPoint" },
                "IAM": "ENABLED",
            },
        })
    );
    // At the path the functions mount it, so SQLITE_PATH is the same file.
    let container = realtime_container(&template);
    let function_mount = &template.resources()[&template.function_id(Function::DaPoll)]["Properties"]
        ["FileSystemConfigs"][0]["LocalMountPath"];
    assert_eq!(
        container["MountPoints"],
        json!([{ "SourceVolume": volumes[0]["Name"], "ContainerPath": function_mount, "ReadOnly": false }])
    );
    // The task's role may mount and write it exactly as the functions may, and ECS's
    // service principal assumes it only for this account.
    assert_eq!(
        task["TaskRoleArn"],
        json!({ "Fn::GetAtt": ["RealtimeTaskRole", "Arn"] })
    );
    let role = &template.resources()["RealtimeTaskRole"]["Properties"];
    assert_eq!(
        role["ManagedPolicyArns"],
        json!([{ "Ref": "FunctionDataAccessPolicy" }])
    );
    assert!(role.get("Policies").is_none(), "{role}");
    for role in ["RealtimeTaskRole", "RealtimeExecutionRole"] {
        let trust =
            &template.resources()[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(
            trust,
            &json!([{
                "Effect": "Allow",
                "Principal": { "Service": "ecs-tasks.amazonaws.com" },
                "Action": "sts:AssumeRole",
                "Condition": { "StringEquals": { "aws:SourceAccount": { "Ref": "AWS::AccountId" } } },
            }]),
            "{role}"
        );
    }
}

#[test]
fn the_realtime_task_is_configured_like_da_poll_and_logs_to_its_own_group() {
    let template = Template::load();
    let container = realtime_container(&template);
    let environment = named_entries(&container["Environment"]);
    let value = |wanted: &str| -> Vec<(String, Value)> {
        environment
            .iter()
            .filter(|(_, name, _)| name == wanted)
            .map(|(condition, _, entry)| (condition.clone(), entry["Value"].clone()))
            .collect()
    };
    let globals = &template.globals()["Environment"]["Variables"];
    // What every function is given with a value, the bridge is given alike; what only the
    // HTTP functions need, or sam local (declared empty), it is not.
    let functions_only = ["AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"];
    for (name, global) in globals.as_object().unwrap() {
        if functions_only.contains(&name.as_str()) || global == "" {
            assert!(value(name).is_empty(), "{name} is not for the bridge");
            continue;
        }
        if name == "REDIS_URL" {
            // The stack's ElastiCache's address; an existing Redis's URL is a secret below.
            let branches = &global["Fn::If"];
            assert_eq!(branches[0], "CreateRedis");
            assert_eq!(branches[2], "");
            assert_eq!(
                value(name),
                vec![("CreateRedis".to_owned(), branches[1].clone())]
            );
            continue;
        }
        assert_eq!(
            value(name),
            vec![("always".to_owned(), global.clone())],
            "{name}"
        );
    }
    for (name, expected) in [
        ("REDIS_REQUIRED", "true"),
        ("SQLITE_JOURNAL_MODE", "delete"),
        ("SQLITE_PATH", "/mnt/data/data.sqlite"),
    ] {
        assert_eq!(value(name), vec![("always".to_owned(), json!(expected))]);
    }
    assert!(
        value("REALTIME_SHARDS")[0]
            .1
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 1,
        "{environment:?}"
    );
    assert!(value("SECRETS_ARN").is_empty(), "ECS injects the secrets");

    // Logs: the awslogs driver into the bridge's group, kept as long as the functions'.
    let logs = &container["LogConfiguration"];
    assert_eq!(logs["LogDriver"], "awslogs");
    assert_eq!(
        logs["Options"]["awslogs-group"],
        json!({ "Ref": "RealtimeLogGroup" })
    );
    assert_eq!(
        logs["Options"]["awslogs-region"],
        json!({ "Ref": "AWS::Region" })
    );
    let group = &template.resources()["RealtimeLogGroup"];
    assert_eq!(group["Type"], "AWS::Logs::LogGroup");
    assert_eq!(
        group["Properties"]["RetentionInDays"],
        template.resources()["FunctionLogGroup"]["Properties"]["RetentionInDays"]
    );
}

#[test]
fn the_realtime_task_is_given_only_the_secrets_it_uses_each_from_its_purposes_secret() {
    let template = Template::load();
    let resources = template.resources();
    let container = realtime_container(&template);
    let secrets = named_entries(&container["Secrets"]);
    let environment: BTreeSet<(String, String)> = named_entries(&container["Environment"])
        .into_iter()
        .map(|(condition, name, _)| (condition, name))
        .collect();

    let mut given = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (condition, name, entry) in &secrets {
        // ValueFrom: the secret's ARN (its Ref) and a JSON key: `arn…:secret:NAME:KEY::`.
        let value_from = entry["ValueFrom"]["Fn::Sub"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: ValueFrom is no !Sub: {entry}"));
        let (secret, key) = value_from
            .strip_prefix("${")
            .and_then(|rest| rest.split_once("}:"))
            .and_then(|(secret, rest)| Some((secret, rest.strip_suffix("::")?)))
            .unwrap_or_else(|| panic!("{name}: ValueFrom {value_from:?}"));
        assert_eq!(key, name, "{name} comes from its own key");
        let purpose = *SecretPurpose::ALL
            .iter()
            .find(|p| secret_resource(**p) == secret)
            .unwrap_or_else(|| panic!("{name} comes from {secret}, no secret of a purpose"));
        assert!(
            purpose.variables().contains(&key),
            "{secret} holds no {key}"
        );
        given.insert(purpose);
        names.insert(name.clone());
        // The key is in the JSON the stack creates the secret with (ECS refuses to start a
        // task whose secret lacks a key it names).
        let created = &resources[secret]["Properties"];
        let keys: Vec<String> = match created["SecretString"].as_str() {
            Some(text) => shared::secrets::parse(text)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            None => {
                let generated = &created["GenerateSecretString"]["Fn::If"];
                let stored = &created["SecretString"]["Fn::If"];
                match condition.as_str() {
                    "CreateRedis" => {
                        vec![
                            generated[1]["GenerateStringKey"]
                                .as_str()
                                .unwrap()
                                .to_owned(),
                        ]
                    }
                    "!CreateRedis" => shared::secrets::parse(
                        &stored[2]["Fn::Sub"]
                            .as_str()
                            .unwrap()
                            .replace("${RedisUrl}", "rediss://redis.example:6380"),
                    )
                    .unwrap()
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect(),
                    other => panic!("{secret} under {other}"),
                }
            }
        };
        assert!(
            keys.iter().any(|k| k == key),
            "{secret} is created without {key}"
        );
        // Never both a plain variable and a secret under the same condition.
        assert!(
            !environment.contains(&(condition.clone(), name.clone()))
                && !environment.contains(&("always".to_owned(), name.clone())),
            "{name} is in the environment too"
        );
    }
    assert_eq!(given, realtime_secrets());
    for needed in [
        "TOKEN_ENCRYPTION_KEY",
        "TOKEN_ENCRYPTION_OLD_KEYS",
        "TWITCH_CLIENT_SECRET",
        "DA_CLIENT_SECRET",
        "REDIS_AUTH_TOKEN",
        "REDIS_URL",
    ] {
        assert!(names.contains(needed), "{needed} is not given: {names:?}");
    }
    // The Redis secret's key follows the Redis: the stack's token, or the existing URL.
    let redis: Vec<(&str, &str)> = secrets
        .iter()
        .filter(|(_, name, _)| name.starts_with("REDIS_"))
        .map(|(condition, name, _)| (condition.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        redis,
        vec![
            ("CreateRedis", "REDIS_AUTH_TOKEN"),
            ("!CreateRedis", "REDIS_URL")
        ]
    );

    // The execution role (ECS, at the task's start) may read exactly those secrets; the
    // task's own role none.
    let statements = resources["RealtimeExecutionRole"]["Properties"]["Policies"][0]
        ["PolicyDocument"]["Statement"]
        .as_array()
        .expect("statements");
    let readable: Vec<&Value> = statements
        .iter()
        .filter(|s| s["Action"] == "secretsmanager:GetSecretValue")
        .collect();
    assert_eq!(readable.len(), 1, "{statements:?}");
    let expected: Vec<Value> = SecretPurpose::ALL
        .iter()
        .filter(|p| given.contains(p))
        .map(|p| json!({ "Ref": secret_resource(*p) }))
        .collect();
    assert_eq!(readable[0]["Resource"], Value::Array(expected));
    for statement in statements {
        let actions = statement["Action"].to_string();
        assert!(
            !actions.contains("secretsmanager") || statement == readable[0],
            "{statement}"
        );
        assert!(!actions.contains('*'), "{statement}");
    }
    let logs = statements
        .iter()
        .find(|s| s["Action"].to_string().contains("logs:PutLogEvents"))
        .expect("a statement for the log stream");
    assert_eq!(
        logs["Resource"],
        json!({ "Fn::GetAtt": ["RealtimeLogGroup", "Arn"] })
    );
    assert_eq!(
        resources["RealtimeTaskDefinition"]["Properties"]["ExecutionRoleArn"],
        json!({ "Fn::GetAtt": ["RealtimeExecutionRole", "Arn"] })
    );
}

#[test]
fn the_realtime_bridge_may_connect_out_as_the_functions_do_and_is_admitted_where_they_are() {
    let template = Template::load();
    // Every standalone egress rule belongs to one of the two outbound-only groups.
    for (id, resource) in template.of_type("AWS::EC2::SecurityGroupEgress") {
        let group = &resource["Properties"]["GroupId"]["Fn::GetAtt"][0];
        assert!(
            group == "FunctionSecurityGroup" || group == "RealtimeSecurityGroup",
            "{id} opens {group}"
        );
    }
    let as_the_bridge = |summary: String| {
        summary
            .replace("(always)", "(CreateRealtime)")
            .replace("(CreateRedis)", "(CreateRealtimeWithRedis)")
            .replace("(UseExistingRedis)", "(CreateRealtimeWithExistingRedis)")
    };
    let functions: BTreeSet<String> =
        summarize_egress(&egress_of(&template, "FunctionSecurityGroup"))
            .into_iter()
            .map(as_the_bridge)
            .collect();
    let mut rules = egress_of(&template, "RealtimeSecurityGroup");
    for rule in &mut rules {
        // Rules inside the group exist whenever the group does.
        if rule["Condition"].is_null() {
            rule["Condition"] = json!("CreateRealtime");
        }
    }
    let bridge = summarize_egress(&rules);
    assert_eq!(bridge, functions);
    assert!(
        template.resources()["RealtimeSecurityGroup"]["Properties"]
            .get("SecurityGroupIngress")
            .is_none(),
        "the bridge accepts no connection"
    );

    // The database's and Redis's groups admit the bridge on the ports they admit the
    // functions on.
    let mut admitted = BTreeSet::new();
    for (id, resource) in template.of_type("AWS::EC2::SecurityGroupIngress") {
        let rule = &resource["Properties"];
        assert_eq!(
            rule["SourceSecurityGroupId"],
            json!({ "Fn::GetAtt": ["RealtimeSecurityGroup", "GroupId"] }),
            "{id}"
        );
        let group = rule["GroupId"]["Fn::GetAtt"][0].as_str().unwrap();
        let functions_rule = &template.resources()[group]["Properties"]["SecurityGroupIngress"][0];
        assert_eq!(rule["IpProtocol"], "tcp", "{id}");
        assert_eq!(rule["FromPort"], functions_rule["FromPort"], "{id}");
        assert_eq!(rule["ToPort"], functions_rule["ToPort"], "{id}");
        admitted.insert(format!(
            "{group} ({})",
            resource["Condition"].as_str().unwrap_or("always")
        ));
    }
    assert_eq!(
        admitted,
        BTreeSet::from([
            "EfsSecurityGroup (CreateRealtime)".to_owned(),
            "RedisSecurityGroup (CreateRealtimeWithRedis)".to_owned(),
        ])
    );
}

#[test]
fn an_alarm_fires_when_fewer_realtime_tasks_run_than_desired() {
    let template = Template::load();
    let alarm = &template.resources()["RealtimeTasksAlarm"];
    // Only while tasks are wanted: with RealtimeDesiredCount 0 none runs, by design.
    assert_eq!(alarm["Condition"], "RunsRealtime");
    assert_eq!(
        template.0["Conditions"]["RunsRealtime"]["Fn::And"][1],
        json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "RealtimeDesiredCount" }, "0"] }] })
    );
    let properties = &alarm["Properties"];
    // Each running bridge prints one EMF record a minute, in the namespace and under the
    // Stack dimension its EMF lines use: the records of a minute count the running bridges.
    assert_eq!(properties["Namespace"], "AvatarTwitchOAuth");
    assert_eq!(properties["MetricName"], "RealtimeShardsHeld");
    assert_eq!(
        properties["Dimensions"],
        json!([{ "Name": "Stack", "Value": { "Ref": "AWS::StackName" } }])
    );
    let line = shared::metrics::emf::realtime_record(
        &shared::metrics::emf::EmfContext {
            stack: "stack",
            function: "realtime",
            timestamp_ms: 0,
        },
        &shared::metrics::RealtimeStats::default(),
    );
    let record: Value = serde_json::from_str(&line).unwrap();
    let directive = &record["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "AvatarTwitchOAuth");
    assert_eq!(directive["Dimensions"], json!([["Stack"]]));
    assert!(
        directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["Name"] == "RealtimeShardsHeld"),
        "{line}"
    );
    assert_eq!(properties["Statistic"], "SampleCount");
    assert_eq!(properties["Period"], 60);
    assert_eq!(properties["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(
        properties["Threshold"],
        json!({ "Ref": "RealtimeDesiredCount" })
    );
    assert_eq!(
        properties["TreatMissingData"], "breaching",
        "no record is no task"
    );
    let minutes = properties["EvaluationPeriods"].as_u64().unwrap();
    assert_eq!(properties["DatapointsToAlarm"], minutes);
    assert!((3..=10).contains(&minutes), "{minutes} minutes");
    assert_eq!(properties["OKActions"], json!([{ "Ref": "AlarmTopic" }]));
}
