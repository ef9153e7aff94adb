//! Decision latency on the shipped portal model: the decision alone (schema check and
//! Cedar evaluation, in process) and a full HTTP round trip over loopback.
//!
//! Run: `cargo bench --bench decision`. BENCHMARKS.md reports the figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::config::ServeArgs;
use portcullis::decision::{self, Call, RawRequest};
use portcullis::entities::FileSource;
use portcullis::http::App;
use portcullis::model::{compile, condition_literals, lean_entity_data, Sources};

fn raw(principal: &str, action: &str, resource: &str) -> RawRequest {
    RawRequest {
        principal: format!("Portal::{principal}"),
        action: format!("Portal::Action::\"{action}\""),
        resource: format!("Portal::{resource}"),
        context: None,
    }
}

fn in_process(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = App::build(&ServeArgs::default()).unwrap();
    let snapshot = app.model.load();
    let cases = [
        (
            "allow: bookkeeper pays invoice",
            raw("User::\"bea\"", "PayInvoice", "Invoice::\"inv-1001\""),
        ),
        (
            "deny: webmaster pays invoice",
            raw("User::\"walt\"", "PayInvoice", "Invoice::\"inv-1001\""),
        ),
        (
            "deny: cross-account",
            raw("User::\"bea\"", "ViewInvoice", "Invoice::\"inv-9001\""),
        ),
        (
            "allow: contact email",
            raw(
                "Contact::\"carl\"",
                "ReceiveEmail",
                "EmailMessage::\"msg-acme-invoice\"",
            ),
        ),
    ];
    let mut group = c.benchmark_group("decision");
    for (name, req) in &cases {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let checked = decision::check(&snapshot, black_box(req)).unwrap();
                black_box(
                    decision::decide(
                        &snapshot,
                        app.entities.as_ref(),
                        &Call::unrecorded(),
                        &checked,
                        &[],
                    )
                    .await,
                )
            });
        });
    }
    group.finish();
    // The same decisions with the demo data served lean, as the file source serves
    // data above `WHOLE_SET_MAX_BYTES`: each decision parses the entities it reaches
    // from their JSON. The ratio to the group above is that cost, within one run.
    let sources = Sources::embedded();
    let mut lean = compile(&sources).unwrap();
    let file = sources.entities.as_ref().unwrap();
    let mut data = lean_entity_data(file, &lean.schema, &lean.types).unwrap();
    data.literals = condition_literals(&lean.policies, &data);
    assert!(data.served_whole().is_none());
    lean.entities = Some(Arc::new(data));
    let mut group = c.benchmark_group("decision_lean");
    for (name, req) in &cases {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let checked = decision::check(&lean, black_box(req)).unwrap();
                black_box(
                    decision::decide(&lean, &FileSource, &Call::unrecorded(), &checked, &[]).await,
                )
            });
        });
    }
    group.finish();
}

fn over_http(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = Arc::new(App::build(&ServeArgs::default()).unwrap());
    let bind = || {
        rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap()
    };
    let listeners = portcullis::http::Listeners {
        decision: bind(),
        admin: bind(),
    };
    let addr = listeners.decision.local_addr().unwrap();
    rt.spawn(portcullis::http::serve(
        listeners,
        app,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = Bytes::from_static(
        br#"{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\""}"#,
    );
    let url = format!("http://{addr}/v1/is_authorized");
    let mut group = c.benchmark_group("http");
    group.bench_function("allow: bookkeeper pays invoice", |b| {
        b.to_async(&rt).iter(|| async {
            let req = http::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            black_box(resp.into_body().collect().await.unwrap().to_bytes())
        });
    });
    group.finish();
}

criterion_group!(benches, in_process, over_http);
criterion_main!(benches);
