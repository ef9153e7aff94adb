//! Who is asking: a verified JWT, or a header set by a trusted upstream authenticator.
//!
//! Exactly one source is configured; configuring both is a start-up error, because a
//! service that silently preferred one would let a client choose its identity by
//! sending the other. Tokens are verified against keys the operator names: the
//! algorithm comes from the key, never from the token, so `none` and algorithm
//! confusion (an RSA public key used as an HMAC secret) are refused.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::GatewayArgs;
use crate::model::routes::UidTemplate;

/// A caller whose identity was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: EntityUid,
    /// Whether the session used a second factor; `None` when the source cannot say.
    pub second_factor: Option<bool>,
}

/// Why a caller has no identity: answered with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No credentials at all.
    #[error("{0}")]
    Missing(String),
    /// Credentials that do not verify.
    #[error("{0}")]
    Invalid(String),
    /// The service has no identity source; answered with 503, as a configuration
    /// problem rather than the caller's.
    #[error(
        "the gateway has no identity source: configure `--jwt-*` or `--trusted-principal-header`"
    )]
    NotConfigured,
    /// The signing keys are fetched from the identity provider and no set has arrived
    /// yet: answered with 503, like a missing configuration.
    #[error("{0}")]
    KeysUnavailable(String),
}

impl IdentityError {
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Missing(_) => "missing_credentials",
            IdentityError::Invalid(_) => "invalid_credentials",
            IdentityError::NotConfigured => "gateway_not_configured",
            IdentityError::KeysUnavailable(_) => "identity_keys_unavailable",
        }
    }
}

/// The configured identity source.
#[derive(Default)]
pub enum Authenticator {
    #[default]
    NotConfigured,
    Jwt(Box<JwtVerifier>),
    TrustedHeader(TrustedHeader),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl Authenticator {
    /// Builds the source the flags name. Both a JWT source and a trusted header, or
    /// more than one key source, is an error.
    pub fn from_args(args: &GatewayArgs) -> Result<Self, String> {
        let key_sources = [
            args.jwt_key_file.is_some(),
            args.jwt_jwks_file.is_some(),
            args.jwt_hs256_secret_file.is_some(),
            args.jwt_jwks_url.is_some(),
            args.jwt_oidc_discovery,
        ]
        .iter()
        .filter(|x| **x)
        .count();
        let jwt_named = key_sources > 0 || args.jwt_issuer.is_some() || args.jwt_audience.is_some();
        match (&args.trusted_principal_header, jwt_named) {
            (Some(_), true) => Err(
                "both a JWT source (`--jwt-*`) and `--trusted-principal-header` are configured: choose one"
                    .to_string(),
            ),
            (Some(h), false) => Ok(Self::TrustedHeader(TrustedHeader::new(
                h,
                &args.trusted_principal_type,
                args.trusted_second_factor_header.as_deref(),
            )?)),
            (None, true) => {
                if key_sources != 1 {
                    return Err(
                        "name exactly one of `--jwt-key-file`, `--jwt-jwks-file`, `--jwt-hs256-secret-file`, `--jwt-jwks-url`, `--jwt-oidc-discovery`"
                            .to_string(),
                    );
                }
                Ok(Self::Jwt(Box::new(JwtVerifier::from_args(args)?)))
            }
            (None, false) => Ok(Self::NotConfigured),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Authenticator::NotConfigured => "none",
            Authenticator::Jwt(_) => "jwt",
            Authenticator::TrustedHeader(_) => "trusted-header",
        }
    }

    /// The keys fetched from an identity provider, when the source is a JWT verifier
    /// configured with `--jwt-jwks-url` or `--jwt-oidc-discovery`.
    pub fn remote_keys(&self) -> Option<&Arc<RemoteKeys>> {
        match self {
            Authenticator::Jwt(v) => v.remote.as_ref(),
            _ => None,
        }
    }

    pub fn identify(&self, headers: &HeaderMap) -> Result<Identity, IdentityError> {
        match self {
            Authenticator::NotConfigured => Err(IdentityError::NotConfigured),
            Authenticator::Jwt(v) => v.identify(headers),
            Authenticator::TrustedHeader(t) => t.identify(headers),
        }
    }
}

/// A principal named by a header that an upstream authenticator sets (and the proxy
/// strips from client requests).
#[derive(Debug)]
pub struct TrustedHeader {
    header: HeaderName,
    principal_type: EntityTypeName,
    second_factor: Option<HeaderName>,
}

impl TrustedHeader {
    fn new(
        header: &str,
        principal_type: &str,
        second_factor: Option<&str>,
    ) -> Result<Self, String> {
        let name =
            |h: &str| HeaderName::from_str(h).map_err(|_| format!("invalid header name `{h}`"));
        Ok(Self {
            header: name(header)?,
            principal_type: EntityTypeName::from_str(principal_type)
                .map_err(|e| format!("invalid principal type `{principal_type}`: {e}"))?,
            second_factor: second_factor.map(name).transpose()?,
        })
    }

