//! Decision latency over the Redis entity store, against a real redis-server this
//! bench starts on a free loopback port:
//!
//! - `redis_warm/<n>`: a decision whose entities are cached, with `n` entities in Redis;
//! - `redis_cold/<n>`: the same decision with the cache cleared first (Redis round
//!   trips, one per fetch level);
//! - revocation latency: from the start of `portcullis entities put` (removing a
//!   user's `invoices` permission) to the first Deny, printed as p50/p99.
//!
//! Sizes come from `PORTCULLIS_BENCH_SIZES` (default `1000,100000`);
//! `scripts/bench-redis.sh` runs 1k, 100k and 1M and prints the ratios.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use criterion::{BenchmarkId, Criterion};
use portcullis::config::ModelArgs;
use portcullis::config::{EntitiesArgs, EntitiesCommand, RedisArgs};
use portcullis::decision::{self, Call, CheckedRequest, Decision, RawRequest};
use portcullis::entities::redis::cli::Writer;
use portcullis::entities::{EntitySource, RedisSource};
use portcullis::model::{EntityFile, Snapshot as PolicySnapshot};

/// Ten entities per group: one account, four users (the last owns the account), five
/// invoices.
const GROUP: usize = 10;
/// Requests the warm bench cycles through, spread over the key space.
const SAMPLES: usize = 64;

fn account(g: usize) -> String {
    format!(
        r#"{{"uid":{{"type":"Portal::Account","id":"a{g}"}},"attrs":{{"id":"a{g}","name":"Account {g}","owner":{{"__entity":{{"type":"Portal::User","id":"u{g}-3"}}}}}},"parents":[]}}"#
    )
}

fn user(g: usize, k: usize, permissions: &str) -> String {
    format!(
        r#"{{"uid":{{"type":"Portal::User","id":"u{g}-{k}"}},"attrs":{{"email":"u{g}-{k}@example.test","disabled":false,"twoFactorEnrolled":false}},"parents":[{{"type":"Portal::Account","id":"a{g}"}}],"tags":{{"a{g}":{{"permissions":[{permissions}],"emailCategories":["invoice"]}}}}}}"#
    )
}

fn invoice(g: usize, k: usize) -> String {
    format!(
        r#"{{"uid":{{"type":"Portal::Invoice","id":"i{g}-{k}"}},"attrs":{{"account":{{"__entity":{{"type":"Portal::Account","id":"a{g}"}}}},"total":{}}},"parents":[]}}"#,
        100 + k
    )
}

