//! AuthZEN resource search at scale over Redis: "which invoices may bea view?" with
//! 1,000,000 invoices over 10,000 accounts (100 per account), answered
//!
//! - from the query plan: `account ∈ {a0}` read from the index set of `a0` (the 100
//!   invoices of bea's account), each decided by the pipeline;
//! - by enumeration: every invoice listed and decided, through the same endpoint with
//!   the subject described by a property (a described subject makes search skip the
//!   plan; the store's bea still wins, so the decisions are the same).
//!
//! The plan's search runs first with nothing cached (timed once), then 30 times
//! (median); enumeration runs once. Both read the whole answer page by page (`page.limit` 1000, the search's
//! `max_candidates` of 1000 per call), on one server, in one run, and must return the
//! same invoices. The data is written straight to a redis-server this bench starts,
//! with pipelines, in the layout `portcullis entities` writes (entity keys, type
//! indexes, index sets).
//!
//! Then subject search, "who may view invoice i0?", with 100,000 users over the same
//! accounts (10 per account): from the symmetric plan (the members of `a0`, read from
//! its member set) against enumeration of every user (the resource described by a
//! property).
//!
//! Run: `cargo bench --bench plan_search`. Sizes: `PORTCULLIS_PLAN_BENCH_INVOICES`
//! (default 1000000), `PORTCULLIS_PLAN_BENCH_ACCOUNTS` (default 10000) and
//! `PORTCULLIS_PLAN_BENCH_USERS` (default 100000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::TestServer;
use portcullis::config::{RedisArgs, ServeArgs};
use serde_json::{json, Value};

/// `cargo bench` passes `--bench`; under a test runner this binary is a smoke test
/// on a small data set.
fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn size(var: &str, bench: usize, smoke: usize) -> usize {
    if !bench_mode() {
        return smoke;
    }
    std::env::var(var).map_or(bench, |v| v.trim().parse().unwrap())
}

