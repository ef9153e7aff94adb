//! Fetches the gateway's signing keys from the identity provider: the JWKS at
//! `--jwt-jwks-url`, or the one the issuer's OpenID configuration names. The one
//! outgoing HTTP client of the service, kept small: one GET per fetch over hyper's
//! connection API, HTTPS through rustls with the system's roots.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, Registry};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::gateway::identity::{key_url, KeysLocation, RemoteKeys};

/// The most a JWKS or OpenID configuration document may weigh.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// How long one fetch (connect, TLS, request and body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time between two fetches asked for by unknown key ids, and the
/// retry interval until a first set is fetched.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Why a fetch failed; the last good key set keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("fetching `{url}`: {message}")]
pub struct JwksFetchError {
    url: String,
    message: String,
}

/// Counters of the fetcher.
#[derive(Clone)]
struct FetchMetrics {
    refreshes: IntCounter,
    failures: IntCounter,
}

impl FetchMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let refreshes = IntCounter::new(
            "portcullis_jwks_refreshes_total",
            "JWKS fetches that installed or confirmed a key set.",
        )?;
        let failures = IntCounter::new(
            "portcullis_jwks_refresh_failures_total",
            "JWKS fetches that failed (unreachable, bad status, unusable document); the last good set keeps serving.",
        )?;
        registry.register(Box::new(refreshes.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            refreshes,
            failures,
        })
    }
}

/// The fetch task; aborted when dropped, so it lives exactly as long as the `App`
/// that holds it.
pub struct JwksTask(tokio::task::JoinHandle<()>);

impl Drop for JwksTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts fetching `keys` in the background: at once, then every refresh interval,
/// and when a token names an unknown key (at most once a second). It never exits on
/// its own: a failing provider is logged, counted, and retried at the next interval
/// while the last good set serves.
pub fn spawn(keys: Arc<RemoteKeys>, registry: &Registry) -> anyhow::Result<JwksTask> {
    let metrics = FetchMetrics::new(registry)?;
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| anyhow::anyhow!("fetching the JWKS needs a Tokio runtime"))?;
    let client = Client::new()?;
    Ok(JwksTask(handle.spawn(run(keys, client, metrics))))
}

async fn run(keys: Arc<RemoteKeys>, client: Client, metrics: FetchMetrics) {
    loop {
        let fetched = tokio::time::Instant::now();
        match fetch(&client, &keys.location).await {
            Ok(document) => match keys.install(&document) {
                Ok(changed) => {
                    metrics.refreshes.inc();
                    if changed {
                        tracing::info!(
                            location = %keys.location,
                            generation = keys.generation(),
                            "installed a new JWKS"
                        );
                    }
                }
                Err(e) => {
                    metrics.failures.inc();
                    tracing::warn!(location = %keys.location, "unusable JWKS, keeping the last good set: {e}");
                }
            },
            Err(e) => {
                metrics.failures.inc();
                tracing::warn!("{e}; keeping the last good key set");
            }
        }
        let period = if keys.is_loaded() {
            keys.refresh
        } else {
            keys.refresh.min(MIN_INTERVAL)
        };
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = keys.wanted() => {
                tokio::time::sleep_until(fetched + MIN_INTERVAL).await;
            }
        }
    }
}

/// The JWKS document of `location`.
async fn fetch(client: &Client, location: &KeysLocation) -> Result<Bytes, JwksFetchError> {
    match location {
        KeysLocation::Jwks(url) => client.get(url).await,
        KeysLocation::Discovery(config) => {
            let document = client.get(config).await?;
            let fail = |message: String| JwksFetchError {
                url: config.to_string(),
                message,
            };
            let value: serde_json::Value =
                serde_json::from_slice(&document).map_err(|e| fail(format!("not JSON: {e}")))?;
            let jwks_uri = value
                .get("jwks_uri")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| fail("the configuration names no `jwks_uri`".to_string()))?;
            let url = key_url(jwks_uri, "jwks_uri").map_err(fail)?;
            client.get(&url).await
        }
    }
}

/// One GET at a time over a fresh connection: a fetch every few minutes does not
/// need a pool.
struct Client {
    tls: TlsConnector,
}

impl Client {
    fn new() -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!("system certificates: {e}");
        }
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!("no system CA certificates found: HTTPS key fetches will fail");
        }
        // The same provider as the listener's TLS, chosen here rather than whatever a
        // dependency installs as the default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS client configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    async fn get(&self, url: &Uri) -> Result<Bytes, JwksFetchError> {
        let fail = |message: String| JwksFetchError {
            url: url.to_string(),
            message,
        };
        tokio::time::timeout(FETCH_TIMEOUT, self.get_now(url))
            .await
            .map_err(|_| fail(format!("no answer within {FETCH_TIMEOUT:?}")))?
            .map_err(fail)
    }

    async fn get_now(&self, url: &Uri) -> Result<Bytes, String> {
        let host = url.host().ok_or("no host")?;
        let https = url.scheme_str() == Some("https");
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let authority = url
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.to_string());
        let path = url
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        if https {
            let name = ServerName::try_from(bare.to_string())
                .map_err(|e| format!("invalid server name `{bare}`: {e}"))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(tls, &authority, &path).await
        } else {
            exchange(tcp, &authority, &path).await
        }
    }
}

/// Sends one GET over `io` and reads the answer's body, which must be a 200 of at
/// most [`MAX_DOCUMENT_BYTES`].
async fn exchange<S>(io: S, authority: &str, path: &str) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // The connection is driven until the answer is read; dropping the sender ends it.
    let driver = tokio::spawn(conn);
    let request = Request::get(path)
        .header(HOST, authority)
        .header(ACCEPT, "application/json")
        .header(
            USER_AGENT,
            concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = answer.status();
    let body = Limited::new(answer.into_body(), MAX_DOCUMENT_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    drop(sender);
    driver.abort();
    if status != StatusCode::OK {
        return Err(format!("answered {status}"));
    }
    Ok(body)
}
