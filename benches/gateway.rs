//! What the gateway adds to a decision: matching a path against the shipped route
//! table, and verifying a bearer token. Run: `cargo bench --bench gateway`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

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
    let auth = Authenticator::from_args(&GatewayArgs {
        jwt_key_file: Some(pem),
        jwt_issuer: Some("https://login.portal.example".into()),
        jwt_audience: Some("portal".into()),
        ..GatewayArgs::default()
    })
    .unwrap();
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
}

criterion_group!(benches, route_matching, jwt_verification);
criterion_main!(benches);