/// Loads `n` entities with pipelines of 20,000 commands: the fast path for benches,
/// bypassing the CLI's schema check (the data is generated to conform).
async fn bulk_load(url: &str, n: usize) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let groups = n / GROUP;
    let started = Instant::now();
    for chunk in (0..groups).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &g in chunk {
            let mut put = |ty: &str, id: String, json: String| {
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
            put("Account", format!("a{g}"), account(g));
            for k in 0..4 {
                put(
                    "User",
                    format!("u{g}-{k}"),
                    user(g, k, r#""invoices","tickets""#),
                );
            }
            for k in 0..5 {
                put("Invoice", format!("i{g}-{k}"), invoice(g, k));
            }
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    eprintln!(
        "loaded {n} entities ({size} keys) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn request(snapshot: &PolicySnapshot, g: usize) -> CheckedRequest {
    decision::check(
        snapshot,
        &RawRequest {
            principal: format!("Portal::User::\"u{g}-0\""),
            action: "Portal::Action::\"ViewInvoice\"".to_string(),
            resource: format!("Portal::Invoice::\"i{g}-0\""),
            context: None,
        },
    )
    .unwrap()
}

fn redis_args(url: &str) -> RedisArgs {
    RedisArgs {
        redis_url: Some(url.to_string()),
        ..RedisArgs::default()
    }
}

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
/// it, and then one small size and a few revocations make it a quick smoke test.
fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn sizes() -> Vec<usize> {
    if !bench_mode() {
        return vec![1000];
    }
    std::env::var("PORTCULLIS_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,100000".to_string())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

/// One decision through the server's pipeline, unrecorded.
async fn decide(
    snapshot: &PolicySnapshot,
    source: &Arc<dyn EntitySource>,
    checked: &CheckedRequest,
) -> Decision {
    decision::decide(snapshot, source.as_ref(), &Call::unrecorded(), checked, &[])
        .await
        .decision()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Revokes and re-grants `u0-0`'s `invoices` permission `rounds` times; returns the
/// time from the start of each revoking write to the first Deny.
async fn revocation_latencies(
    url: &str,
    source: &Arc<dyn EntitySource>,
    snapshot: &PolicySnapshot,
    rounds: usize,
) -> Vec<Duration> {
    let checked = request(snapshot, 0);
    let args = EntitiesArgs {
        model: ModelArgs::default(),
        redis: redis_args(url),
        ack_timeout_ms: 2000,
        command: EntitiesCommand::Get { uid: String::new() },
    };
    let mut writer = Writer::open(&args).await.unwrap();
    let user_json = |permissions: &str| -> serde_json::Value {
        serde_json::from_str(&format!("[{}]", user(0, 0, permissions))).unwrap()
    };
    let (revoke, grant) = (
        user_json(r#""tickets""#),
        user_json(r#""invoices","tickets""#),
    );
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        writer.write(grant.clone(), "grant").await.unwrap();
        // Warm: the grant is cached before the revocation starts.
        while !decide(snapshot, source, &checked).await.allowed {}
        let revoke = revoke.clone();
        let started = Instant::now();
        writer.write(revoke, "revoke").await.unwrap();
        loop {
            if !decide(snapshot, source, &checked).await.allowed {
                break;
            }
        }
        out.push(started.elapsed());
    }
    out
}

fn main() {
    // Test runners that list tests first (nextest) find none here: this binary holds
    // benchmarks, and running them under a test runner is the smoke test above.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let url = redis.url();
    let snapshot = portcullis::model::load(&ModelArgs::default(), &EntityFile::Shipped).unwrap();

    // Baseline: the same kind of decision over the shipped demo data held in memory
    // by the file source (no cache, no Redis), to show what the decision itself costs.
    {
        let file: Arc<dyn EntitySource> = Arc::new(portcullis::entities::FileSource);
        let demo = decision::check(
            &snapshot,
            &RawRequest {
                principal: "Portal::User::\"bea\"".to_string(),
                action: "Portal::Action::\"ViewInvoice\"".to_string(),
                resource: "Portal::Invoice::\"inv-1001\"".to_string(),
                context: None,
            },
        )
        .unwrap();
        let mut group = criterion.benchmark_group("file_source");
        group.bench_function("demo", |b| {
            b.to_async(&rt).iter(|| {
                let (snapshot, file, demo) = (&snapshot, &file, &demo);
                async move { decide(snapshot, file, demo).await }
            })
        });
        group.finish();
    }

    for n in sizes() {
        rt.block_on(bulk_load(&url, n));
        let redis_source = rt.block_on(async {
            let s = RedisSource::open(&redis_args(&url), None).unwrap();
            s.wait_connected(Duration::from_secs(5)).await;
            Arc::new(s)
        });
        let source: Arc<dyn EntitySource> = redis_source.clone();
        let groups = n / GROUP;
        let requests: Vec<CheckedRequest> = (0..SAMPLES)
            .map(|k| request(&snapshot, k * groups / SAMPLES))
            .collect();
        rt.block_on(async {
            for r in &requests {
                assert!(decide(&snapshot, &source, r).await.allowed);
            }
        });

        let mut warm = criterion.benchmark_group("redis_warm");
        let mut i = 0usize;
        warm.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % SAMPLES;
                let r = &requests[i];
                let (snapshot, source) = (&snapshot, &source);
                async move { decide(snapshot, source, r).await }
            })
        });
        warm.finish();

        let mut cold = criterion.benchmark_group("redis_cold");
        cold.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (snapshot, source, redis_source, requests) =
                    (&snapshot, &source, &redis_source, &requests);
                async move {
                    let mut total = Duration::ZERO;
                    for k in 0..iters as usize {
                        redis_source.clear_cache();
                        let started = Instant::now();
                        let d = decide(snapshot, source, &requests[k % SAMPLES]).await;
                        total += started.elapsed();
                        assert!(d.allowed);
                    }
                    total
                }
            })
        });
        cold.finish();

        if n == sizes()[0] {
            let rounds = if bench_mode() { 200 } else { 3 };
            let mut samples = rt.block_on(revocation_latencies(&url, &source, &snapshot, rounds));
            samples.sort();
            println!(
                "revocation write->first Deny over {} runs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                samples.len(),
                percentile(&samples, 0.50).as_secs_f64() * 1e3,
                percentile(&samples, 0.99).as_secs_f64() * 1e3,
                samples.last().unwrap().as_secs_f64() * 1e3,
            );
        }
        drop(source);
        drop(redis_source);
    }
    criterion.final_summary();
}
