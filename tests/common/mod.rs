//! Shared test harness: a real server on `127.0.0.1:0` and a small HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod jwt;
pub mod redis;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    pub addr: SocketAddr,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = app.clone();
        let handle = tokio::spawn(async move {
            portcullis::http::serve(
                listener,
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

pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = client
        .request(req)
        .await
        .expect("request reaches the server");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

/// A Cedar uid string in the portal namespace: `uid("User", "bea")`.
pub fn uid(ty: &str, id: &str) -> String {
    format!("Portal::{ty}::\"{id}\"")
}

/// A Cedar-native decision request body.
pub fn request(principal: &str, action: &str, resource: &str) -> Value {
    serde_json::json!({
        "principal": principal,
        "action": format!("Portal::Action::\"{action}\""),
        "resource": resource,
    })
}