    fn identify(&self, headers: &HeaderMap) -> Result<Identity, IdentityError> {
        let value = single(headers, &self.header)?.ok_or_else(|| {
            IdentityError::Missing(format!("header `{}` is missing", self.header))
        })?;
        let id = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                IdentityError::Invalid(format!("header `{}` is empty or not text", self.header))
            })?;
        // A repeated second-factor header is refused like a repeated principal header:
        // which copy a proxy forwards first is not something to authorize on.
        let second_factor = match &self.second_factor {
            Some(h) => Some(single(headers, h)?.is_some_and(|v| {
                v.to_str()
                    .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
            })),
            None => None,
        };
        Ok(Identity {
            principal: EntityUid::from_type_name_and_id(
                self.principal_type.clone(),
                EntityId::new(id),
            ),
            second_factor,
        })
    }
}

/// The one value of a header that must not repeat: `None` when absent, an error when
/// it appears more than once.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, IdentityError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        (Some(_), Some(_)) | (None, Some(_)) => Err(IdentityError::Invalid(format!(
            "header `{name}` appears more than once"
        ))),
    }
}

/// One key a token may be signed with.
struct VerifyKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Where fetched signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysLocation {
    /// `--jwt-jwks-url`.
    Jwks(http::Uri),
    /// `--jwt-oidc-discovery`: the issuer's OpenID configuration, whose `jwks_uri`
    /// names the JWKS.
    Discovery(http::Uri),
}

impl std::fmt::Display for KeysLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeysLocation::Jwks(u) | KeysLocation::Discovery(u) => write!(f, "{u}"),
        }
    }
}

/// A URL keys may be fetched from: HTTPS, or HTTP to a loopback address (an identity
/// provider's sidecar, a test), since keys fetched in the clear elsewhere could be
/// replaced on the way.
pub fn key_url(url: &str, flag: &str) -> Result<http::Uri, String> {
    let uri = http::Uri::from_str(url).map_err(|e| format!("`{flag}` `{url}`: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("`{flag}` `{url}` names no host"))?;
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback => Ok(uri),
        _ => Err(format!(
            "`{flag}` `{url}` must be an `https` URL (`http` only on a loopback address)"
        )),
    }
}

/// One fetched key set.
struct KeySet {
    keys: Vec<VerifyKey>,
    /// SHA-256 of the JWKS document, so an unchanged document is not a change.
    digest: [u8; 32],
}

/// Signing keys fetched from an identity provider: the last good set serves until a
/// newer good one replaces it. `http::jwks` fetches; the verifier reads the set on
/// every token (an `ArcSwap`, no lock) and asks for a fetch when a token names a key
/// the set lacks.
pub struct RemoteKeys {
    pub location: KeysLocation,
    pub refresh: Duration,
    current: ArcSwapOption<KeySet>,
    /// Raised when a token names an unknown `kid`; the fetcher waits on it. A
    /// `Notify` keeps one permit, so a burst of such tokens asks for one fetch.
    wanted: tokio::sync::Notify,
    /// Incremented each time a different key set is installed.
    generation: std::sync::atomic::AtomicU64,
}

impl RemoteKeys {
    pub fn new(location: KeysLocation, refresh: Duration) -> Self {
        Self {
            location,
            refresh,
            current: ArcSwapOption::empty(),
            wanted: tokio::sync::Notify::new(),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Installs a fetched JWKS document. An unusable document is an error and leaves
    /// the last good set serving. Returns whether the set changed.
    pub fn install(&self, jwks: &[u8]) -> Result<bool, String> {
        let digest: [u8; 32] = Sha256::digest(jwks).into();
        if self
            .current
            .load()
            .as_ref()
            .is_some_and(|s| s.digest == digest)
        {
            return Ok(false);
        }
        let keys = jwks_keys(jwks)?;
        self.current.store(Some(Arc::new(KeySet { keys, digest })));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(true)
    }

    /// Whether a first set was fetched.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// How many different sets were installed so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Completes when a token named a key the set lacks (since the last call).
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// Why the service is not ready, while no set was fetched.
    pub fn not_ready(&self) -> Option<String> {
        (!self.is_loaded()).then(|| format!("no JWKS fetched yet from `{}`", self.location))
    }
}

/// A token verified before, remembered under its compact form itself: a hit compares
/// the whole token, so no two tokens can share an entry, and a hit costs one hash of the
/// token (SipHash, seeded per process) rather than a cryptographic digest.
struct Verified {
    identity: Identity,
    /// The token's `exp`, in seconds since the epoch: the entry is not used from then.
    exp: u64,
    /// The key-set generation it was verified with.
    generation: u64,
    /// What the entry weighs in the cache, in bytes.
    bytes: u32,
}

/// Seconds since the epoch; 0 if the clock is before it (then nothing is cached as
/// valid for long, since every `exp` lies ahead).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Entries leave the cache at their token's `exp`, never later.
struct UntilExp;

impl moka::Expiry<Arc<str>, Arc<Verified>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<Verified>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(value.exp.saturating_sub(now_secs())))
    }
}

