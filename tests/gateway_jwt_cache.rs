//! The verified-token cache: a token seen before skips the signature check, but is
//! never accepted past its `exp` (the flush on a key-set change is shown with a real
//! identity provider in tests/gateway_jwks.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::jwt::{claims, TestKey, AUDIENCE, ISSUER};
use common::wait_until;
use http::{HeaderMap, HeaderValue};
use portcullis::config::GatewayArgs;
use portcullis::gateway::{Authenticator, IdentityError};
use serde_json::json;

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// A verifier of `key` with no clock skew allowed, so `exp` is exact.
fn verifier(dir: &tempfile::TempDir, key: &TestKey, cache_entries: u64) -> Authenticator {
    let pem = dir.path().join("login.pem");
    std::fs::write(&pem, &key.public_pem).unwrap();
    Authenticator::from_args(&GatewayArgs {
        jwt_key_file: Some(pem),
        jwt_issuer: Some(ISSUER.into()),
        jwt_audience: Some(AUDIENCE.into()),
        jwt_leeway_secs: 0,
        jwt_cache_entries: cache_entries,
        ..GatewayArgs::default()
    })
    .unwrap()
}

#[test]
fn a_cached_token_stops_being_accepted_at_its_exp() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    for entries in [10_000, 1, 0] {
        let auth = verifier(&dir, &key, entries);
        let mut c = claims("bea");
        c["exp"] = json!(common::jwt::now() + 2);
        let token = key.sign(&c);
        // Verified, and (with a cache) remembered.
        let first = auth.identify(&bearer(&token)).unwrap();
        assert_eq!(first.principal.to_string(), r#"Portal::User::"bea""#);
        assert_eq!(auth.identify(&bearer(&token)).unwrap(), first);
        let refused = wait_until(
            &format!("the token expires (cache of {entries})"),
            Duration::from_secs(20),
            || auth.identify(&bearer(&token)).err(),
        );
        assert_eq!(
            refused,
            IdentityError::Invalid("token has expired".to_string()),
            "cache of {entries}"
        );
    }
}

#[test]
fn a_token_that_failed_is_not_remembered_as_good_and_a_good_one_does_not_vouch_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let auth = verifier(&dir, &key, 10_000);
    let good = key.sign(&claims("bea"));
    assert!(auth.identify(&bearer(&good)).is_ok());
    // The same claims signed by another key: a different token, verified on its own.
    let forged = TestKey::ed25519("login").sign(&claims("bea"));
    assert!(auth.identify(&bearer(&forged)).is_err());
    assert!(auth.identify(&bearer(&forged)).is_err());
    // A token whose signature was tampered with after the good one was cached.
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(auth.identify(&bearer(&tampered)).is_err());
    assert!(auth.identify(&bearer(&good)).is_ok());
}
