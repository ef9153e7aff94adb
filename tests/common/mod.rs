//! Shared test harness: a real server on `127.0.0.1:0`, the one HTTP client of the
//! tests ([`send`]), the one way to wait for a condition ([`eventually`], and
//! [`wait_until`] for code without a runtime) and the one free-port helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod binary;
pub mod blackhole;
pub mod gateway_cases;
pub mod grpc;
pub mod jwt;
pub mod proxy_cases;
pub mod redis;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::config::ServeArgs;
use portcullis::http::App;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A server running in this process until dropped.
pub struct TestServer {
    /// The decision listener.
    pub addr: SocketAddr,
    /// The admin listener: `/metrics`, `/v1/policies`, `/readyz`, ...
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts the service as `portcullis serve` would with these flags.
    pub async fn start(args: ServeArgs) -> Self {
        Self::start_app(App::build(&args).expect("configuration loads")).await
    }

    /// Starts the shipped portal model on its demo data.
    pub async fn portal() -> Self {
        Self::start(ServeArgs::default()).await
    }

    pub async fn start_app(app: App) -> Self {
        let app = Arc::new(app);
        let listeners = portcullis::http::Listeners {
            decision: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let addr = listeners.decision.local_addr().unwrap();
        let admin_addr = listeners.admin.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = app.clone();
        let handle = tokio::spawn(async move {
            portcullis::http::serve(
                listeners,
                served,
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        });
        Self {
            addr,
            admin_addr,
            app,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a JSON value.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await
    }

    /// GETs an operational endpoint (`/metrics`, `/v1/policies`, `/readyz`, ...) from
    /// the listener that serves it.
    pub async fn admin_get(&self, path: &str) -> Reply {
        send(self.admin_addr, Method::GET, path, &[], Vec::new()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Vec::new()).await
    }

    /// Sends any request.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        send(self.addr, method, path, headers, body).await
    }

    /// Stops the server and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A response: status, headers, body text and the body as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request over HTTP/1.1 and reads the whole answer. Panics when the server
/// cannot be reached: use [`try_send`] where that is an expected outcome.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    try_send(addr, method, path, headers, body)
        .await
        .expect("request reaches the server")
}

/// [`send`], or `None` when the server cannot be reached or does not answer.
pub async fn try_send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Option<Reply> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = client.request(req).await.ok()?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Reply {
        status,
        headers,
        text,
        json,
    })
}

/// A Cedar uid string in the portal namespace: `uid("User", "bea")`.
pub fn uid(ty: &str, id: &str) -> String {
    format!("Portal::{ty}::\"{id}\"")
}

/// The shipped AuthZEN mapping (examples/portal/authzen.yaml) written into `dir` with
/// small search limits: `max_candidates` evaluated per call, `fetch_size` fetched at a
/// time, so that searches take several calls and resume from cursors.
pub fn search_mapping(
    dir: &std::path::Path,
    max_candidates: usize,
    fetch_size: usize,
) -> std::path::PathBuf {
    let mapping = dir.join("authzen.yaml");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/portal/authzen.yaml"
    ))
    .unwrap();
    let small = shipped
        .replace(
            "max_candidates: 1000",
            &format!("max_candidates: {max_candidates}"),
        )
        .replace("fetch_size: 100", &format!("fetch_size: {fetch_size}"));
    assert_ne!(small, shipped, "the shipped mapping's search limits moved");
    std::fs::write(&mapping, small).unwrap();
    mapping
}

/// A Cedar-native decision request body.
pub fn request(principal: &str, action: &str, resource: &str) -> Value {
    serde_json::json!({
        "principal": principal,
        "action": format!("Portal::Action::\"{action}\""),
        "resource": resource,
    })
}

/// How long an awaited condition may take before a test fails: generous, because the
/// machine is shared; the time actually taken is printed.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it yields a value or `deadline` passes; panics naming `what`.
/// Prints how long the condition took, so slow conditions show in the test output.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            eprintln!("{what}: after {} ms", started.elapsed().as_millis());
            return v;
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for code that runs outside a runtime (process helpers, `Drop`).
pub fn wait_until<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port that is free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// [`send`] for code that runs outside a runtime.
pub fn send_blocking(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Option<Reply> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            try_send(addr, method, path, headers, body),
        )
        .await
        .ok()
        .flatten()
    })
}

/// The value of one series in Prometheus text (`name{labels}` exactly as exported),
/// or `None` when it is not there.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
