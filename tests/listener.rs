#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
//! The two listeners and what a connection may cost: which listener serves which
//! endpoint, the header, body and idle timeouts, the connection budget, and the HTTP/2
//! settings. Each promise is shown by a client that breaks it on purpose over a raw
//! socket, and the metric that counts it.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, metric, request, uid, TestServer, DEADLINE};
use http::Method;
use portcullis::config::{ListenerArgs, ServeArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn with_listener(listener: ListenerArgs) -> ServeArgs {
    ServeArgs {
        listener,
        ..ServeArgs::default()
    }
}

async fn closed_total(server: &TestServer, listener: &str, reason: &str) -> f64 {
    let text = server.admin_get("/metrics").await.text;
    let series = format!(
        "portcullis_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
    );
    metric(&text, &series).unwrap_or(0.0)
}

/// Reads until the server closes the connection; returns what it sent, or `None` if
/// it did not close within `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

const DECISION: &str = r#"{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\""}"#;

fn decision_request(keep_alive: bool) -> String {
    format!(
        "POST /v1/is_authorized HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {}\r\n\r\n{DECISION}",
        DECISION.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
}

/// Reads one HTTP/1.1 response with a content-length body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn operational_endpoints_live_on_the_admin_listener_and_health_on_both() {
    let server = TestServer::portal().await;
    // (path, status on the decision listener, status on the admin listener)
    for (path, decision, admin) in [
        ("/healthz", 200, 200),
        ("/readyz", 200, 200),
        ("/openapi.json", 200, 200),
        ("/metrics", 404, 200),
        ("/v1/policies", 404, 200),
    ] {
        let on_decision = server.get(path).await;
        assert_eq!(
            on_decision.status, decision,
            "decision listener {path}: {}",
            on_decision.text
        );
        let on_admin = server.admin_get(path).await;
        assert_eq!(
            on_admin.status, admin,
            "admin listener {path}: {}",
            on_admin.text
        );
    }
    assert_eq!(server.get("/metrics").await.json["error"], "not_found");
    // Decisions are not the admin listener's.
    let on_admin = common::send(
        server.admin_addr,
        Method::POST,
        "/v1/is_authorized",
        &[("content-type", "application/json")],
        request(
            &uid("User", "bea"),
            "PayInvoice",
            &uid("Invoice", "inv-1001"),
        )
        .to_string()
        .into_bytes(),
    )
    .await;
    assert_eq!(on_admin.status, 404, "{}", on_admin.text);
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_off_at_the_header_timeout() {
    let server = TestServer::start(with_listener(ListenerArgs {
        header_read_timeout_secs: 1,
        ..ListenerArgs::default()
    }))
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    // One byte of the head every 100 ms, for longer than the timeout: the connection is
    // busy all along, but its head never completes.
    let trickle = async {
        for b in "POST /v1/is_authorized HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".bytes() {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 64];
        matches!(reader.read(&mut buf).await, Ok(0) | Err(_))
    };
    let closed = tokio::select! {
        c = closed => c,
        () = trickle => false,
    };
    let took = started.elapsed();
    eprintln!("trickled head closed after {} ms", took.as_millis());
    assert!(closed, "the server answered or the trickle ended first");
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "closed too late: {took:?}");
    eventually("the close is counted", DEADLINE, || async {
        (closed_total(&server, "decision", "header_timeout").await == 1.0).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_and_closes_at_the_idle_timeout() {
    let server = TestServer::start(with_listener(ListenerArgs {
        header_read_timeout_secs: 1,
        idle_timeout_secs: 3,
        ..ListenerArgs::default()
    }))
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(decision_request(true).as_bytes())
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let idle_from = Instant::now();
    // Idle for twice the header timeout: a kept-alive connection waiting for its next
    // request is not a slow head.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stream
        .write_all(decision_request(true).as_bytes())
        .await
        .unwrap();
    let second = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    let idle_from_second = Instant::now();
    let rest = read_to_close(&mut stream, Duration::from_secs(10)).await;
    let idle = idle_from_second.elapsed();
    eprintln!(
        "idle connection closed {} ms after its last response ({} ms after the first)",
        idle.as_millis(),
        idle_from.elapsed().as_millis()
    );
    assert_eq!(rest.as_deref(), Some(""), "not closed by the idle timeout");
    assert!(
        idle >= Duration::from_millis(2900),
        "closed too early: {idle:?}"
    );
    assert_eq!(closed_total(&server, "decision", "idle_timeout").await, 1.0);
    assert_eq!(
        closed_total(&server, "decision", "header_timeout").await,
        0.0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_the_connection_is_closed() {
    let server = TestServer::start(with_listener(ListenerArgs {
        body_read_timeout_secs: 1,
        ..ListenerArgs::default()
    }))
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/is_authorized HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        DECISION.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&DECISION.as_bytes()[..10]).await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the connection is closed after the answer");
    eprintln!(
        "stalled body answered after {} ms",
        started.elapsed().as_millis()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"body_timeout\""), "{answer}");
    assert!(answer.contains("--body-read-timeout-secs"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(closed_total(&server, "decision", "body_timeout").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_waits_and_the_admin_listener_still_answers() {
    let server = TestServer::start(with_listener(ListenerArgs {
        max_connections: 2,
        ..ListenerArgs::default()
    }))
    .await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    eventually("both connections are open", DEADLINE, || async {
        let text = server.admin_get("/metrics").await.text;
        (metric(&text, "portcullis_connections_open{listener=\"decision\"}") == Some(2.0))
            .then_some(())
    })
    .await;
    // The third is queued by the kernel, not accepted: its request is not answered
    // while the other two hold the budget.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(decision_request(false).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond the limit"
    );
    // The admin listener has its own budget.
    let ready = tokio::time::timeout(Duration::from_secs(1), server.admin_get("/readyz"))
        .await
        .expect("the admin listener answers while the decision listener is full");
    assert_eq!(ready.status, 200);
    // One leaves: the waiting one is served.
    drop(first);
    let started = Instant::now();
    let answer = read_to_close(&mut third, Duration::from_secs(10))
        .await
        .unwrap();
    eprintln!(
        "queued connection served {} ms after a slot freed",
        started.elapsed().as_millis()
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads HTTP/2 frames until `want` returns something, or the connection closes.
async fn h2_frames<T>(
    stream: &mut TcpStream,
    mut want: impl FnMut(u8, u8, &[u8]) -> Option<T>,
) -> Option<T> {
    loop {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        if let Some(t) = want(head[3], head[4], &payload) {
            return Some(t);
        }
    }
}

#[tokio::test]
async fn http2_connections_are_told_the_stream_limit() {
    let server = TestServer::start(with_listener(ListenerArgs {
        http2_max_concurrent_streams: 7,
        ..ListenerArgs::default()
    }))
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    // SETTINGS (type 4) without ACK; SETTINGS_MAX_CONCURRENT_STREAMS is id 3.
    let limit = h2_frames(&mut stream, |kind, flags, payload| {
        (kind == 4 && flags & 1 == 0).then(|| {
            payload.chunks(6).find_map(|s| {
                (u16::from_be_bytes([s[0], s[1]]) == 3)
                    .then(|| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
            })
        })
    })
    .await
    .flatten();
    assert_eq!(limit, Some(7));
    server.stop().await;
}

/// An HPACK header block of literals (never indexed, no Huffman): enough for a client
/// that only needs to open a stream.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x10);
        out.push(u8::try_from(name.len()).unwrap());
        out.extend_from_slice(name.as_bytes());
        out.push(u8::try_from(value.len()).unwrap());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    let server = TestServer::start(with_listener(ListenerArgs {
        http2_keepalive_interval_secs: 1,
        http2_keepalive_timeout_secs: 1,
        ..ListenerArgs::default()
    }))
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    // A request whose body never ends keeps a stream open, so hyper pings; this client
    // answers nothing, not even the server's SETTINGS.
    let block = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/is_authorized"),
        (":authority", "localhost"),
        ("content-type", "application/json"),
    ]);
    let mut frame = vec![0, 0, u8::try_from(block.len()).unwrap(), 1, 0x4, 0, 0, 0, 1];
    frame.extend_from_slice(&block);
    stream.write_all(&frame).await.unwrap();
    let started = Instant::now();
    let pinged = h2_frames(&mut stream, |kind, flags, _| {
        (kind == 6 && flags & 1 == 0).then_some(())
    })
    .await;
    assert!(pinged.is_some(), "the server never pinged");
    let closed = read_to_close(&mut stream, Duration::from_secs(10)).await;
    eprintln!(
        "silent HTTP/2 peer closed after {} ms",
        started.elapsed().as_millis()
    );
    assert!(closed.is_some(), "the silent peer was not closed");
    eventually("the close is counted", DEADLINE, || async {
        (closed_total(&server, "decision", "keepalive_timeout").await == 1.0).then_some(())
    })
    .await;
    server.stop().await;
}
