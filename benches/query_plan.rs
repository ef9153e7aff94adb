//! Query-plan latency on the shipped portal model and its demo data: partial
//! evaluation, the residuals' translation and the per-account cases, in process.
//!
//! Run: `cargo bench --bench query_plan`. Target: under 1 ms per plan (release).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::model::{compile, Sources};
use portcullis::plan::{plan, PlanKind, PlanRequest};

fn portal_plans(c: &mut Criterion) {
    let snapshot = compile(&Sources::embedded()).unwrap();
    let entities = snapshot
        .entities
        .as_ref()
        .unwrap()
        .whole(&snapshot.schema)
        .unwrap()
        .as_ref()
        .clone();
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
            plan(&snapshot, &entities, &request).unwrap().kind,
            kind,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(plan(&snapshot, &entities, black_box(&request)).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, portal_plans);
criterion_main!(benches);
