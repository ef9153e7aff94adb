//! The same outcome gets the same answer on every surface. With the Redis entity store
//! hung (SIGSTOP) and then killed, every surface answers a request that needs Redis
//! with `entity_store_unavailable` (a 503, or a batch item's error carrying 503) and
//! never an allow or a 500; once Redis is back, the same server answers again without
//! a restart. With a stored entity that does not fit the schema, every surface denies
//! and names the entity, never a 500.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::redis::RedisServer;
use common::{eventually, Reply, TestServer, DEADLINE};
use http::Method;
use portcullis::config::{GatewayArgs, RedisArgs, ServeArgs};
use serde_json::{json, Value};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/portal/entities.json");
const BEA: &str = r#"Portal::User::"bea""#;

fn serve(redis: &RedisServer) -> ServeArgs {
    let mut args = ServeArgs {
        gateway: GatewayArgs {
            trusted_principal_header: Some("x-portal-user".to_string()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    };
    args.entity.redis = RedisArgs {
        redis_url: Some(redis.url()),
        redis_timeout_ms: 300,
        ..RedisArgs::default()
    };
    args
}

async fn import(redis: &RedisServer) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["entities", "--redis-url", &redis.url(), "import", DEMO])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bea pays acme's invoice, asked through one surface. Each question reads bea and the
/// invoice, so none can be answered without the entity store.
struct Question {
    surface: &'static str,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Value,
}

fn questions() -> Vec<Question> {
    let json_post = |surface, path, body| Question {
        surface,
        method: Method::POST,
        path,
        headers: vec![
            ("content-type", "application/json"),
            ("x-portcullis-explain", "true"),
        ],
        body,
    };
    let cedar = json!({
        "principal": BEA,
        "action": r#"Portal::Action::"PayInvoice""#,
        "resource": r#"Portal::Invoice::"inv-1001""#,
    });
    let evaluation = json!({
        "subject": {"type": "user", "id": "bea"},
        "action": {"name": "PayInvoice"},
        "resource": {"type": "invoice", "id": "inv-1001"},
    });
    vec![
        json_post("cedar", "/v1/is_authorized", cedar.clone()),
        json_post(
            "cedar batch",
            "/v1/batch_is_authorized",
            json!({"requests": [cedar]}),
        ),
        json_post(
            "authzen evaluation",
            "/access/v1/evaluation",
            evaluation.clone(),
        ),
        json_post(
            "authzen evaluations",
            "/access/v1/evaluations",
            json!({"evaluations": [evaluation]}),
        ),
        json_post(
            "authzen resource search",
            "/access/v1/search/resource",
            json!({"subject": {"type": "user", "id": "bea"}, "action": {"name": "PayInvoice"}, "resource": {"type": "invoice"}}),
        ),
        json_post(
            "authzen subject search",
            "/access/v1/search/subject",
            json!({"subject": {"type": "user"}, "action": {"name": "PayInvoice"}, "resource": {"type": "invoice", "id": "inv-1001"}}),
        ),
        json_post(
            "authzen action search",
            "/access/v1/search/action",
            json!({"subject": {"type": "user", "id": "bea"}, "resource": {"type": "invoice", "id": "inv-1001"}}),
        ),
        Question {
            surface: "gateway",
            method: Method::GET,
            path: "/forward-auth/nginx",
            headers: vec![
                ("x-original-method", "POST"),
                ("x-original-uri", "/accounts/acme/invoices/inv-1001/pay"),
                ("x-portal-user", "bea"),
            ],
            body: Value::Null,
        },
    ]
}

async fn ask(server: &TestServer, q: &Question) -> Reply {
    let body = if q.body.is_null() {
        Vec::new()
    } else {
        q.body.to_string().into_bytes()
    };
    server
        .send(q.method.clone(), q.path, &q.headers, body)
        .await
}

/// The error a reply carries for the whole request or for its one batch item:
/// (status, code).
fn error_of(r: &Reply) -> Option<(u16, String)> {
    if let Some(code) = r.json["error"].as_str() {
        return Some((r.status.as_u16(), code.to_string()));
    }
    let item = r.json["responses"][0]["error"].clone();
    let item = if item.is_null() {
        r.json["evaluations"][0]["context"]["error"].clone()
    } else {
        item
    };
    let code = item["code"].as_str()?.to_string();
    Some((u16::try_from(item["status"].as_u64()?).unwrap(), code))
}

/// Whether a reply allows anything.
fn allows(r: &Reply) -> bool {
    r.json["decision"] == "Allow"
        || r.json["decision"] == true
        || r.json["responses"][0]["decision"] == "Allow"
        || r.json["evaluations"][0]["decision"] == true
        || r.json["results"].as_array().is_some_and(|a| !a.is_empty())
}

/// Every surface answers `entity_store_unavailable`, as a 503 or a batch item's 503.
async fn every_surface_is_unavailable(server: &TestServer, when: &str) {
    for q in questions() {
        let r = ask(server, &q).await;
        assert!(!allows(&r), "{when}: {}: allowed: {}", q.surface, r.text);
        assert_eq!(
            error_of(&r),
            Some((503, "entity_store_unavailable".to_string())),
            "{when}: {}: {} {}",
            q.surface,
            r.status,
            r.text
        );
    }
}

/// Every surface answers as it does with all data in place.
async fn every_surface_answers(server: &TestServer) {
    for q in questions() {
        let r = ask(server, &q).await;
        assert_eq!(r.status, 200, "{}: {}", q.surface, r.text);
        assert!(error_of(&r).is_none(), "{}: {}", q.surface, r.text);
        if q.surface != "authzen subject search" {
            assert!(allows(&r), "{}: {}", q.surface, r.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_then_dead_store_is_the_same_503_on_every_surface_and_the_service_recovers() {
    let mut redis = RedisServer::start();
    import(&redis).await;
    let server = TestServer::start(serve(&redis)).await;
    eventually("the server is ready", DEADLINE, || async {
        (server.get("/readyz").await.status == 200).then_some(())
    })
    .await;

    // Hung: the connections stay open, nothing answers. Nothing was cached yet.
    redis.pause();
    every_surface_is_unavailable(&server, "Redis hung").await;

    // Dead: the connections are refused.
    redis.resume();
    redis.stop();
    every_surface_is_unavailable(&server, "Redis dead").await;

    // Back, empty, and filled again: the same server answers, no restart.
    redis.start_again();
    import(&redis).await;
    eventually("the server answers again", DEADLINE, || async {
        let r = ask(&server, &questions()[0]).await;
        (r.status == 200).then_some(())
    })
    .await;
    every_surface_answers(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_entity_that_does_not_fit_the_schema_denies_on_every_surface_naming_it() {
    let redis = RedisServer::start();
    import(&redis).await;
    // Bea's `disabled` flag written as a string, past `portcullis entities` (which
    // would refuse it), as a buggy sync job might.
    let bad = json!({
        "uid": {"type": "Portal::User", "id": "bea"},
        "attrs": {"email": "bea@acme.example", "disabled": "no", "twoFactorEnrolled": false},
        "parents": [{"type": "Portal::Account", "id": "acme"}],
        "tags": {"acme": {"permissions": ["invoices"], "emailCategories": []}}
    });
    redis.cli(&[
        "SET",
        r#"portcullis:e:Portal::User::"bea""#,
        &bad.to_string(),
    ]);
    let server = TestServer::start(serve(&redis)).await;
    eventually("the server is ready", DEADLINE, || async {
        (server.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    for q in questions() {
        let r = ask(&server, &q).await;
        if q.surface == "authzen subject search" {
            // Others may pay the invoice; bea, whose data is unusable, is not among them.
            let ids: Vec<&str> = r.json["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap())
                .collect();
            assert!(!ids.contains(&"bea"), "{}", r.text);
        } else {
            assert!(!allows(&r), "{}: allowed: {}", q.surface, r.text);
        }
        assert!(
            r.status == 200 || r.status == 403,
            "{}: {} {}",
            q.surface,
            r.status,
            r.text
        );
        // Where the surface reports diagnostics, they name the entity at fault.
        let names_bea = r.text.contains(r#"Portal::User::\"bea\""#);
        let reports = !matches!(
            q.surface,
            "authzen resource search" | "authzen subject search" | "authzen action search"
        );
        assert!(!reports || names_bea, "{}: {}", q.surface, r.text);
    }
    let metrics = server.admin_get("/metrics").await.text;
    assert!(
        metrics.contains(r#"portcullis_errors_total{kind="entity_data_invalid"}"#),
        "{metrics}"
    );
}
