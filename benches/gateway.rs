//! What the gateway adds to a decision: matching a path against the shipped route
//! table, verifying a bearer token, and the whole forward-auth endpoint over HTTP with
//! each identity source. Run: `cargo bench --bench gateway`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::config::ServeArgs;
use portcullis::http::App;

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
use http::{HeaderMap, HeaderValue, Method};
use portcullis::config::GatewayArgs;
use portcullis::gateway::Authenticator;
use portcullis::model::{compile, Sources};

fn route_matching(c: &mut Criterion) {
    let snapshot = compile(&Sources::embedded()).unwrap();
    let table = snapshot.routes.as_ref().unwrap();
    c.bench_function("gateway/route_match_invoice_pay", |b| {
        b.iter(|| {
            table
                .find(
                    black_box(&Method::POST),
                    black_box("/accounts/acme/invoices/inv-1001/pay?from=list"),
                )
                .is_some()
        })
    });
    c.bench_function("gateway/route_unmatched", |b| {
        b.iter(|| {
            table
                .find(black_box(&Method::GET), black_box("/accounts/acme/secrets"))
                .is_none()
        })
    });
}

fn jwt_verification(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = dir.path().join("login.pem");
    std::fs::write(
        &pem,
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let verifier = |cache_entries: u64| {
        Authenticator::from_args(&GatewayArgs {
            jwt_key_file: Some(pem.clone()),
            jwt_issuer: Some("https://login.portal.example".into()),
            jwt_audience: Some("portal".into()),
            jwt_cache_entries: cache_entries,
            ..GatewayArgs::default()
        })
        .unwrap()
    };
    let (auth, cached) = (verifier(0), verifier(10_000));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &serde_json::json!({
            "sub": "bea", "iss": "https://login.portal.example", "aud": "portal",
            "exp": now + 3600, "amr": ["pwd", "otp"],
        }),
        &jsonwebtoken::EncodingKey::from_ed_pem(
            key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    c.bench_function("gateway/jwt_verify_eddsa", |b| {
        b.iter(|| auth.identify(black_box(&headers)).is_ok())
    });
    c.bench_function("gateway/jwt_verify_eddsa_cached", |b| {
        b.iter(|| cached.identify(black_box(&headers)).is_ok())
    });
}

/// A signing key, the PEM file of its public half, and a token of bea's session.
fn ed25519_session(dir: &tempfile::TempDir) -> (std::path::PathBuf, String) {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = dir.path().join("login.pem");
    std::fs::write(
        &pem,
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &serde_json::json!({
            "sub": "bea", "iss": "https://login.portal.example", "aud": "portal",
            "exp": now + 3600, "amr": ["pwd"],
        }),
        &jsonwebtoken::EncodingKey::from_ed_pem(
            key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    (pem, token)
}

/// Serves `args` on loopback ports in `rt`; the decision listener's address.
fn serve(rt: &tokio::runtime::Runtime, args: &ServeArgs) -> std::net::SocketAddr {
    let app = Arc::new(rt.block_on(async { App::build(args) }).unwrap());
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
    addr
}

/// The forward-auth endpoint end to end (HTTP/1.1 over loopback, route, identity,
/// decision): bea views acme's invoice through Traefik's endpoint, identified by a
/// trusted header, by a JWT with the verified-token cache, and by a JWT verified on
/// every request (`--jwt-cache-entries 0`).
fn endpoint(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pem, token) = ed25519_session(&dir);
    let jwt = |cache_entries: u64| ServeArgs {
        gateway: GatewayArgs {
            jwt_key_file: Some(pem.clone()),
            jwt_issuer: Some("https://login.portal.example".into()),
            jwt_audience: Some("portal".into()),
            jwt_cache_entries: cache_entries,
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    };
    let trusted = ServeArgs {
        gateway: GatewayArgs {
            trusted_principal_header: Some("x-auth-user".into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    };
    let bearer = format!("Bearer {token}");
    let cases = [
        (
            "trusted header",
            serve(&rt, &trusted),
            ("x-auth-user", "bea"),
        ),
        (
            "jwt, cached",
            serve(&rt, &jwt(10_000)),
            ("authorization", bearer.as_str()),
        ),
        (
            "jwt, verified every time",
            serve(&rt, &jwt(0)),
            ("authorization", bearer.as_str()),
        ),
    ];
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut group = c.benchmark_group("gateway/endpoint");
    for (name, addr, (header, value)) in &cases {
        let url = format!("http://{addr}/forward-auth/traefik");
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let req = http::Request::get(&url)
                    .header("x-forwarded-method", "GET")
                    .header("x-forwarded-uri", "/accounts/acme/invoices/inv-1001")
                    .header(*header, *value)
                    .body(Empty::new())
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                black_box(resp.into_body().collect().await.unwrap().to_bytes())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, route_matching, jwt_verification, endpoint);
criterion_main!(benches);
