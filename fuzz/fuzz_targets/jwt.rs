//! JWT identity: the `Authorization` header read and the token verified by an HS256
//! verifier (issuer `https://login.portal.example`, audience `portal`, the default
//! principal template `Portal::User::"{sub}"`), and JWKS files read at start-up.
//!
//! Mode `0`: the input is the `Authorization` header's value. Mode `1`: the input is a
//! token header and claims (JSON, separated by a `--` line) that the harness signs
//! with the verifier's secret, so the claims checks are reached. Mode `2`: the input is
//! a JWKS file.
//!
//! Holds: no panic; a signed token identifies only with the configured issuer and
//! audience, and its principal is its `sub` claim.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use portcullis::config::GatewayArgs;
use portcullis::gateway::Authenticator;
use portcullis_fuzz::{mode, parts};
use serde_json::Value;

const ISSUER: &str = "https://login.portal.example";
const AUDIENCE: &str = "portal";
const SECRET: &[u8] = b"portcullis-fuzz-hs256-secret-0123456789";

/// A directory of this process for the key files.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("portcullis-fuzz-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a temporary directory");
        d
    })
}

fn args() -> GatewayArgs {
    GatewayArgs {
        jwt_issuer: Some(ISSUER.to_string()),
        jwt_audience: Some(AUDIENCE.to_string()),
        ..GatewayArgs::default()
    }
}

fn verifier() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let secret = dir().join("hs256.secret");
        std::fs::write(&secret, SECRET).expect("the secret is written");
        Authenticator::from_args(&GatewayArgs {
            jwt_hs256_secret_file: Some(secret),
            ..args()
        })
        .expect("the HS256 verifier builds")
    })
}

/// The principal's id an `Authorization` value identifies, if any.
fn identify(authorization: &[u8]) -> Option<String> {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_bytes(authorization).ok()?);
    let identity = verifier().identify(&headers).ok()?;
    Some(identity.principal.id().unescaped().to_string())
}

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = mode(data, 3);
    match mode {
        0 => {
            identify(rest);
        }
        1 => {
            let p = parts(rest, 2);
            let Ok(header) = serde_json::from_slice::<Header>(p[0]) else {
                return;
            };
            let Ok(claims) = serde_json::from_slice::<Value>(p[1]) else {
                return;
            };
            let Ok(token) =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET))
            else {
                return;
            };
            // Signed with the right key: an identity means every claim check passed.
            if let Some(principal) = identify(format!("Bearer {token}").as_bytes()) {
                accepted(&claims, &principal);
            }
        }
        _ => {
            let file = dir().join("jwks.json");
            std::fs::write(&file, rest).expect("the JWKS file is written");
            if let Ok(auth) = Authenticator::from_args(&GatewayArgs {
                jwt_jwks_file: Some(file),
                ..args()
            }) {
                assert_eq!(auth.kind(), "jwt");
            }
        }
    }
});

/// What an accepted token's claims must say.
fn accepted(claims: &Value, principal: &str) {
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
    let aud = claims.get("aud");
    assert!(
        aud.and_then(Value::as_str) == Some(AUDIENCE)
            || aud
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(AUDIENCE))),
        "accepted a token for {aud:?}"
    );
    assert_eq!(claims.get("sub").and_then(Value::as_str), Some(principal));
}
