//! The Redis entity store against real redis-server processes (a single server, and a
//! three-master cluster) started by the tests on free loopback ports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cedar_policy::{EntityTypeName, EntityUid};
use common::blackhole::Blackhole;
use common::redis::{RedisCluster, RedisServer};
use common::{eventually, request, uid, Reply, TestServer, DEADLINE};
use portcullis::config::RedisArgs;
use portcullis::config::ServeArgs;
use portcullis::decision::{self, Call, RawRequest};
use serde_json::Value;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/portal/entities.json");

/// `serve` flags for a single Redis.
fn serve_redis(url: &str, max_staleness_secs: u64) -> ServeArgs {
    let mut args = ServeArgs::default();
    args.entity.redis = RedisArgs {
        redis_url: Some(url.to_string()),
        redis_timeout_ms: 300,
        max_staleness_secs,
        ..RedisArgs::default()
    };
    args
}

/// Runs `portcullis entities --redis-... <args>` (the real binary) and returns stdout.
async fn entities_cli(target: &[&str], args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("entities")
        .args(target)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "portcullis entities {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn wait_ready(server: &TestServer, ready: bool) {
    eventually(&format!("readiness {ready}"), DEADLINE, || async {
        ((server.get("/readyz").await.status == 200) == ready).then_some(())
    })
    .await;
}

async fn decide(server: &TestServer, principal: &str, action: &str, resource: &str) -> Reply {
    server
        .post("/v1/is_authorized", &request(principal, action, resource))
        .await
}

fn allowed(r: &Reply) -> bool {
    r.status == 200 && r.json["decision"] == "Allow"
}

/// Bea's entity as the demo has it, with her acme permissions replaced.
fn bea_with_permissions(permissions: &[&str]) -> String {
    let demo: Value = serde_json::from_str(&std::fs::read_to_string(DEMO).unwrap()).unwrap();
    let mut bea = demo
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["uid"]["id"] == "bea")
        .unwrap()
        .clone();
    bea["tags"]["acme"]["permissions"] = serde_json::json!(permissions);
    bea.to_string()
}

