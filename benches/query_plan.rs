//! Query-plan latency on the shipped portal model and its demo data: partial
//! evaluation, the residuals' translation and the per-account cases, in process; and
//! the symmetric plan of subject search ("who may view inv-1001 / q-4001?"), on the
//! demo model and with 10,000 more grant links (template links of
//! `resource-grant-view`, one user and one quote each), which a plan must not pay
//! for one by one.
//!
//! Run: `cargo bench --bench query_plan`. Target: under 1 ms per plan (release).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use std::hint::black_box;
use std::time::Duration;

use cedar_policy::{EntityTypeName, EntityUid};
use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::entities::FileSource;
use portcullis::model::{compile, Snapshot, SourceFile, Sources};
use portcullis::plan::subject::{subjects, Subjects};
use portcullis::plan::{plan, snapshot_data, PlanKind, PlanRequest};
use serde_json::json;

fn portal_plans(c: &mut Criterion) {
    let snapshot = compile(&Sources::embedded()).unwrap();
    let data = snapshot_data(&snapshot).unwrap();
    let cases = [
        (
            "conditional: bea views invoices",
            "bea",
            PlanKind::Conditional,
        ),
        (
            "conditional: owner olivia views invoices",
            "olivia",
            PlanKind::Conditional,
        ),
        (
            "always_deny: walt views invoices",
            "walt",
            PlanKind::AlwaysDeny,
        ),
    ];
    let mut group = c.benchmark_group("query_plan");
    group.measurement_time(Duration::from_secs(5));
    for (name, user, kind) in cases {
        let request = PlanRequest::parse(
            &format!("Portal::User::\"{user}\""),
            "Portal::Action::\"ViewInvoice\"",
            "Portal::Invoice",
            None,
        )
        .unwrap();
        assert_eq!(
            plan(&snapshot, &data, &request).unwrap().kind,
            kind,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(plan(&snapshot, &data, black_box(&request)).unwrap()))
        });
    }
    group.finish();
}

/// The demo model with `n` more grant links, `g{i}` letting user `u{i}` view quote
/// `q{i}`.
fn with_grants(n: usize) -> Snapshot {
    let mut sources = Sources::embedded();
    let mut links: Vec<serde_json::Value> =
        serde_json::from_str(&sources.links.as_ref().expect("the portal has links").text).unwrap();
    for i in 0..n {
        links.push(json!({
            "template_id": "resource-grant-view",
            "link_id": format!("g{i}"),
            "args": {"?principal": format!("Portal::User::\"u{i}\""),
                     "?resource": format!("Portal::Quote::\"q{i}\"")},
        }));
    }
    sources.links = Some(SourceFile::new(
        "links.json",
        serde_json::to_string(&links).unwrap(),
    ));
    compile(&sources).unwrap()
}

fn subject_plans(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let user: EntityTypeName = "Portal::User".parse().unwrap();
    let mut group = c.benchmark_group("subject_plan");
    group.measurement_time(Duration::from_secs(5));
    for (name, snapshot) in [
        ("demo model", compile(&Sources::embedded()).unwrap()),
        ("demo model + 10,000 grant links", with_grants(10_000)),
    ] {
        for (action, resource) in [
            ("ViewInvoice", r#"Portal::Invoice::"inv-1001""#),
            ("ViewQuote", r#"Portal::Quote::"q-4001""#),
        ] {
            let action: EntityUid = format!("Portal::Action::\"{action}\"").parse().unwrap();
            let resource: EntityUid = resource.parse().unwrap();
            let ask = || {
                rt.block_on(subjects(
                    &snapshot,
                    &FileSource,
                    &user,
                    &action,
                    &resource,
                    &json!({}),
                ))
                .unwrap()
            };
            assert!(matches!(ask(), Subjects::Only(_)), "{name} {resource}");
            group.bench_function(format!("{name}: who may view {resource}"), |b| {
                b.iter(|| black_box(ask()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, portal_plans, subject_plans);
criterion_main!(benches);
