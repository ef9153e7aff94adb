//! Identity for the gateway: verified JWTs (key file, JWKS, HS256 secret) and the
//! trusted header, and the start-up rules that keep them apart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;

use common::jwt::{self, claims, claims_2fa, TestKey, AUDIENCE, ISSUER};
use http::{HeaderMap, HeaderValue};
use portcullis::config::GatewayArgs;
use portcullis::gateway::{Authenticator, Identity, IdentityError};
use serde_json::{json, Value};

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn jwt_args() -> GatewayArgs {
    GatewayArgs {
        jwt_issuer: Some(ISSUER.to_string()),
        jwt_audience: Some(AUDIENCE.to_string()),
        ..GatewayArgs::default()
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn user(id: &str, second_factor: bool) -> Identity {
    Identity {
        principal: format!("Portal::User::\"{id}\"").parse().unwrap(),
        second_factor: Some(second_factor),
    }
}

/// Checks each token against an authenticator: `Ok(identity)` or an error whose
/// message contains the fragment.
fn check(auth: &Authenticator, cases: &[(&str, String, Result<Identity, &str>)]) {
    for (story, token, want) in cases {
        let got = auth.identify(&bearer(token));
        match (want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "{story}"),
            (Err(fragment), Err(IdentityError::Invalid(m))) => {
                assert!(m.contains(fragment), "{story}: `{m}` lacks `{fragment}`")
            }
            _ => panic!("{story}: expected {want:?}, got {got:?}"),
        }
    }
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    c[key] = value;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

#[test]
fn a_token_signed_with_the_configured_key_file_names_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login-1");
    let other = TestKey::ed25519("login-1");
    let args = GatewayArgs {
        jwt_key_file: Some(write(&dir, "key.pem", &key.public_pem)),
        ..jwt_args()
    };
    let auth = Authenticator::from_args(&args).unwrap();
    let now = jwt::now();
    check(
        &auth,
        &[
            (
                "bea's session",
                key.sign(&claims("bea")),
                Ok(user("bea", false)),
            ),
            (
                "bea's session with a one-time password",
                key.sign(&claims_2fa("bea")),
                Ok(user("bea", true)),
            ),
            (
                "a token that expired a moment ago, within the leeway",
                key.sign(&with(claims("bea"), "exp", json!(now - 10))),
                Ok(user("bea", false)),
            ),
            (
                "an expired token",
                key.sign(&with(claims("bea"), "exp", json!(now - 120))),
                Err("expired"),
            ),
            (
                "a token not valid yet",
                key.sign(&with(claims("bea"), "nbf", json!(now + 120))),
                Err("not valid yet"),
            ),
            (
                "a token for another audience",
                key.sign(&with(claims("bea"), "aud", json!("billing"))),
                Err("audience"),
            ),
            (
                "a token from another issuer",
                key.sign(&with(claims("bea"), "iss", json!("https://evil.example"))),
                Err("issuer"),
            ),
            (
                "a token whose `iss` is an array holding the issuer",
                key.sign(&with(
                    claims("bea"),
                    "iss",
                    json!([ISSUER, "https://evil.example"]),
                )),
                Err("`iss` is not a string"),
            ),
            (
                "a token signed by another key",
                other.sign(&claims("bea")),
                Err("signature"),
            ),
            (
                "a token with `alg: none`",
                jwt::unsigned(&claims("bea")),
                Err("malformed token"),
            ),
            (
                "an HS256 token made with the public key as secret",
                jwt::hs256(key.public_pem.as_bytes(), &claims("bea")),
                Err("not accepted"),
            ),
            (
                "a token without `exp`",
                key.sign(&without(claims("bea"), "exp")),
                Err("`exp`"),
            ),
            (
                "a token without `sub`",
                key.sign(&without(claims("bea"), "sub")),
                Err("`sub`"),
            ),
            (
                "a token whose `sub` is not a string",
                key.sign(&with(claims("bea"), "sub", json!(42))),
                Err("`sub`"),
            ),
            (
                "a token with a tampered payload",
                {
                    let t = key.sign(&claims("bea"));
                    let forged = key.sign(&claims("olivia"));
                    let mut parts: Vec<&str> = t.split('.').collect();
                    parts[1] = forged.split('.').nth(1).unwrap();
                    let sig = t.split('.').nth(2).unwrap();
                    parts[2] = sig;
                    parts.join(".")
                },
                Err("signature"),
            ),
        ],
    );
}

#[test]
fn rsa_and_p256_key_files_verify_their_own_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    for key in [TestKey::rsa("r"), TestKey::p256("e")] {
        let args = GatewayArgs {
            jwt_key_file: Some(write(&dir, "key.pem", &key.public_pem)),
            ..jwt_args()
        };
        let auth = Authenticator::from_args(&args).unwrap();
        check(
            &auth,
            &[(
                "a session signed with the configured key",
                key.sign(&claims("walt")),
                Ok(user("walt", false)),
            )],
        );
    }
}