/// Verified tokens, bounded in entries and bytes: each entry weighs at least
/// `bytes / entries`, so neither bound can be exceeded. Verification is the
/// gateway's own cost (a signature check per request), and a session sends the same
/// token many times.
struct VerifiedCache {
    cache: moka::sync::Cache<Arc<str>, Arc<Verified>>,
    /// The key-set generation the entries belong to; a different one flushes them.
    generation: std::sync::atomic::AtomicU64,
}

impl VerifiedCache {
    fn new(entries: u64, bytes: u64) -> Option<Self> {
        if entries == 0 || bytes == 0 {
            return None;
        }
        let floor = u32::try_from((bytes / entries).max(1)).unwrap_or(u32::MAX);
        let cache = moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(move |_: &Arc<str>, v: &Arc<Verified>| v.bytes.max(floor))
            .expire_after(UntilExp)
            .build();
        Some(Self {
            cache,
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The identity of a token verified before with the key set of `generation`, if
    /// its `exp` is still ahead. A new generation flushes everything first.
    fn get(&self, token: &str, generation: u64) -> Option<Identity> {
        use std::sync::atomic::Ordering;
        if self.generation.swap(generation, Ordering::AcqRel) != generation {
            self.cache.invalidate_all();
            return None;
        }
        let hit = self.cache.get(token)?;
        if hit.generation == generation && now_secs() < hit.exp {
            return Some(hit.identity.clone());
        }
        self.cache.invalidate(token);
        None
    }

    fn insert(&self, token: &str, identity: &Identity, exp: u64, generation: u64) {
        if now_secs() >= exp {
            return;
        }
        let bytes =
            std::mem::size_of::<Verified>() + token.len() + identity.principal.to_string().len();
        self.cache.insert(
            Arc::from(token),
            Arc::new(Verified {
                identity: identity.clone(),
                exp,
                generation,
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            }),
        );
    }
}

/// Verifies bearer tokens and turns their claims into an identity.
pub struct JwtVerifier {
    /// Tokens verified before; `None` with `--jwt-cache-entries 0`.
    cache: Option<VerifiedCache>,
    keys: Vec<VerifyKey>,
    /// Keys fetched from an identity provider; when set, `keys` is empty.
    remote: Option<Arc<RemoteKeys>>,
    /// Whether tokens must name their key (`kid`): true for a JWKS.
    by_kid: bool,
    issuer: String,
    audience: String,
    leeway: u64,
    principal: UidTemplate,
    amr: Vec<String>,
    acr: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// A PEM public key and the one algorithm it verifies.
fn pem_key(pem: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Algorithm::RS256, k));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((Algorithm::ES256, k));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((Algorithm::EdDSA, k));
    }
    Err("not a PEM public key of type RSA, EC P-256 or Ed25519".to_string())
}

/// The keys of a JWKS that can verify signatures with an accepted algorithm. A key
/// of another algorithm is skipped with a warning (identity providers publish
/// encryption keys in the same set); a set with no usable key is an error.
fn jwks_keys(text: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet = serde_json::from_slice(text).map_err(|e| format!("invalid JWKS: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let name = kid.clone().unwrap_or_else(|| "(no kid)".to_string());
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(kid) = kid else {
            tracing::warn!("JWKS key without `kid` skipped: tokens choose keys by `kid`");
            continue;
        };
        let inferred = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Some(Algorithm::ES256)
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Some(Algorithm::EdDSA)
            }
            _ => None,
        };
        let declared = jwk
            .common
            .key_algorithm
            .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
        let alg = match (declared, inferred) {
            (Some(d), Some(i)) if d == i => d,
            (None, Some(i)) => i,
            _ => {
                tracing::warn!(kid = %name, "JWKS key skipped: only RS256, ES256 (P-256) and EdDSA (Ed25519) are accepted");
                continue;
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key `{name}`: {e}"))?;
        keys.push(VerifyKey {
            kid: Some(kid),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err("the JWKS holds no RS256, ES256 or EdDSA signing key with a `kid`".to_string());
    }
    Ok(keys)
}

impl JwtVerifier {
    fn from_args(args: &GatewayArgs) -> Result<Self, String> {
        let mut remote = None;
        let (keys, by_kid) = if let Some(url) = &args.jwt_jwks_url {
            let location = KeysLocation::Jwks(key_url(url, "--jwt-jwks-url")?);
            remote = Some(Arc::new(RemoteKeys::new(
                location,
                Duration::from_secs(args.jwt_jwks_refresh_secs),
            )));
            (Vec::new(), true)
        } else if args.jwt_oidc_discovery {
            let issuer = args.jwt_issuer.as_deref().ok_or(
                "`--jwt-oidc-discovery` reads the issuer's configuration: name `--jwt-issuer`",
            )?;
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let location = KeysLocation::Discovery(key_url(&url, "--jwt-issuer")?);
            remote = Some(Arc::new(RemoteKeys::new(
                location,
                Duration::from_secs(args.jwt_jwks_refresh_secs),
            )));
            (Vec::new(), true)
        } else if let Some(path) = &args.jwt_key_file {
            let (alg, key) =
                pem_key(&read(path)?).map_err(|e| format!("`{}`: {e}", path.display()))?;
            (
                vec![VerifyKey {
                    kid: None,
                    alg,
                    key,
                }],
                false,
            )
        } else if let Some(path) = &args.jwt_jwks_file {
            (
                jwks_keys(&read(path)?).map_err(|e| format!("`{}`: {e}", path.display()))?,
                true,
            )
        } else if let Some(path) = &args.jwt_hs256_secret_file {
            let secret = read(path)?;
            let secret = secret.trim_ascii();
            // RFC 7518 asks for a key at least as long as the hash output.
            if secret.len() < 32 {
                return Err(format!(
                    "`{}`: an HS256 secret must be at least 32 bytes",
                    path.display()
                ));
            }
            (
                vec![VerifyKey {
                    kid: None,
                    alg: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret),
                }],
                false,
            )
        } else {
            return Err("no JWT key configured".to_string());
        };
        let issuer = args
            .jwt_issuer
            .clone()
            .ok_or("`--jwt-issuer` is required with a JWT key")?;
        let audience = args
            .jwt_audience
            .clone()
            .ok_or("`--jwt-audience` is required with a JWT key")?;
        let principal = UidTemplate::parse(&args.jwt_principal)
            .map_err(|e| format!("`--jwt-principal`: {e}"))?;
        if principal.vars().next().is_none() {
            return Err(
                "`--jwt-principal` must name a claim, e.g. `Portal::User::\"{sub}\"`".to_string(),
            );
        }
        Ok(Self {
            cache: VerifiedCache::new(args.jwt_cache_entries, args.jwt_cache_bytes),
            keys,
            remote,
            by_kid,
            issuer,
            audience,
            leeway: args.jwt_leeway_secs,
            principal,
            amr: args.jwt_second_factor_amr.clone(),
            acr: args.jwt_second_factor_acr.clone(),
        })
    }

    fn identify(&self, headers: &HeaderMap) -> Result<Identity, IdentityError> {
        let value = single(headers, &AUTHORIZATION)?.ok_or_else(|| {
            IdentityError::Missing("`Authorization: Bearer <token>` is missing".to_string())
        })?;
        let value = value
            .to_str()
            .map_err(|_| IdentityError::Invalid("`Authorization` is not text".to_string()))?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                IdentityError::Invalid("`Authorization` is not a `Bearer` token".to_string())
            })?;
        self.verify(token)
    }

    /// Verifies a compact JWT and maps its claims to an identity; a token verified
    /// before with the same keys and not yet expired is answered from the cache.
    pub fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        let Some(cache) = &self.cache else {
            return self.verify_uncached(token).map(|(identity, _)| identity);
        };
        let generation = self.remote.as_ref().map_or(0, |r| r.generation());
        if let Some(identity) = cache.get(token, generation) {
            return Ok(identity);
        }
        let (identity, exp) = self.verify_uncached(token)?;
        if let Some(exp) = exp {
            cache.insert(token, &identity, exp, generation);
        }
        Ok(identity)
    }

