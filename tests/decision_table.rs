//! The portal's expected decisions are stated once, in the policy test suites under
//! `policies/tests` (YAML and cedar CLI JSON). This runs every case of that table
//! through every surface — the Cedar-native API, AuthZEN evaluation and the gateway's
//! forward-auth endpoint — on every entity source — the file source and Redis — of a
//! real server, and expects the same answer everywhere: the same decision, and where
//! the surface reports them, the same determining policies and error count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::EntityUid;
use common::redis::RedisServer;
use common::{eventually, TestServer, DEADLINE};
use http::Method;
use portcullis::config::{
    EntitiesArgs, EntitiesCommand, EntityArgs, GatewayArgs, ModelArgs, RedisArgs, ServeArgs,
};
use portcullis::entities::redis::cli::Writer;
use portcullis::model::{EntityFile, Snapshot};
use portcullis::policytest::{self, CaseBody, Outcome};
use serde_json::{json, Value};

const USER_HEADER: &str = "x-portal-user";
const SECOND_FACTOR_HEADER: &str = "x-portal-2fa";

/// One case of the table.
struct Row {
    name: String,
    body: CaseBody,
}

/// Every case of the shipped suites, grouped by the entity data it is decided on.
fn table(snapshot: &Snapshot) -> BTreeMap<String, Vec<Row>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tests");
    let mut groups: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for (file, format) in policytest::discover(&dir).unwrap() {
        let suite = policytest::load(&file, format, snapshot).unwrap();
        for case in suite.cases {
            let body = case
                .body
                .unwrap_or_else(|e| panic!("{}: `{}` does not load: {e}", suite.file, case.name));
            let data = body.entities.as_ref().to_json_value().unwrap();
            let mut items: Vec<String> = data
                .as_array()
                .unwrap()
                .iter()
                .map(Value::to_string)
                .collect();
            items.sort();
            groups
                .entry(format!("[{}]", items.join(",")))
                .or_default()
                .push(Row {
                    name: format!("{}: {}", suite.file, case.name),
                    body,
                });
        }
    }
    groups
}