#[test]
fn a_jwks_chooses_the_key_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let ec = TestKey::p256("ec-2026");
    let rsa = TestKey::rsa("rsa-2026");
    let ed = TestKey::ed25519("ed-2026");
    let stranger = TestKey::p256("retired");
    let args = GatewayArgs {
        jwt_jwks_file: Some(write(&dir, "jwks.json", &jwt::jwks(&[&ec, &rsa, &ed]))),
        ..jwt_args()
    };
    let auth = Authenticator::from_args(&args).unwrap();
    let impostor = TestKey::p256("ec-2026");
    check(
        &auth,
        &[
            (
                "an ES256 session",
                ec.sign(&claims("dev")),
                Ok(user("dev", false)),
            ),
            (
                "an RS256 session",
                rsa.sign(&claims("dev")),
                Ok(user("dev", false)),
            ),
            (
                "an EdDSA session",
                ed.sign(&claims_2fa("dev")),
                Ok(user("dev", true)),
            ),
            (
                "a token naming an unknown key",
                stranger.sign(&claims("dev")),
                Err("unknown key id `retired`"),
            ),
            (
                "a token naming no key",
                ec.sign_without_kid(&claims("dev")),
                Err("names no key"),
            ),
            (
                "a token naming a known key but signed by another",
                impostor.sign(&claims("dev")),
                Err("signature"),
            ),
            (
                "a token with `alg: none`",
                jwt::unsigned(&claims("dev")),
                Err("malformed token"),
            ),
        ],
    );
}

#[test]
fn hs256_is_accepted_only_with_a_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a shared secret of at least thirty-two bytes";
    let args = GatewayArgs {
        jwt_hs256_secret_file: Some(write(&dir, "secret", secret)),
        ..jwt_args()
    };
    let auth = Authenticator::from_args(&args).unwrap();
    let rsa = TestKey::ed25519("k");
    check(
        &auth,
        &[
            (
                "an HS256 session",
                jwt::hs256(secret.as_bytes(), &claims("gina")),
                Ok(user("gina", false)),
            ),
            (
                "an HS256 token with another secret",
                jwt::hs256(b"another secret of thirty-two bytes!!", &claims("gina")),
                Err("signature"),
            ),
            (
                "an EdDSA token",
                rsa.sign(&claims("gina")),
                Err("not accepted"),
            ),
        ],
    );
    let short = GatewayArgs {
        jwt_hs256_secret_file: Some(write(&dir, "short", "tiny")),
        ..jwt_args()
    };
    assert!(Authenticator::from_args(&short)
        .unwrap_err()
        .contains("32 bytes"));
}

#[test]
fn requests_without_a_bearer_token_have_no_identity() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("k");
    let args = GatewayArgs {
        jwt_key_file: Some(write(&dir, "key.pem", &key.public_pem)),
        ..jwt_args()
    };
    let auth = Authenticator::from_args(&args).unwrap();
    assert!(matches!(
        auth.identify(&HeaderMap::new()),
        Err(IdentityError::Missing(_))
    ));
    let mut basic = HeaderMap::new();
    basic.insert("authorization", HeaderValue::from_static("Basic YmVhOnB3"));
    assert!(matches!(
        auth.identify(&basic),
        Err(IdentityError::Invalid(_))
    ));
}

#[test]
fn the_trusted_header_names_the_principal_when_enabled() {
    let args = GatewayArgs {
        trusted_principal_header: Some("X-Auth-User".to_string()),
        trusted_second_factor_header: Some("X-Auth-2FA".to_string()),
        ..GatewayArgs::default()
    };
    let auth = Authenticator::from_args(&args).unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-auth-user", HeaderValue::from_static("bea"));
    h.insert("x-auth-2fa", HeaderValue::from_static("true"));
    assert_eq!(auth.identify(&h).unwrap(), user("bea", true));
    // Sent twice, the second factor is refused rather than read from the first copy.
    h.append("x-auth-2fa", HeaderValue::from_static("false"));
    match auth.identify(&h) {
        Err(IdentityError::Invalid(m)) => assert!(m.contains("x-auth-2fa"), "{m}"),
        other => panic!("a repeated second-factor header gave {other:?}"),
    }
    h.remove("x-auth-2fa");
    assert_eq!(auth.identify(&h).unwrap(), user("bea", false));
    h.append("x-auth-user", HeaderValue::from_static("olivia"));
    assert!(matches!(auth.identify(&h), Err(IdentityError::Invalid(_))));
    assert!(matches!(
        auth.identify(&HeaderMap::new()),
        Err(IdentityError::Missing(_))
    ));
}

#[test]
fn ambiguous_identity_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("k");
    let pem = write(&dir, "key.pem", &key.public_pem);
    let jwks = write(&dir, "jwks.json", &jwt::jwks(&[&key]));
    let cases: Vec<(&str, GatewayArgs, &str)> = vec![
        (
            "a JWT key and a trusted header",
            GatewayArgs {
                jwt_key_file: Some(pem.clone()),
                trusted_principal_header: Some("X-Auth-User".into()),
                ..jwt_args()
            },
            "choose one",
        ),
        (
            "a key file and a JWKS",
            GatewayArgs {
                jwt_key_file: Some(pem.clone()),
                jwt_jwks_file: Some(jwks),
                ..jwt_args()
            },
            "exactly one",
        ),
        (
            "a key without an issuer",
            GatewayArgs {
                jwt_key_file: Some(pem.clone()),
                jwt_issuer: None,
                ..jwt_args()
            },
            "--jwt-issuer",
        ),
        (
            "a key file that is no key",
            GatewayArgs {
                jwt_key_file: Some(write(&dir, "junk.pem", "hello")),
                ..jwt_args()
            },
            "not a PEM public key",
        ),
        (
            "a principal template naming no claim",
            GatewayArgs {
                jwt_key_file: Some(pem),
                jwt_principal: "Portal::User::\"bea\"".into(),
                ..jwt_args()
            },
            "must name a claim",
        ),
    ];
    for (story, args, fragment) in cases {
        let err = Authenticator::from_args(&args).unwrap_err();
        assert!(err.contains(fragment), "{story}: {err}");
    }
}