/// The sum of Redis's per-command call counts, leaving out the `INFO` the count itself
/// costs.
fn commands_served(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|v| v.split(',').next())
        .map(|v| v.parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_from_redis_equal_decisions_from_the_demo_file() {
    let redis = RedisServer::start();
    let out = entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    assert!(out.contains("wrote 29 entities"), "{out}");
    let from_file = TestServer::portal().await;
    let from_redis = TestServer::start(serve_redis(&redis.url(), 0)).await;
    wait_ready(&from_redis, true).await;

    let snapshot = from_file.app.model.load();
    let demo: Value = serde_json::from_str(&std::fs::read_to_string(DEMO).unwrap()).unwrap();
    let uids: Vec<String> = demo
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            uid(
                e["uid"]["type"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("Portal::"),
                e["uid"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    let actions: Vec<String> = snapshot.schema.actions().map(ToString::to_string).collect();
    let (mut compared, mut allows) = (0, 0);
    for principal in uids
        .iter()
        .filter(|u| u.contains("User") || u.contains("Contact"))
    {
        for action in &actions {
            for resource in &uids {
                let raw = RawRequest {
                    principal: principal.clone(),
                    action: action.clone(),
                    resource: resource.clone(),
                    context: Some(serde_json::json!({"secondFactor": true})),
                };
                let Ok(checked) = decision::check(&snapshot, &raw) else {
                    continue;
                };
                let call = Call::unrecorded();
                let mut file = decision::decide(
                    &snapshot,
                    from_file.app.entities.as_ref(),
                    &call,
                    &checked,
                    &[],
                )
                .await
                .decision();
                let mut redis = decision::decide(
                    &snapshot,
                    from_redis.app.entities.as_ref(),
                    &call,
                    &checked,
                    &[],
                )
                .await
                .decision();
                file.reasons.sort();
                redis.reasons.sort();
                assert_eq!(
                    (file.allowed, &file.reasons),
                    (redis.allowed, &redis.reasons),
                    "{principal} {action} {resource}: file and Redis disagree ({:?})",
                    redis.errors
                );
                compared += 1;
                allows += usize::from(file.allowed);
            }
        }
    }
    assert!(compared > 400, "only {compared} requests compared");
    assert!(
        allows > 50 && allows < compared,
        "{allows} allows of {compared}"
    );

    // The same through the HTTP API, with the domain's named expectations.
    for (who, action, what, allow) in [
        (
            uid("User", "olivia"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
            true,
        ),
        (
            uid("User", "walt"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
            false,
        ),
        (
            uid("User", "bea"),
            "PayInvoice",
            uid("Invoice", "inv-1001"),
            true,
        ),
        (
            uid("User", "bea"),
            "ViewInvoice",
            uid("Invoice", "inv-9001"),
            false,
        ),
        (
            uid("User", "dev"),
            "ManageDomain",
            uid("Domain", "globex.example"),
            true,
        ),
        (
            uid("User", "dev"),
            "ManageDomain",
            uid("Domain", "acme.example"),
            false,
        ),
        (
            uid("Contact", "carl"),
            "ReceiveEmail",
            uid("EmailMessage", "msg-acme-invoice"),
            true,
        ),
        (
            uid("Contact", "carl"),
            "ReceiveEmail",
            uid("EmailMessage", "msg-acme-general"),
            false,
        ),
        (
            uid("User", "nobody"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
            false,
        ),
    ] {
        let r = decide(&from_redis, &who, action, &what).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(allowed(&r), allow, "{who} {action} {what}: {}", r.text);
    }

    // Listing pages through a type's index in id order.
    let users = EntityTypeName::from_str("Portal::User").unwrap();
    let page = from_redis
        .app
        .entities
        .list(&users, None, 3, &snapshot)
        .await
        .unwrap();
    let ids: Vec<String> = page
        .uids
        .iter()
        .map(|u| u.id().unescaped().to_string())
        .collect();
    assert_eq!(ids, ["bea", "dev", "dora"]);
    let rest = from_redis
        .app
        .entities
        .list(&users, page.next.as_deref(), 10, &snapshot)
        .await
        .unwrap();
    let ids: Vec<String> = rest
        .uids
        .iter()
        .map(|u| u.id().unescaped().to_string())
        .collect();
    assert_eq!(ids, ["gina", "olivia", "rex", "walt"]);
    assert_eq!(rest.next, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_decisions_make_no_redis_call() {
    let redis = RedisServer::start();
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    let server = TestServer::start(serve_redis(&redis.url(), 0)).await;
    wait_ready(&server, true).await;
    let asks = [
        (uid("User", "bea"), "PayInvoice", uid("Invoice", "inv-1001")),
        (uid("User", "walt"), "OpenTicket", uid("Account", "acme")),
        (
            uid("Contact", "carl"),
            "ReceiveEmail",
            uid("EmailMessage", "msg-t-2002-reply"),
        ),
        (
            uid("User", "ghost"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
        ),
    ];
    for (p, a, r) in &asks {
        decide(&server, p, a, r).await;
    }
    let before = commands_served(&redis);
    for _ in 0..20 {
        for (p, a, r) in &asks {
            assert_eq!(decide(&server, p, a, r).await.status, 200);
        }
    }
    assert_eq!(
        commands_served(&redis),
        before,
        "warm decisions reached Redis"
    );

    let metrics = server.admin_get("/metrics").await.text;
    for name in [
        "portcullis_entity_cache_hits_total",
        "portcullis_entity_cache_misses_total",
        "portcullis_entity_cache_entries",
        "portcullis_redis_roundtrip_seconds_bucket",
        "portcullis_redis_subscription_up 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_beas_invoices_permission_denies_the_first_decision_after_the_write() {
    let redis = RedisServer::start();
    let target = ["--redis-url".to_string(), redis.url()];
    let target: Vec<&str> = target.iter().map(String::as_str).collect();
    entities_cli(&target, &["import", DEMO]).await;
    let server = Arc::new(TestServer::start(serve_redis(&redis.url(), 0)).await);
    wait_ready(&server, true).await;
    let (bea, invoice) = (uid("User", "bea"), uid("Invoice", "inv-1001"));
    assert!(allowed(
        &decide(&server, &bea, "ViewInvoice", &invoice).await
    ));

    // Requests keep flowing (and keep bea's entity warm) while the write happens.
    let flowing = Arc::new(AtomicBool::new(true));
    let traffic = {
        let (server, flowing, bea, invoice) = (
            server.clone(),
            flowing.clone(),
            bea.clone(),
            invoice.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while flowing.load(Ordering::SeqCst) {
                decide(&server, &bea, "ViewInvoice", &invoice).await;
                n += 1;
            }
            n
        })
    };
    let out = entities_cli(&target, &["put", &bea_with_permissions(&["tickets"])]).await;
    let after = decide(&server, &bea, "ViewInvoice", &invoice).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json["decision"], "Deny", "{}", after.text);
    assert!(out.contains("acknowledged by 1 of 1"), "{out}");
    flowing.store(false, Ordering::SeqCst);
    assert!(traffic.await.unwrap() > 0);
    // Her tickets permission stays.
    assert!(allowed(
        &decide(&server, &bea, "OpenTicket", &uid("Account", "acme")).await
    ));

    // Deleting an entity invalidates it too: the owner of a deleted invoice sees nothing.
    let olivia = uid("User", "olivia");
    assert!(allowed(
        &decide(&server, &olivia, "ViewInvoice", &invoice).await
    ));
    entities_cli(&target, &["delete", &invoice]).await;
    assert!(!allowed(
        &decide(&server, &olivia, "ViewInvoice", &invoice).await
    ));
    let got = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["entities", "--redis-url", &redis.url(), "get", &invoice])
        .output()
        .await
        .unwrap();
    assert!(!got.status.success(), "a deleted entity is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopping_mid_traffic_denies_uncached_data_and_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let target = ["--redis-url".to_string(), redis.url()];
    let target: Vec<&str> = target.iter().map(String::as_str).collect();
    entities_cli(&target, &["import", DEMO]).await;
    let strict = TestServer::start(serve_redis(&redis.url(), 0)).await;
    let lenient = TestServer::start(serve_redis(&redis.url(), 600)).await;
    wait_ready(&strict, true).await;
    wait_ready(&lenient, true).await;
    let (dev, globex) = (uid("User", "dev"), uid("Domain", "globex.example"));
    for s in [&strict, &lenient] {
        assert!(allowed(&decide(s, &dev, "ManageDomain", &globex).await));
    }

    redis.stop();
    wait_ready(&strict, false).await;
    wait_ready(&lenient, false).await;
    let (bea, invoice) = (uid("User", "bea"), uid("Invoice", "inv-1001"));
    for s in [&strict, &lenient] {
        // Never fetched, so never cached: no data, no Allow, and the API says why.
        let r = decide(s, &bea, "PayInvoice", &invoice).await;
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.json["error"], "entity_store_unavailable");
    }
    // Without allowed staleness, even cached data is not used.
    let r = decide(&strict, &dev, "ManageDomain", &globex).await;
    assert_eq!(r.status, 503, "{}", r.text);
    // With it, cached data keeps serving.
    assert!(allowed(
        &decide(&lenient, &dev, "ManageDomain", &globex).await
    ));

    redis.restart();
    entities_cli(&target, &["import", DEMO]).await;
    wait_ready(&strict, true).await;
    wait_ready(&lenient, true).await;
    for s in [&strict, &lenient] {
        assert!(allowed(&decide(s, &bea, "PayInvoice", &invoice).await));
        assert!(allowed(&decide(s, &dev, "ManageDomain", &globex).await));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_master_cluster_imports_and_decides() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seeds().join(",");
    let target = ["--redis-cluster", seeds.as_str()];
    let out = entities_cli(&target, &["import", DEMO]).await;
    assert!(out.contains("wrote 29 entities"), "{out}");
    // The entities are spread over the masters.
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["DBSIZE"]) != "0")
        .count();
    assert_eq!(holding, 3, "every master holds some keys");

    let mut args = ServeArgs::default();
    args.entity.redis = RedisArgs {
        redis_cluster: cluster.seeds(),
        redis_timeout_ms: 500,
        ..RedisArgs::default()
    };
    let server = TestServer::start(args).await;
    wait_ready(&server, true).await;
    for (who, action, what, allow) in [
        (
            uid("User", "olivia"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
            true,
        ),
        (
            uid("User", "walt"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
            false,
        ),
        (
            uid("User", "bea"),
            "PayInvoice",
            uid("Invoice", "inv-1001"),
            true,
        ),
        (
            uid("User", "dev"),
            "ManageDomain",
            uid("Domain", "globex.example"),
            true,
        ),
        (
            uid("User", "dev"),
            "ManageDomain",
            uid("Domain", "acme.example"),
            false,
        ),
        (
            uid("Contact", "carl"),
            "ReceiveEmail",
            uid("EmailMessage", "msg-acme-invoice"),
            true,
        ),
        (
            uid("Contact", "carl"),
            "ReceiveEmail",
            uid("EmailMessage", "msg-t-2002-reply"),
            true,
        ),
    ] {
        let r = decide(&server, &who, action, &what).await;
        assert_eq!(allowed(&r), allow, "{who} {action} {what}: {}", r.text);
    }
    // The index sets the import wrote across the masters serve the owner's plan and
    // the resource search that reads acme's and globex's invoices from them.
    let plan = server
        .post(
            "/v1/query_plan",
            &serde_json::json!({"principal": uid("User", "olivia"),
                "action": "Portal::Action::\"ViewInvoice\"", "resource_type": "Portal::Invoice"}),
        )
        .await;
    assert_eq!(plan.json["kind"], "conditional", "{}", plan.text);
    let found = server
        .post(
            "/access/v1/search/resource",
            &serde_json::json!({"subject": {"type": "user", "id": "olivia"},
                "action": {"name": "ViewInvoice"}, "resource": {"type": "invoice"}}),
        )
        .await;
    assert_eq!(
        found.json["results"],
        serde_json::json!([{"type": "invoice", "id": "inv-1001"}, {"type": "invoice", "id": "inv-5001"}]),
        "{}",
        found.text
    );
    // The member sets and their ledger, written across the masters, give subject
    // search acme's five members (its owner among them) as its only candidates, not
    // all seven users.
    let who = server
        .post(
            "/access/v1/search/subject",
            &serde_json::json!({"subject": {"type": "user"}, "action": {"name": "ViewInvoice"},
                "resource": {"type": "invoice", "id": "inv-1001"}}),
        )
        .await;
    assert_eq!(
        who.json["results"],
        serde_json::json!([{"type": "user", "id": "bea"}, {"type": "user", "id": "olivia"}]),
        "{}",
        who.text
    );
    let metrics = server.admin_get("/metrics").await.text;
    let decided = common::metric(
        &metrics,
        r#"portcullis_authzen_search_candidates_total{search="subject"}"#,
    );
    assert_eq!(decided, Some(5.0), "{metrics}");
    let out = entities_cli(&target, &["put", &bea_with_permissions(&[])]).await;
    assert!(out.contains("acknowledged by 1 of 1"), "{out}");
    let r = decide(
        &server,
        &uid("User", "bea"),
        "PayInvoice",
        &uid("Invoice", "inv-1001"),
    )
    .await;
    assert_eq!(r.json["decision"], "Deny", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_in_redis_denies_with_a_diagnostic_naming_the_entity() {
    let redis = RedisServer::start();
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    let server = TestServer::start(serve_redis(&redis.url(), 0)).await;
    wait_ready(&server, true).await;
    let key = |u: &str| format!("portcullis:e:{u}");
    let bea = uid("User", "bea");
    let walt = uid("User", "walt");
    let broken = uid("Invoice", "inv-broken");
    redis.cli(&["SET", &key(&bea), "{not json"]);
    redis.cli(&[
        "SET",
        &key(&walt),
        r#"{"uid":{"type":"Portal::User","id":"walt"},"attrs":{"email":"w@x","disabled":"no","twoFactorEnrolled":false},"parents":[{"type":"Portal::Account","id":"acme"}]}"#,
    ]);
    redis.cli(&[
        "SET",
        &key(&broken),
        r#"{"uid":{"type":"Portal::Invoice","id":"inv-broken"},"attrs":{"account":{"__entity":{"type":"Portal::Account","id":"acme"}},"total":"lots"},"parents":[]}"#,
    ]);
    let olivia = uid("User", "olivia");
    for (who, action, what, named) in [
        (&bea, "PayInvoice", uid("Invoice", "inv-1001"), &bea),
        (&walt, "OpenTicket", uid("Account", "acme"), &walt),
        (&olivia, "ViewInvoice", broken.clone(), &broken),
    ] {
        let r = decide(&server, who, action, &what).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["decision"], "Deny", "{}", r.text);
        let errors = r.json["diagnostics"]["errors"].to_string();
        assert!(
            errors.contains(&named.replace('"', "\\\"")),
            "the diagnostic names {named}: {errors}"
        );
    }
    // Everything else still decides.
    assert!(allowed(
        &decide(&server, &olivia, "ViewInvoice", &uid("Invoice", "inv-1001")).await
    ));
    assert_eq!(server.get("/readyz").await.status, 200);
    let _ = EntityUid::from_str(&bea).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_with_a_password_serves_decisions() {
    let (redis, ca) = RedisServer::start_tls("s3cret");
    let ca = ca.display().to_string();
    let url = format!("rediss://:s3cret@127.0.0.1:{}", redis.port);
    let target = ["--redis-url", url.as_str(), "--redis-tls-ca", ca.as_str()];
    let out = entities_cli(&target, &["import", DEMO]).await;
    assert!(out.contains("wrote 29 entities"), "{out}");

    let mut args = serve_redis(&url, 0);
    args.entity.redis.redis_tls_ca = Some(ca.clone().into());
    let server = TestServer::start(args).await;
    wait_ready(&server, true).await;
    let r = decide(
        &server,
        &uid("User", "bea"),
        "PayInvoice",
        &uid("Invoice", "inv-1001"),
    )
    .await;
    assert!(allowed(&r), "{}", r.text);

    // A wrong password never becomes ready and never allows.
    let mut args = serve_redis(&format!("rediss://:wrong@127.0.0.1:{}", redis.port), 0);
    args.entity.redis.redis_tls_ca = Some(ca.into());
    let refused = TestServer::start(args).await;
    let r = decide(
        &refused,
        &uid("User", "bea"),
        "PayInvoice",
        &uid("Invoice", "inv-1001"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(refused.get("/readyz").await.status, 503);
}

/// The flush count from `/metrics`.
async fn flushes(server: &TestServer) -> u64 {
    let metrics = server.admin_get("/metrics").await.text;
    metrics
        .lines()
        .find(|l| l.starts_with("portcullis_entity_invalidations_total{source=\"flush\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_clears_the_cache_before_serving_again() {
    let redis = RedisServer::start();
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    let server = TestServer::start(serve_redis(&redis.url(), 0)).await;
    wait_ready(&server, true).await;
    let (bea, invoice) = (uid("User", "bea"), uid("Invoice", "inv-1001"));
    assert!(allowed(
        &decide(&server, &bea, "PayInvoice", &invoice).await
    ));
    let before = flushes(&server).await;

    // The subscription is cut, and a writer revokes without anyone hearing about it.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    redis.cli(&[
        "SET",
        r#"portcullis:e:Portal::User::"bea""#,
        &bea_with_permissions(&["tickets"]),
    ]);
    eventually("the cache is flushed", DEADLINE, || async {
        (flushes(&server).await > before).then_some(())
    })
    .await;
    wait_ready(&server, true).await;
    let r = decide(&server, &bea, "PayInvoice", &invoice).await;
    assert_eq!(r.json["decision"], "Deny", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_evict_for_writers_that_cannot_publish() {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "K$g"]);
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    let mut args = serve_redis(&redis.url(), 0);
    args.entity.redis.redis_keyspace_events = true;
    let server = TestServer::start(args).await;
    wait_ready(&server, true).await;
    let (bea, invoice) = (uid("User", "bea"), uid("Invoice", "inv-1001"));
    assert!(allowed(
        &decide(&server, &bea, "PayInvoice", &invoice).await
    ));

    // A plain SET, no PUBLISH: only the keyspace notification tells Portcullis.
    redis.cli(&[
        "SET",
        r#"portcullis:e:Portal::User::"bea""#,
        &bea_with_permissions(&["tickets"]),
    ]);
    eventually("the keyspace notification evicts bea", DEADLINE, || async {
        (!allowed(&decide(&server, &bea, "PayInvoice", &invoice).await)).then_some(())
    })
    .await;
    let metrics = server.admin_get("/metrics").await.text;
    assert!(
        metrics.contains("portcullis_entity_invalidations_total{source=\"keyspace\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_one_bad_entity_writes_nothing() {
    let redis = RedisServer::start();
    let mut demo: Value = serde_json::from_str(&std::fs::read_to_string(DEMO).unwrap()).unwrap();
    demo.as_array_mut().unwrap().push(serde_json::json!({
        "uid": {"type": "Portal::Invoice", "id": "inv-bad"},
        "attrs": {"account": {"__entity": {"type": "Portal::Account", "id": "acme"}}, "total": "lots"},
        "parents": []
    }));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entities.json");
    std::fs::write(&file, demo.to_string()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["entities", "--redis-url", &redis.url(), "import"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("inv-bad"),
        "the error names the entity: {stderr}"
    );
    assert_eq!(redis.cli(&["DBSIZE"]), "0", "nothing was written");
}

/// The client ports of the connections Redis holds subscriptions for.
fn subscriber_ports(redis: &RedisServer) -> Vec<u16> {
    redis
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| l.contains(" sub=1 ") || l.contains("cmd=subscribe"))
        .filter_map(|l| {
            l.split("addr=")
                .nth(1)?
                .split(' ')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_dies_silently_still_lets_a_revocation_deny() {
    let redis = RedisServer::start();
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    let proxy = Blackhole::start(([127, 0, 0, 1], redis.port).into()).await;
    // The liveness flags keep their defaults: a PING every second, a second to answer.
    let server = TestServer::start(serve_redis(&proxy.url(), 0)).await;
    wait_ready(&server, true).await;
    let (bea, invoice) = (uid("User", "bea"), uid("Invoice", "inv-1001"));
    assert!(allowed(
        &decide(&server, &bea, "ViewInvoice", &invoice).await
    ));

    // Every flow Portcullis has open through the proxy goes silent; Redis still counts
    // its subscription, so the revocation is published to a subscriber that never
    // hears it.
    proxy.drop_open_flows_except(&[]);
    redis.cli(&[
        "SET",
        r#"portcullis:e:Portal::User::"bea""#,
        &bea_with_permissions(&["tickets"]),
    ]);
    let receivers = redis.cli(&["PUBLISH", "portcullis:invalidate", &bea]);
    assert_eq!(receivers, "1", "the dead subscription still counts");

    eventually(
        "bea's revoked invoices permission denies",
        DEADLINE,
        || async {
            let r = decide(&server, &bea, "ViewInvoice", &invoice).await;
            (r.status == 200 && r.json["decision"] == "Deny").then_some(())
        },
    )
    .await;
    let metrics = server.admin_get("/metrics").await.text;
    let failures = common::metric(
        &metrics,
        "portcullis_redis_subscription_failures_total{how=\"unanswered\"}",
    );
    assert!(failures >= Some(1.0), "the failure is counted: {metrics}");
    // Resubscribed through a new flow: ready, and her tickets permission still allows.
    wait_ready(&server, true).await;
    assert!(allowed(
        &decide(&server, &bea, "OpenTicket", &uid("Account", "acme")).await
    ));

    // The writer's acknowledgements come back too: a later write through the CLI is
    // acknowledged by this Portcullis (the CLI fails when it is not), and applies.
    entities_cli(
        &["--redis-url", &redis.url()],
        &["put", &bea_with_permissions(&[])],
    )
    .await;
    assert!(!allowed(
        &decide(&server, &bea, "OpenTicket", &uid("Account", "acme")).await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_connection_that_dies_silently_is_replaced() {
    let redis = RedisServer::start();
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    let proxy = Blackhole::start(([127, 0, 0, 1], redis.port).into()).await;
    let server = TestServer::start(serve_redis(&proxy.url(), 0)).await;
    wait_ready(&server, true).await;

    // Only the command connection goes silent; the subscription keeps answering.
    let subscription = subscriber_ports(&redis);
    assert_eq!(subscription.len(), 1, "one subscriber: {subscription:?}");
    proxy.drop_open_flows_except(&subscription);

    // Olivia's invoice was never fetched, so only a working command connection can
    // allow her to view it.
    let (olivia, invoice) = (uid("User", "olivia"), uid("Invoice", "inv-1001"));
    eventually("olivia's decision reads Redis again", DEADLINE, || async {
        allowed(&decide(&server, &olivia, "ViewInvoice", &invoice).await).then_some(())
    })
    .await;
    wait_ready(&server, true).await;
    let metrics = server.admin_get("/metrics").await.text;
    assert_eq!(
        common::metric(
            &metrics,
            "portcullis_redis_subscription_failures_total{how=\"unanswered\"}"
        ),
        None,
        "the subscription itself never failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_makes_both_listeners_unready_saying_why_until_it_answers_again() {
    let redis = RedisServer::start();
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    let server = TestServer::start(serve_redis(&redis.url(), 0)).await;
    wait_ready(&server, true).await;
    assert_eq!(server.admin_get("/readyz").await.status, 200);

    // Hung, not gone: its sockets stay open and nothing answers.
    redis.pause();
    for (listener, addr) in [("decision", server.addr), ("admin", server.admin_addr)] {
        let body = eventually(
            &format!("the {listener} listener reports not ready"),
            DEADLINE,
            || async {
                let r = common::send(addr, http::Method::GET, "/readyz", &[], Vec::new()).await;
                (r.status == 503).then_some(r.json)
            },
        )
        .await;
        assert_eq!(body["status"], "not_ready", "{body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("Redis"), "the reason names Redis: {body}");
    }
    let r = decide(
        &server,
        &uid("User", "bea"),
        "PayInvoice",
        &uid("Invoice", "inv-1001"),
    )
    .await;
    assert!(!allowed(&r), "{}", r.text);

    redis.resume();
    wait_ready(&server, true).await;
    assert_eq!(server.admin_get("/readyz").await.status, 200);
    assert!(allowed(
        &decide(
            &server,
            &uid("User", "bea"),
            "PayInvoice",
            &uid("Invoice", "inv-1001")
        )
        .await
    ));
}

/// Runs `portcullis entities <args>` and returns its exit status, stdout and stderr.
async fn entities_status(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("entities")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_a_subscriber_does_not_acknowledge_exits_with_status_3() {
    let redis = RedisServer::start();
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    // A subscriber that hears invalidations and never acknowledges them: a Portcullis
    // whose reply path is broken, as far as the writer can tell.
    let mut deaf = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(["SUBSCRIBE", "portcullis:invalidate"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the deaf subscriber subscribes", DEADLINE, || async {
        redis
            .cli(&["PUBSUB", "NUMSUB", "portcullis:invalidate"])
            .ends_with('1')
            .then_some(())
    })
    .await;
    let url = redis.url();
    let (code, stdout, stderr) = entities_status(&[
        "--redis-url",
        &url,
        "--ack-timeout-ms",
        "300",
        "put",
        &bea_with_permissions(&["tickets"]),
    ])
    .await;
    let _ = deaf.kill();
    let _ = deaf.wait();
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("wrote 1 entities"), "{stdout}");
    assert!(
        stderr.contains("0 of 1 subscribers acknowledged"),
        "the shortfall is explained: {stderr}"
    );
    // The write itself landed.
    assert!(redis
        .cli(&["GET", r#"portcullis:e:Portal::User::"bea""#])
        .contains(r#"["tickets"]"#));

    // With every subscriber acknowledging, the same write exits 0.
    let server = TestServer::start(serve_redis(&url, 0)).await;
    wait_ready(&server, true).await;
    let (code, stdout, stderr) = entities_status(&[
        "--redis-url",
        &url,
        "put",
        &bea_with_permissions(&["invoices"]),
    ])
    .await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("acknowledged by 1 of 1"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_onto_a_key_of_the_wrong_type_writes_nothing_and_names_the_key() {
    let redis = RedisServer::start();
    // Something else lives where the users' index belongs.
    redis.cli(&["SET", "portcullis:t:Portal::User", "not an index"]);
    let (code, stdout, stderr) =
        entities_status(&["--redis-url", &redis.url(), "import", DEMO]).await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(redis.cli(&["DBSIZE"]), "1", "nothing was written: {stderr}");
    assert!(
        stderr.contains("nothing was written") && stderr.contains("`portcullis:t:Portal::User`"),
        "the error names the key: {stderr}"
    );
    assert_eq!(
        redis.cli(&["GET", "portcullis:t:Portal::User"]),
        "not an index"
    );
}

/// Writes a file the way deployment tools do: beside it, then renamed over it.
fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_the_stored_users_do_not_fit_is_rejected_and_the_old_model_serves() {
    let redis = RedisServer::start();
    entities_cli(&["--redis-url", &redis.url()], &["import", DEMO]).await;
    // The shipped model, copied where it can be edited.
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for entry in std::fs::read_dir(repo.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".cedar") || name == "links.json" {
            std::fs::copy(&path, policies.join(&name)).unwrap();
        }
    }
    let schema = dir.path().join("portal.cedarschema");
    let shipped = std::fs::read_to_string(repo.join("schema/portal.cedarschema")).unwrap();
    std::fs::write(&schema, &shipped).unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let served = common::binary::Served::start(
        &[],
        &[
            "--redis-url",
            &redis.url(),
            "--schema",
            &path(&schema),
            "--policies",
            &path(&policies),
            "--template-links",
            &path(&policies.join("links.json")),
        ],
    );
    let (addr, admin_addr) = (served.addr, served.admin_addr);
    let post = |body: Value| async move {
        common::send(
            addr,
            http::Method::POST,
            "/v1/is_authorized",
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await
    };
    let policies_view = || async {
        common::send(
            admin_addr,
            http::Method::GET,
            "/v1/policies",
            &[],
            Vec::new(),
        )
        .await
        .json
    };
    let bea_pays = request(
        &uid("User", "bea"),
        "PayInvoice",
        &uid("Invoice", "inv-1001"),
    );
    eventually("bea may pay acme's invoice", DEADLINE, || async {
        allowed(&post(bea_pays.clone()).await).then_some(())
    })
    .await;
    let hash = policies_view().await["schema_hash"].clone();

    // Users must now have a department; none of the stored ones has.
    let user = "entity User in [Account] = {\n    email: String,";
    assert!(
        shipped.contains(user),
        "the shipped schema declares users so"
    );
    write_atomically(
        &schema,
        &shipped.replace(user, &format!("{user}\n    department: String,")),
    );
    let messages = eventually("the reload is rejected", DEADLINE, || async {
        let view = policies_view().await;
        let messages = view["reload"]["last_error"]["messages"].as_array()?.clone();
        (view["reload"]["last_result"] == "rejected").then(|| {
            messages
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join("\n")
        })
    })
    .await;
    eprintln!("the rejected reload reports: {messages}");
    assert!(
        messages.contains("entity `Portal::User::\""),
        "the report names a stored user: {messages}"
    );
    assert!(messages.contains("department"), "{messages}");
    // Walt was never decided about, so never cached: the sample from Redis found him.
    assert!(
        messages.contains(r#"entity `Portal::User::"walt"` in Redis"#),
        "{messages}"
    );
    assert_eq!(
        policies_view().await["schema_hash"],
        hash,
        "the old schema serves"
    );
    assert!(
        allowed(&post(bea_pays.clone()).await),
        "decisions use the old model"
    );

    // An optional department fits the stored users: that schema applies.
    write_atomically(
        &schema,
        &shipped.replace(user, &format!("{user}\n    department?: String,")),
    );
    eventually("the fitting schema applies", DEADLINE, || async {
        let view = policies_view().await;
        (view["schema_hash"] != hash && view["reload"]["last_result"] == "applied").then_some(())
    })
    .await;
    assert!(allowed(&post(bea_pays).await));
}