/// `serve` flags shared by both sources: the gateway identifies callers by a trusted
/// header, and a second header says whether the session used a second factor.
fn serve_args(entity: EntityArgs) -> ServeArgs {
    ServeArgs {
        entity,
        gateway: GatewayArgs {
            trusted_principal_header: Some(USER_HEADER.to_string()),
            trusted_second_factor_header: Some(SECOND_FACTOR_HEADER.to_string()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    }
}

/// What one surface answered.
struct Answer {
    allowed: bool,
    /// `None` where the surface does not report them.
    reasons: Option<Vec<String>>,
    errors: Option<usize>,
}

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

async fn cedar_native(server: &TestServer, body: &CaseBody) -> Answer {
    let r = &body.request;
    let reply = server
        .post(
            "/v1/is_authorized",
            &json!({
                "principal": r.principal,
                "action": r.action,
                "resource": r.resource,
                "context": r.context.clone().unwrap_or(json!({})),
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let d = &reply.json;
    Answer {
        allowed: d["decision"] == "Allow",
        reasons: Some(strings(&d["diagnostics"]["reason"])),
        errors: Some(d["diagnostics"]["errors"].as_array().unwrap().len()),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

async fn authzen(server: &TestServer, body: &CaseBody) -> Answer {
    let r = &body.request;
    let entity = |text: &str| {
        let u = uid(text);
        json!({"type": u.type_name().to_string(), "id": u.id().unescaped()})
    };
    let request = json!({
        "subject": entity(&r.principal),
        "action": {"name": uid(&r.action).id().unescaped()},
        "resource": entity(&r.resource),
        "context": r.context.clone().unwrap_or(json!({})),
    });
    let reply = server
        .send(
            Method::POST,
            "/access/v1/evaluation",
            &[
                ("content-type", "application/json"),
                ("x-portcullis-explain", "true"),
            ],
            request.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let c = &reply.json["context"];
    Answer {
        allowed: reply.json["decision"] == true,
        reasons: Some(strings(&c["policies"])),
        errors: Some(c["errors"].as_array().map_or(0, Vec::len)),
    }
}

/// A forward-auth check request: method, path and headers.
type Question = (Method, String, Vec<(String, String)>);

/// The gateway's question for a case, when the route table has a route for its action
/// and resource and the gateway can express its principal and context.
fn gateway_request(snapshot: &Snapshot, body: &CaseBody) -> Option<Question> {
    let r = &body.request;
    let (principal, action, resource) = (uid(&r.principal), uid(&r.action), uid(&r.resource));
    if principal.type_name().to_string() != "Portal::User" {
        return None;
    }
    let context = r.context.clone().unwrap_or(json!({}));
    let context = context.as_object()?;
    if context.keys().any(|k| k != "secondFactor") {
        return None;
    }
    let route = snapshot.routes.as_ref()?.routes().iter().find(|route| {
        route.action == action
            && route
                .resource
                .render(|_| Some(resource.id().unescaped().to_string()))
                == Some(resource.clone())
    })?;
    let id_vars: Vec<&str> = route.resource.vars().collect();
    let path = route.path_with(|var| {
        if id_vars.contains(&var) {
            resource.id().unescaped().to_string()
        } else {
            "any".to_string()
        }
    });
    let mut headers = vec![
        ("x-original-method".to_string(), route.method().to_string()),
        ("x-original-uri".to_string(), path),
        (
            USER_HEADER.to_string(),
            principal.id().unescaped().to_string(),
        ),
    ];
    if let Some(Value::Bool(b)) = context.get("secondFactor") {
        headers.push((SECOND_FACTOR_HEADER.to_string(), b.to_string()));
    }
    Some((
        route.method().clone(),
        "/forward-auth/nginx".to_string(),
        headers,
    ))
}

async fn gateway(server: &TestServer, question: &Question) -> Answer {
    let (method, path, headers) = question;
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let reply = server
        .send(method.clone(), path, &headers, Vec::new())
        .await;
    assert!(
        reply.status == 200 || reply.status == 403,
        "{}: {}",
        reply.status,
        reply.text
    );
    let allowed = reply.status == 200;
    Answer {
        allowed,
        reasons: allowed.then(|| {
            reply
                .header("x-portcullis-policy")
                .unwrap_or_default()
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        }),
        errors: None,
    }
}

/// The mismatches of one answer with the case's expectation.
fn check(row: &Row, surface: &str, answer: &Answer, failures: &mut Vec<String>) {
    let mut expect = row.body.expect.clone();
    if answer.reasons.is_none() {
        expect.reasons = policytest::ReasonCheck::Any;
    }
    if answer.errors.is_none() {
        expect.errors = None;
    }
    let reasons = answer.reasons.clone().unwrap_or_default();
    let errors: Vec<String> = (0..answer.errors.unwrap_or(0))
        .map(|i| format!("error {i}"))
        .collect();
    if let Outcome::Fail(m) = policytest::compare(&expect, answer.allowed, &reasons, &errors) {
        let what: Vec<String> = m
            .iter()
            .map(|m| format!("{} expected {} got {}", m.field, m.expected, m.actual))
            .collect();
        failures.push(format!("{surface}: {}: {}", row.name, what.join("; ")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_of_the_policy_tests_holds_on_every_surface_and_entity_source() {
    let snapshot = portcullis::model::load(&ModelArgs::default(), &EntityFile::External).unwrap();
    let groups = table(&snapshot);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let (mut rows, mut through_gateway) = (0usize, 0usize);
    for (n, (data, rows_of_group)) in groups.iter().enumerate() {
        let file = dir.path().join(format!("entities-{n}.json"));
        std::fs::write(&file, data).unwrap();
        // Each group's data under a prefix of its own, so groups cannot see each other.
        let redis_args = RedisArgs {
            redis_url: Some(redis.url()),
            redis_prefix: format!("g{n}:"),
            ..RedisArgs::default()
        };
        let mut writer = Writer::open(&EntitiesArgs {
            model: ModelArgs::default(),
            redis: redis_args.clone(),
            ack_timeout_ms: 2000,
            command: EntitiesCommand::Get { uid: String::new() },
        })
        .await
        .unwrap();
        writer
            .write(serde_json::from_str(data).unwrap(), "group")
            .await
            .unwrap();
        let from_file = TestServer::start(serve_args(EntityArgs {
            entities: Some(file),
            ..EntityArgs::default()
        }))
        .await;
        let from_redis = TestServer::start(serve_args(EntityArgs {
            redis: redis_args,
            ..EntityArgs::default()
        }))
        .await;
        eventually("the Redis source is ready", DEADLINE, || async {
            (from_redis.get("/readyz").await.status == 200).then_some(())
        })
        .await;
        for row in rows_of_group {
            rows += 1;
            let question = gateway_request(&snapshot, &row.body);
            through_gateway += usize::from(question.is_some());
            for (source, server) in [("file", &from_file), ("redis", &from_redis)] {
                let answer = cedar_native(server, &row.body).await;
                check(row, &format!("cedar/{source}"), &answer, &mut failures);
                let answer = authzen(server, &row.body).await;
                check(row, &format!("authzen/{source}"), &answer, &mut failures);
                if let Some(q) = &question {
                    let answer = gateway(server, q).await;
                    check(row, &format!("gateway/{source}"), &answer, &mut failures);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The table is the shipped suites' (over a hundred cases), and the gateway can ask
    // most of the users' questions.
    assert!(rows > 100, "only {rows} cases");
    assert!(
        through_gateway > rows / 2,
        "only {through_gateway} of {rows} through the gateway"
    );
    eprintln!("{rows} cases, {through_gateway} also through the gateway, on 2 sources");
}
