//! Missing data denies: a request about a principal or resource that neither the
//! entity data holds nor the request describes is a Deny naming it, on every surface
//! and both entity sources, because Cedar alone would skip the guards that read the
//! missing entity while permits that only compare uids still apply.
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
use portcullis::config::{EntityArgs, GatewayArgs, RedisArgs, RequireEntities, ServeArgs};
use serde_json::{json, Value};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/portal/entities.json");

fn serve(entity: EntityArgs) -> ServeArgs {
    ServeArgs {
        entity,
        gateway: GatewayArgs {
            trusted_principal_header: Some("x-portal-user".to_string()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    }
}

fn redis_entities(redis: &RedisServer, require: RequireEntities) -> EntityArgs {
    EntityArgs {
        redis: RedisArgs {
            redis_url: Some(redis.url()),
            ..RedisArgs::default()
        },
        require_entities: require,
        ..EntityArgs::default()
    }
}

async fn entities_cli(redis: &RedisServer, args: &[&str]) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["entities", "--redis-url", &redis.url()])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One question through the three surfaces: (surface, reply).
async fn ask_everywhere(
    server: &TestServer,
    (user, action, resource): (&str, &str, (&str, &str)),
    gateway: Option<(&str, &str)>,
) -> Vec<(&'static str, Reply)> {
    let cedar = server
        .post(
            "/v1/is_authorized",
            &json!({
                "principal": format!("Portal::User::\"{user}\""),
                "action": format!("Portal::Action::\"{action}\""),
                "resource": format!("Portal::{}::\"{}\"", resource.0, resource.1),
            }),
        )
        .await;
    let authzen = server
        .send(
            Method::POST,
            "/access/v1/evaluation",
            &[
                ("content-type", "application/json"),
                ("x-portcullis-explain", "true"),
            ],
            json!({
                "subject": {"type": "user", "id": user},
                "action": {"name": action},
                "resource": {"type": format!("Portal::{}", resource.0), "id": resource.1},
            })
            .to_string()
            .into_bytes(),
        )
        .await;
    let mut out = vec![("cedar", cedar), ("authzen", authzen)];
    if let Some((method, path)) = gateway {
        let r = server
            .send(
                Method::GET,
                "/forward-auth/nginx",
                &[
                    ("x-original-method", method),
                    ("x-original-uri", path),
                    ("x-portal-user", user),
                ],
                Vec::new(),
            )
            .await;
        out.push(("gateway", r));
    }
    out
}

fn allowed(r: &Reply) -> bool {
    r.json["decision"] == "Allow" || r.json["decision"] == true
}

/// Every surface denies and names `missing` in its diagnostics.
fn denied_naming(replies: &[(&str, Reply)], missing: &str) {
    for (surface, r) in replies {
        assert!(
            r.status == 200 || r.status == 403,
            "{surface}: {} {}",
            r.status,
            r.text
        );
        assert!(!allowed(r), "{surface} allowed: {}", r.text);
        assert!(
            r.text.contains(missing) && r.text.contains("does not exist"),
            "{surface} does not name `{missing}`: {}",
            r.text
        );
    }
}

fn all_allowed(replies: &[(&str, Reply)]) {
    for (surface, r) in replies {
        assert!(allowed(r), "{surface}: {} {}", r.status, r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_owner_loses_its_account_on_every_surface() {
    let redis = RedisServer::start();
    entities_cli(&redis, &["import", DEMO]).await;
    let server = TestServer::start(serve(redis_entities(
        &redis,
        RequireEntities::PrincipalResource,
    )))
    .await;
    eventually("ready", DEADLINE, || async {
        (server.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    let manage = ("olivia", "ManageUsers", ("Account", "acme"));
    let gateway = Some(("DELETE", "/accounts/acme/users/bea"));
    all_allowed(&ask_everywhere(&server, manage, gateway).await);

    entities_cli(&redis, &["delete", r#"Portal::User::"olivia""#]).await;
    let olivia = r#"Portal::User::\"olivia\""#;
    denied_naming(&ask_everywhere(&server, manage, gateway).await, olivia);
    let pay = ("olivia", "PayInvoice", ("Invoice", "inv-1001"));
    denied_naming(
        &ask_everywhere(
            &server,
            pay,
            Some(("POST", "/accounts/acme/invoices/inv-1001/pay")),
        )
        .await,
        olivia,
    );
    let metrics = server.admin_get("/metrics").await.text;
    assert!(
        metrics.contains(r#"portcullis_errors_total{kind="entity_missing"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_deleted_account_lets_no_member_log_in_from_the_file_source() {
    let demo: Value = serde_json::from_str(&std::fs::read_to_string(DEMO).unwrap()).unwrap();
    // Acme removed; its members still name it as their parent, as a stale export would.
    let without_acme: Vec<Value> = demo
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !(e["uid"]["type"] == "Portal::Account" && e["uid"]["id"] == "acme"))
        .cloned()
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entities.json");
    // Entities whose attributes name acme would not load; they go too.
    let kept: Vec<Value> = without_acme
        .into_iter()
        .filter(|e| !e["attrs"].to_string().contains(r#""id":"acme""#))
        .collect();
    std::fs::write(&file, Value::Array(kept).to_string()).unwrap();
    let server = TestServer::start(serve(EntityArgs {
        entities: Some(file),
        ..EntityArgs::default()
    }))
    .await;
    for user in ["walt", "dev"] {
        let login = (user, "Login", ("Account", "acme"));
        denied_naming(
            &ask_everywhere(&server, login, Some(("POST", "/accounts/acme/login"))).await,
            r#"Portal::Account::\"acme\""#,
        );
    }
    // Globex is untouched: dev still logs in there.
    let globex = ("dev", "Login", ("Account", "globex"));
    all_allowed(&ask_everywhere(&server, globex, Some(("POST", "/accounts/globex/login"))).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_cedar_semantics_are_a_deliberate_choice() {
    // With `--require-entities none` the deleted owner keeps what permits comparing
    // uids give it: the behaviour the default prevents, chosen knowingly.
    let redis = RedisServer::start();
    entities_cli(&redis, &["import", DEMO]).await;
    entities_cli(&redis, &["delete", r#"Portal::User::"olivia""#]).await;
    let server = TestServer::start(serve(redis_entities(&redis, RequireEntities::None))).await;
    eventually("ready", DEADLINE, || async {
        (server.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    let manage = ("olivia", "ManageUsers", ("Account", "acme"));
    all_allowed(&ask_everywhere(&server, manage, None).await);
}

#[tokio::test]
async fn an_entity_the_request_describes_is_not_missing() {
    // AuthZEN properties describe a subject the store does not hold (store precedence
    // uses them only then): it is decided by the policies, not refused as missing.
    let server = TestServer::portal().await;
    let r = server
        .send(
            Method::POST,
            "/access/v1/evaluation",
            &[
                ("content-type", "application/json"),
                ("x-portcullis-explain", "true"),
            ],
            json!({
                "subject": {"type": "user", "id": "newcomer", "properties": {
                    "email": "n@example.com", "disabled": false, "twoFactorEnrolled": false}},
                "action": {"name": "ViewInvoice"},
                "resource": {"type": "invoice", "id": "inv-1001"},
            })
            .to_string()
            .into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["decision"], false, "{}", r.text);
    assert!(!r.text.contains("does not exist"), "{}", r.text);
    assert_eq!(
        r.json["context"]["policies"],
        json!(["user-account-isolation"]),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_beyond_the_fetch_depth_does_not_silently_vanish() {
    let redis = RedisServer::start();
    entities_cli(&redis, &["import", DEMO]).await;
    // Depth 0: only the principal, the resource and their ancestors are fetched. Walt
    // asking for globex's invoice reaches globex only through the invoice's `account`.
    let mut entity = redis_entities(&redis, RequireEntities::PrincipalResource);
    entity.redis.redis_fetch_depth = 0;
    let server = TestServer::start(serve(entity)).await;
    eventually("ready", DEADLINE, || async {
        (server.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    let walt = ("walt", "ViewInvoice", ("Invoice", "inv-9001"));
    for (surface, r) in ask_everywhere(
        &server,
        walt,
        Some(("GET", "/accounts/globex/invoices/inv-9001")),
    )
    .await
    {
        assert!(!allowed(&r), "{surface}: {}", r.text);
        assert!(
            r.text.contains("beyond the fetch depth") && r.text.contains("globex"),
            "{surface}: {}",
            r.text
        );
    }
    // Bea's own invoice needs nothing beyond her account, her ancestor: still allowed.
    let bea = ("bea", "PayInvoice", ("Invoice", "inv-1001"));
    all_allowed(&ask_everywhere(&server, bea, None).await);
}
