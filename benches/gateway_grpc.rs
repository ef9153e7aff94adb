//! Envoy's check over gRPC against the same check over HTTP (`/ext-authz/...`), on one
//! in-process server: bea pays acme's invoice, named by a trusted header, 32 checks in
//! flight at a time (gRPC multiplexed on one HTTP/2 connection, HTTP on a pool of
//! HTTP/1.1 connections, as Envoy's clusters would usually be set up). Compare the two
//! throughputs of one run. Run: `cargo bench --bench gateway_grpc`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::config::{GatewayArgs, ServeArgs};
use portcullis::http::{App, Listeners};
use tokio::net::TcpListener;

/// Checks in flight at once.
const IN_FLIGHT: u64 = 32;
const PATH: &str = "/accounts/acme/invoices/inv-1001/pay";

async fn start() -> std::net::SocketAddr {
    let args = ServeArgs {
        gateway: GatewayArgs {
            trusted_principal_header: Some("x-portal-user".to_string()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    };
    let app = Arc::new(App::build(&args).unwrap());
    let listeners = Listeners {
        decision: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let addr = listeners.decision.local_addr().unwrap();
    tokio::spawn(portcullis::http::serve(
        listeners,
        app,
        std::future::pending::<()>(),
        Duration::from_secs(1),
    ));
    addr
}

fn check() -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "POST".to_string(),
                    path: PATH.to_string(),
                    host: "portal.example".to_string(),
                    headers: [("x-portal-user".to_string(), "bea".to_string())].into(),
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    }
}

/// Runs `iters` calls of `one`, `IN_FLIGHT` at a time; returns the wall time.
async fn spread<F, Fut>(iters: u64, one: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let n = iters / IN_FLIGHT + u64::from(i < iters % IN_FLIGHT);
            let one = one.clone();
            tokio::spawn(async move {
                for _ in 0..n {
                    one().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn grpc_against_http(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(start());
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let mut group = c.benchmark_group("ext_authz");
    group.throughput(Throughput::Elements(1));
    group.bench_function("grpc_check", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let channel = channel.clone();
            spread(iters, move || {
                let mut client = AuthorizationClient::new(channel.clone());
                async move {
                    let r = client.check(check()).await.unwrap().into_inner();
                    assert_eq!(r.status.unwrap().code, 0);
                }
            })
        })
    });
    group.bench_function("http_check", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let http = http.clone();
            spread(iters, move || {
                let http = http.clone();
                async move {
                    let req = http::Request::post(format!("http://{addr}/ext-authz{PATH}"))
                        .header("x-portal-user", "bea")
                        .body(Empty::new())
                        .unwrap();
                    let r = http.request(req).await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.into_body().collect().await.unwrap();
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, grpc_against_http);
criterion_main!(benches);