/// Writes the accounts (owned by users who are not stored), bea (member of `a0`
/// with the `invoices` permission) and the invoices, `i{n}` in account `a{n % accounts}`,
/// with their index sets and ledgers, as a writer of its own that keeps them does.
async fn bulk_load(url: &str, invoices: usize, accounts: usize, users: usize) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    let mut pipe = redis::pipe();
    let mut queued = 0;
    let put = |pipe: &mut redis::Pipeline, ty: &str, id: &str, json: String| {
        pipe.cmd("SET")
            .arg(format!("portcullis:e:Portal::{ty}::\"{id}\""))
            .arg(json)
            .ignore();
        pipe.cmd("ZADD")
            .arg(format!("portcullis:t:Portal::{ty}"))
            .arg(0)
            .arg(id)
            .ignore();
    };
    // A user, member of `account` with the `invoices` permission there, in its
    // account's member set and the users' ledger.
    let user = |pipe: &mut redis::Pipeline, id: &str, account: &str| {
        put(
            pipe,
            "User",
            id,
            json!({"uid": {"type": "Portal::User", "id": id},
                   "attrs": {"email": format!("{id}@example.test"), "disabled": false,
                             "twoFactorEnrolled": true},
                   "parents": [{"type": "Portal::Account", "id": account}],
                   "tags": {account: {"permissions": ["invoices"], "emailCategories": []}}})
            .to_string(),
        );
        pipe.cmd("ZADD")
            .arg(format!(
                "portcullis:m:Portal::User:Portal::Account::\"{account}\""
            ))
            .arg(0)
            .arg(id)
            .ignore();
        pipe.cmd("ZADD")
            .arg("portcullis:x:Portal::User")
            .arg(0)
            .arg(id)
            .ignore();
    };
    user(&mut pipe, "bea", "a0");
    for n in 0..users {
        user(&mut pipe, &format!("u{n}"), &format!("a{}", n % accounts));
        if n % 10_000 == 9_999 {
            pipe.query_async::<()>(&mut conn).await.unwrap();
            pipe = redis::pipe();
        }
    }
    for a in 0..accounts {
        let id = format!("a{a}");
        put(
            &mut pipe,
            "Account",
            &id,
            json!({"uid": {"type": "Portal::Account", "id": id},
                   "attrs": {"id": id, "name": format!("Account {a}"),
                             "owner": {"__entity": {"type": "Portal::User", "id": format!("o{a}")}}},
                   "parents": []})
            .to_string(),
        );
        pipe.cmd("ZADD")
            .arg(format!(
                "portcullis:r:Portal::Account.owner:Portal::User::\"o{a}\""
            ))
            .arg(0)
            .arg(&id)
            .ignore();
        pipe.cmd("ZADD")
            .arg("portcullis:x:Portal::Account.owner")
            .arg(0)
            .arg(&id)
            .ignore();
    }
    for n in 0..invoices {
        let id = format!("i{n}");
        let account = format!("a{}", n % accounts);
        put(
            &mut pipe,
            "Invoice",
            &id,
            json!({"uid": {"type": "Portal::Invoice", "id": id},
                   "attrs": {"account": {"__entity": {"type": "Portal::Account", "id": account}},
                             "total": n % 1000},
                   "parents": []})
            .to_string(),
        );
        pipe.cmd("ZADD")
            .arg(format!(
                "portcullis:r:Portal::Invoice.account:Portal::Account::\"{account}\""
            ))
            .arg(0)
            .arg(&id)
            .ignore();
        pipe.cmd("ZADD")
            .arg("portcullis:x:Portal::Invoice.account")
            .arg(0)
            .arg(&id)
            .ignore();
        queued += 1;
        if queued == 10_000 {
            pipe.query_async::<()>(&mut conn).await.unwrap();
            pipe = redis::pipe();
            queued = 0;
        }
    }
    if !pipe.is_empty() {
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    eprintln!(
        "loaded {invoices} invoices over {accounts} accounts ({keys} keys) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Every invoice of the search, page by page, and the number of calls.
async fn search_all(server: &TestServer, body: Value) -> (Vec<String>, usize) {
    search_pages(server, "/access/v1/search/resource", body).await
}

/// Every result of a search at `path`, page by page, and the number of calls.
async fn search_pages(server: &TestServer, path: &str, mut body: Value) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    for calls in 1.. {
        let reply = server.post(path, &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        for r in reply.json["results"].as_array().unwrap() {
            ids.push(r["id"].as_str().unwrap().to_string());
        }
        let next = reply.json["page"]["next_token"]
            .as_str()
            .unwrap_or_default();
        if next.is_empty() {
            return (ids, calls);
        }
        body["page"]["token"] = json!(next);
    }
    unreachable!()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let invoices = size("PORTCULLIS_PLAN_BENCH_INVOICES", 1_000_000, 2_000);
    let accounts = size("PORTCULLIS_PLAN_BENCH_ACCOUNTS", 10_000, 20);
    let users = size("PORTCULLIS_PLAN_BENCH_USERS", 100_000, 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    rt.block_on(bulk_load(&redis.url(), invoices, accounts, users));
    rt.block_on(async {
        let mut args = ServeArgs::default();
        args.entity.redis = RedisArgs {
            redis_url: Some(redis.url()),
            ..RedisArgs::default()
        };
        let server = TestServer::start(args).await;
        let planned = json!({
            "subject": {"type": "user", "id": "bea"},
            "action": {"name": "ViewInvoice"},
            "resource": {"type": "invoice"},
            "page": {"limit": 1000},
        });
        let mut enumerated = planned.clone();
        enumerated["subject"]["properties"] = json!({"email": "bea@example.test"});

        // The first search finds nothing cached; the answer both ways must agree.
        let started = Instant::now();
        let (from_plan, plan_calls) = search_all(&server, planned.clone()).await;
        let cold = started.elapsed();
        assert_eq!(from_plan.len(), invoices.div_ceil(accounts), "{from_plan:?}");
        let started = Instant::now();
        let (from_enumeration, enumeration_calls) = search_all(&server, enumerated).await;
        let enumeration = started.elapsed();
        let mut a = from_plan.clone();
        let mut b = from_enumeration.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "the plan's search and enumeration differ");
        // The sets and their ledger were trusted: the plan's search did not page
        // through the type.
        assert!(
            plan_calls < enumeration_calls,
            "{plan_calls} calls from the plan, {enumeration_calls} enumerating"
        );

        let mut times = Vec::new();
        for _ in 0..30 {
            let started = Instant::now();
            let (ids, _) = search_all(&server, planned.clone()).await;
            times.push(started.elapsed());
            assert_eq!(ids, from_plan);
        }
        let plan = median(times.clone());
        let fastest = times.iter().min().copied().unwrap_or_default();
        println!(
            "resource search, bea's {} invoices of {invoices} over {accounts} accounts:",
            from_plan.len()
        );
        println!(
            "  from the plan:  median {:.2} ms (fastest {:.2} ms) over 30 runs, {plan_calls} call(s) each",
            plan.as_secs_f64() * 1e3,
            fastest.as_secs_f64() * 1e3
        );
        println!(
            "  from the plan, first search (nothing cached): {:.2} ms",
            cold.as_secs_f64() * 1e3
        );
        println!(
            "  enumeration:    {:.1} ms, one run, {enumeration_calls} calls",
            enumeration.as_secs_f64() * 1e3
        );
        println!(
            "  enumeration / plan: {:.0}x",
            enumeration.as_secs_f64() / plan.as_secs_f64()
        );

        // Who may view invoice i0 (account a0)? Its members, from a0's member set,
        // against every user; the resource described by a property (as stored) makes
        // the search skip the plan.
        let who = json!({
            "subject": {"type": "user"},
            "action": {"name": "ViewInvoice"},
            "resource": {"type": "invoice", "id": "i0"},
            "page": {"limit": 1000},
        });
        let mut who_enumerated = who.clone();
        who_enumerated["resource"]["properties"] = json!({"total": 0});
        let subject_path = "/access/v1/search/subject";
        let decided = || async {
            common::metric(
                &server.admin_get("/metrics").await.text,
                r#"portcullis_authzen_search_candidates_total{search="subject"}"#,
            )
            .unwrap_or(0.0)
        };
        let before = decided().await;
        let started = Instant::now();
        let (from_plan, _) = search_pages(&server, subject_path, who.clone()).await;
        let cold = started.elapsed();
        let plan_decided = decided().await - before;
        assert_eq!(from_plan.len(), 1 + users.div_ceil(accounts), "{from_plan:?}");
        let before = decided().await;
        let started = Instant::now();
        let (enumerated, enumeration_calls) =
            search_pages(&server, subject_path, who_enumerated).await;
        let enumeration = started.elapsed();
        let enumeration_decided = decided().await - before;
        assert_eq!(from_plan, enumerated, "the plan's subject search and enumeration differ");
        // The member sets and their ledger were trusted: only a0's members were decided.
        assert!(
            plan_decided * 10.0 < enumeration_decided,
            "{plan_decided} subjects decided from the plan, {enumeration_decided} enumerating"
        );
        let mut times = Vec::new();
        for _ in 0..30 {
            let started = Instant::now();
            let (ids, _) = search_pages(&server, subject_path, who.clone()).await;
            times.push(started.elapsed());
            assert_eq!(ids, from_plan);
        }
        let plan = median(times);
        println!(
            "subject search, the {} users who may view i0, of {} users:",
            from_plan.len(),
            users + 1
        );
        println!(
            "  from the plan:  median {:.2} ms over 30 runs (first, nothing cached: {:.2} ms), {plan_decided} subjects decided",
            plan.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e3
        );
        println!(
            "  enumeration:    {:.1} ms, one run, {enumeration_calls} calls, {enumeration_decided} subjects decided",
            enumeration.as_secs_f64() * 1e3
        );
        println!(
            "  enumeration / plan: {:.0}x",
            enumeration.as_secs_f64() / plan.as_secs_f64()
        );
        server.stop().await;
    });
}
