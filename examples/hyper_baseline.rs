//! The baseline of the HTTP benchmarks (`scripts/bench-http.sh`,
//! `scripts/callgrind-http.sh`): the least a hyper 1 server can do per request.
//!
//! It serves any method and path by reading the whole request body and answering a
//! fixed decision as JSON, over HTTP/1.1 keep-alive (HTTP/2 by prior knowledge also
//! works, as in Portcullis). The runtime and the listener are set up as Portcullis
//! sets them up (`src/main.rs`, `src/http/mod.rs`): the default multi-thread tokio
//! runtime, hyper-util's `auto::Builder` with `TokioExecutor`, `set_nodelay(true)`,
//! one spawned task per connection. There is no routing, logging, metrics, request
//! id or graceful shutdown: whatever Portcullis spends beyond this is its own cost.
//!
//! Run: `cargo run --release --example hyper_baseline -- 127.0.0.1:8181`
//! (the address to listen on; default 127.0.0.1:8181). It prints `listening on
//! <addr>` once bound and serves until killed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const DECISION: &str =
    r#"{"decision":"Allow","diagnostics":{"reason":["member-invoices"],"errors":[]}}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as Portcullis does before it decodes it; a broken body still gets
    // the fixed answer, the baseline has nothing to report.
    let _body = req.into_body().collect().await.map(|c| c.to_bytes());
    let mut response = Response::new(Full::new(Bytes::from_static(DECISION.as_bytes())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        None => SocketAddr::from(([127, 0, 0, 1], 8181)),
        Some(a) => a.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("listen address `{a}`: {e}"),
            )
        })?,
    };
    // Same flavour as Portcullis's `main`: `Runtime::new()` is the multi-thread
    // runtime with one worker per core and all drivers enabled.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}