    /// Verifies a compact JWT: its identity, and its `exp` in whole seconds.
    fn verify_uncached(&self, token: &str) -> Result<(Identity, Option<u64>), IdentityError> {
        let invalid = |m: String| IdentityError::Invalid(m);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("malformed token: {e}")))?;
        // Fetched keys: the set serving now, loaded once for this token.
        let fetched = self.remote.as_ref().map(|r| (r, r.current.load_full()));
        let keys = match &fetched {
            None => self.keys.as_slice(),
            Some((_, Some(set))) => set.keys.as_slice(),
            Some((r, None)) => {
                return Err(IdentityError::KeysUnavailable(format!(
                    "no signing keys yet: the JWKS at `{}` was not fetched",
                    r.location
                )))
            }
        };
        let key = if self.by_kid {
            let kid = header
                .kid
                .as_deref()
                .ok_or_else(|| invalid("token names no key (`kid`)".to_string()))?;
            keys.iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| {
                    // The provider may have rotated its keys: ask for a fetch now
                    // rather than at the next refresh.
                    if let Some((r, _)) = &fetched {
                        r.wanted.notify_one();
                    }
                    invalid(format!("unknown key id `{kid}`"))
                })?
        } else {
            keys.first()
                .ok_or_else(|| invalid("no key configured".to_string()))?
        };
        if header.alg != key.alg {
            return Err(invalid(format!(
                "algorithm `{:?}` is not accepted for this key (expected `{:?}`)",
                header.alg, key.alg
            )));
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| {
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "token has expired".to_string(),
                    ErrorKind::ImmatureSignature => "token is not valid yet (`nbf`)".to_string(),
                    ErrorKind::InvalidAudience => "token is for another audience".to_string(),
                    ErrorKind::InvalidIssuer => "token is from another issuer".to_string(),
                    ErrorKind::InvalidSignature => "token signature does not verify".to_string(),
                    ErrorKind::MissingRequiredClaim(c) => format!("token lacks the `{c}` claim"),
                    _ => format!("invalid token: {e}"),
                })
            })?;
        let claims = data.claims;
        // RFC 7519 lets `aud` be an array but `iss` is one string; the JWT library also
        // accepts an array holding the issuer, which would let a token minted for a
        // list of issuers pass as ours.
        if !claims.get("iss").is_some_and(Value::is_string) {
            return Err(invalid("token `iss` is not a string".to_string()));
        }
        let principal = self
            .principal
            .render(|name| {
                claims
                    .get(name)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                invalid(format!(
                    "token lacks a non-empty string claim for `{}`",
                    self.principal.vars().collect::<Vec<_>>().join("`, `")
                ))
            })?;
        let amr = claims
            .get("amr")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .any(|m| self.amr.iter().any(|x| x == m))
            });
        let acr = claims
            .get("acr")
            .and_then(Value::as_str)
            .is_some_and(|a| self.acr.iter().any(|x| x == a));
        let exp = claims.get("exp").and_then(Value::as_u64);
        Ok((
            Identity {
                principal,
                second_factor: Some(amr || acr),
            },
            exp,
        ))
    }
}

