#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // bench code
//! Decisions over a growing number of sharing grants: indexed vs full evaluation,
//! and the index's build time.
//!
//! The workload is the document-sharing one of issue 14: 1,000 users in 10 groups,
//! 10,000 documents in 100 folders, 5 base policies, and N grants of the form
//! `permit (principal == User::"uI", action == Action::"view", resource == Doc::"dJ");`
//! (or the same grants as links of one template). Each iteration decides the next of
//! 256 fixed requests: half ask for a granted (user, document) pair, half for a
//! random one.
//!
//! Run with `cargo bench --bench policy_index`; `POLICY_INDEX_SIZES=10,1000` limits
//! the sizes.

use std::collections::HashMap;
use std::hint::black_box;
use std::str::FromStr;
use std::time::Duration;

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, Policy, PolicyId, PolicySet, Request, SlotId,
    Template,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis::model::index::{PolicyIndex, PolicyIndexOptions};

const USERS: usize = 1_000;
const GROUPS: usize = 10;
const DOCS: usize = 10_000;
const FOLDERS: usize = 100;
const REQUESTS: usize = 256;

const BASE: &str = r#"
permit (principal, action == Action::"view", resource) when { resource.public };
permit (principal, action, resource is Doc) when { resource.owner == principal };
permit (principal in Group::"g0", action in [Action::"view", Action::"comment"], resource in Folder::"f0");
forbid (principal, action, resource) when { principal.suspended };
permit (principal is User, action == Action::"comment", resource is Doc) when { resource.public };
"#;

const GRANT_TEMPLATE: &str =
    r#"permit (principal == ?principal, action == Action::"view", resource == ?resource);"#;

/// A fixed-seed generator (SplitMix64), so that every run measures the same data.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_str(&format!("{ty}::\"{id}\"")).unwrap()
}

fn entities() -> Entities {
    let mut rng = Rng(7);
    let mut out = Vec::new();
    for g in 0..GROUPS {
        out.push(serde_json::json!({"uid": {"type": "Group", "id": format!("g{g}")}, "attrs": {}, "parents": []}));
    }
    for u in 0..USERS {
        out.push(serde_json::json!({
            "uid": {"type": "User", "id": format!("u{u}")},
            "attrs": {"suspended": u % 100 == 99},
            "parents": [{"type": "Group", "id": format!("g{}", u % GROUPS)}],
        }));
    }
    for f in 0..FOLDERS {
        out.push(serde_json::json!({"uid": {"type": "Folder", "id": format!("f{f}")}, "attrs": {}, "parents": []}));
    }
    for d in 0..DOCS {
        out.push(serde_json::json!({
            "uid": {"type": "Doc", "id": format!("d{d}")},
            "attrs": {
                "owner": {"__entity": {"type": "User", "id": format!("u{}", rng.below(USERS))}},
                "public": d % 50 == 0,
            },
            "parents": [{"type": "Folder", "id": format!("f{}", d % FOLDERS)}],
        }));
    }
    for a in ["view", "comment", "edit"] {
        out.push(
            serde_json::json!({"uid": {"type": "Action", "id": a}, "attrs": {}, "parents": []}),
        );
    }
    Entities::from_json_value(serde_json::Value::Array(out), None).unwrap()
}

/// The (user, document) pairs of `n` grants.
fn grants(n: usize) -> Vec<(usize, usize)> {
    let mut rng = Rng(14);
    (0..n)
        .map(|_| (rng.below(USERS), rng.below(DOCS)))
        .collect()
}

/// The base policies plus `n` grants, as static policies or as links.
fn policy_set(n: usize, links: bool) -> PolicySet {
    let mut set = PolicySet::from_str(BASE).unwrap();
    if links {
        let t = Template::parse(Some(PolicyId::new("grant")), GRANT_TEMPLATE).unwrap();
        set.add_template(t).unwrap();
    }
    for (k, (u, d)) in grants(n).into_iter().enumerate() {
        let id = PolicyId::new(format!("grant{k}"));
        if links {
            let values = HashMap::from([
                (SlotId::principal(), uid("User", &format!("u{u}"))),
                (SlotId::resource(), uid("Doc", &format!("d{d}"))),
            ]);
            set.link(PolicyId::new("grant"), id, values).unwrap();
        } else {
            let text = format!(
                r#"permit (principal == User::"u{u}", action == Action::"view", resource == Doc::"d{d}");"#
            );
            set.add(Policy::parse(Some(id), text).unwrap()).unwrap();
        }
    }
    set
}

fn requests(n: usize) -> Vec<Request> {
    let granted = grants(n);
    let mut rng = Rng(99);
    (0..REQUESTS)
        .map(|i| {
            let (u, d) = if i % 2 == 0 && !granted.is_empty() {
                granted[rng.below(granted.len())]
            } else {
                (rng.below(USERS), rng.below(DOCS))
            };
            let action = if i % 8 == 1 { "comment" } else { "view" };
            Request::new(
                uid("User", &format!("u{u}")),
                uid("Action", action),
                uid("Doc", &format!("d{d}")),
                Context::empty(),
                None,
            )
            .unwrap()
        })
        .collect()
}

fn sizes() -> Vec<usize> {
    std::env::var("POLICY_INDEX_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 1_000, 10_000, 100_000])
}

fn decisions(c: &mut Criterion) {
    let entities = entities();
    let authorizer = Authorizer::new();
    for links in [false, true] {
        let kind = if links { "links" } else { "static" };
        let mut group = c.benchmark_group(format!("decision/{kind}"));
        group.sample_size(20);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        for n in sizes() {
            let set = policy_set(n, links);
            let reqs = requests(n);
            // Full evaluation is slow at 100k grants: check the first requests only.
            let expected: Vec<_> = reqs
                .iter()
                .take(32)
                .map(|r| authorizer.is_authorized(r, &set, &entities).decision())
                .collect();
            let variants = [
                ("indexed", PolicyIndexOptions::default()),
                (
                    "indexed_cedar",
                    PolicyIndexOptions {
                        compiled: false,
                        ..PolicyIndexOptions::default()
                    },
                ),
                (
                    "indexed_cedar_nocache",
                    PolicyIndexOptions {
                        cache_capacity: 0,
                        compiled: false,
                    },
                ),
            ];
            for (name, options) in variants {
                let index = PolicyIndex::build_with_options(&set, options).unwrap();
                // The indexed and the full decision agree on every request measured.
                for (r, decision) in reqs.iter().zip(&expected) {
                    assert_eq!(index.is_authorized(r, &entities).decision(), *decision);
                }
                let mut i = 0;
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                    b.iter(|| {
                        i = (i + 1) % reqs.len();
                        black_box(index.is_authorized(&reqs[i], &entities))
                    })
                });
            }
            let mut i = 0;
            group.bench_with_input(BenchmarkId::new("full", n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    black_box(authorizer.is_authorized(&reqs[i], &set, &entities))
                })
            });
        }
        group.finish();
    }
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for links in [false, true] {
        let kind = if links { "links" } else { "static" };
        for n in sizes() {
            let set = policy_set(n, links);
            group.bench_with_input(BenchmarkId::new(kind, n), &n, |b, _| {
                b.iter(|| black_box(PolicyIndex::build(&set).unwrap()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decisions, build);
criterion_main!(benches);
