//! Signing keys and tokens for the gateway tests: real keys generated per test run.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;
use serde_json::{json, Value};

pub const ISSUER: &str = "https://login.portal.example";
pub const AUDIENCE: &str = "portal";

/// A signing key with its public half in PEM and its key id.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub private_pem: String,
    pub public_pem: String,
    /// The raw public key, for keys whose JWK is written by hand (Ed25519).
    raw_public: Vec<u8>,
}

impl TestKey {
    pub fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
        let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
        Self {
            alg: Algorithm::EdDSA,
            kid: kid.to_string(),
            private_pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public_pem: key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
            raw_public: key.verifying_key().to_bytes().to_vec(),
        }
    }

    pub fn p256(kid: &str) -> Self {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = p256::SecretKey::random(&mut OsRng);
        Self {
            alg: Algorithm::ES256,
            kid: kid.to_string(),
            private_pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public_pem: key.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
            raw_public: Vec::new(),
        }
    }

    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        Self {
            alg: Algorithm::RS256,
            kid: kid.to_string(),
            private_pem: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public_pem: rsa::RsaPublicKey::from(&key)
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
            raw_public: Vec::new(),
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        let pem = self.private_pem.as_bytes();
        match self.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem).unwrap(),
        }
    }

    /// A token with these claims, naming this key's id.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }

    /// A token that names no key id.
    pub fn sign_without_kid(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.encoding_key()).unwrap()
    }

    /// The public JWK of this key, as an identity provider publishes it.
    pub fn jwk(&self) -> Value {
        if self.alg == Algorithm::EdDSA {
            return json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                "kid": self.kid, "x": b64url(&self.raw_public),
            });
        }
        let mut jwk: Jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_value(jwk).unwrap()
    }
}

/// A JWKS document holding these keys' public halves.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a session of `sub`, valid for the next ten minutes.
pub fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 600,
        "amr": ["pwd"],
    })
}

/// Claims of a session of `sub` that used a one-time password as second factor.
pub fn claims_2fa(sub: &str) -> Value {
    let mut c = claims(sub);
    c["amr"] = json!(["pwd", "otp"]);
    c
}

fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token (`alg: none`), as an attacker would send it.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// A token signed with HS256 using `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}