#[cfg(test)]
mod verified_cache_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn identity(n: usize) -> Identity {
        Identity {
            principal: format!("Portal::User::\"user-{n}\"").parse().unwrap(),
            second_factor: Some(false),
        }
    }

    /// Fills a cache with many sessions' tokens and returns how many entries it holds
    /// and what they weigh.
    fn fill(entries: u64, bytes: u64) -> (u64, u64) {
        let cache = VerifiedCache::new(entries, bytes).unwrap();
        let exp = now_secs() + 600;
        for n in 0..500usize {
            cache.insert(&format!("token-{n}"), &identity(n), exp, 0);
        }
        cache.cache.run_pending_tasks();
        (cache.cache.entry_count(), cache.cache.weighted_size())
    }

    #[test]
    fn the_cache_holds_no_more_entries_nor_bytes_than_allowed() {
        let (count, weight) = fill(10, 1 << 20);
        assert!(count <= 10, "{count} entries");
        assert!(weight <= 1 << 20);
        let (count, weight) = fill(1_000_000, 2_000);
        assert!(weight <= 2_000, "{weight} bytes");
        assert!(count > 0 && count < 500, "{count} entries");
    }

    #[test]
    fn a_token_already_expired_is_not_cached_and_zero_turns_the_cache_off() {
        let cache = VerifiedCache::new(10, 1 << 20).unwrap();
        cache.insert("token", &identity(1), now_secs(), 0);
        assert_eq!(cache.get("token", 0), None);
        assert!(VerifiedCache::new(0, 1 << 20).is_none());
    }
}
