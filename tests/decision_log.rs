//! The decision log: one event with the same fields on every surface (the Cedar-native
//! API, AuthZEN, the gateway over HTTP and over Envoy's gRPC), and on the gateway the
//! route template and protocol. A W3C `traceparent` is carried into the event as
//! `trace_id` and `span_id`. A test binary of its own, because it installs the
//! process-wide log subscriber.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::jwt::{claims, TestKey, AUDIENCE, ISSUER};
use common::TestServer;
use http::{Method, StatusCode};
use portcullis::config::{DecisionLog, GatewayArgs, ServeArgs};

/// The W3C specification's example trace context.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fields of the logged event with `request_id`.
fn entry(text: &str, request_id: &str) -> serde_json::Value {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no decision log entry `{request_id}` in:\n{text}"))
}

#[tokio::test]
async fn every_surface_logs_the_same_fields_and_the_gateway_its_route() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || sink.clone())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let pem = dir.path().join("login.pem");
    std::fs::write(&pem, &key.public_pem).unwrap();
    let server = TestServer::start(ServeArgs {
        decision_log: DecisionLog::On,
        gateway: GatewayArgs {
            jwt_key_file: Some(pem),
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    let auth = format!("Bearer {}", key.sign(&claims("walt")));
    let r = server
        .send(
            Method::GET,
            "/forward-auth/traefik",
            &[
                ("authorization", &auth),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/accounts/acme/invoices/inv-1001"),
                ("x-request-id", "req-walt-1"),
                ("traceparent", TRACEPARENT),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A malformed trace context is ignored, never an error: each of these asks the
    // gateway the same question and gets the same answer, logged without a trace.
    let malformed: &[(&str, &str)] = &[
        (
            "req-trace-short",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ),
        (
            "req-trace-upper",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        ),
        (
            "req-trace-zero-trace",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        (
            "req-trace-zero-span",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ),
        (
            "req-trace-version-ff",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "req-trace-extra-00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ),
        (
            "req-trace-not-hex",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ),
        ("req-trace-garbage", "hello"),
    ];
    for (id, traceparent) in malformed {
        let r = server
            .send(
                Method::GET,
                "/forward-auth/traefik",
                &[
                    ("authorization", &auth),
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-uri", "/accounts/acme/invoices/inv-1001"),
                    ("x-request-id", id),
                    ("traceparent", traceparent),
                ],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{id}: {}", r.text);
    }
    // A later version may append fields; the known ones are read.
    let r = server
        .send(
            Method::GET,
            "/forward-auth/traefik",
            &[
                ("authorization", &auth),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/accounts/acme/invoices/inv-1001"),
                ("x-request-id", "req-trace-future"),
                (
                    "traceparent",
                    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
                ),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let json_headers =
        |id: &'static str| [("content-type", "application/json"), ("x-request-id", id)];
    let r = server
        .send(
            Method::POST,
            "/v1/is_authorized",
            &json_headers("req-walt-2"),
            serde_json::json!({
                "principal": r#"Portal::User::"walt""#,
                "action": r#"Portal::Action::"ViewInvoice""#,
                "resource": r#"Portal::Invoice::"inv-1001""#,
            })
            .to_string()
            .into_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = server
        .send(
            Method::POST,
            "/access/v1/evaluation",
            &json_headers("req-walt-3"),
            serde_json::json!({
                "subject": {"type": "user", "id": "walt"},
                "action": {"name": "ViewInvoice"},
                "resource": {"type": "invoice", "id": "inv-1001"},
            })
            .to_string()
            .into_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let channel = common::grpc::channel(server.addr).await;
    let a = common::grpc::ask(
        &channel,
        common::grpc::check(
            "GET",
            "/accounts/acme/invoices/inv-1001",
            &[("authorization", &auth), ("x-request-id", "req-walt-4")],
        ),
    )
    .await;
    assert_eq!(a.code, tonic::Code::PermissionDenied, "{a:?}");
    server.stop().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let (gateway, cedar, authzen, grpc) = (
        entry(&text, "req-walt-1"),
        entry(&text, "req-walt-2"),
        entry(&text, "req-walt-3"),
        entry(&text, "req-walt-4"),
    );
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&gateway), keys(&cedar), "{gateway}\n{cedar}");
    assert_eq!(keys(&authzen), keys(&cedar), "{authzen}\n{cedar}");
    assert_eq!(keys(&grpc), keys(&cedar), "{grpc}\n{cedar}");
    for (e, surface) in [
        (&gateway, "gateway"),
        (&grpc, "gateway"),
        (&cedar, "cedar"),
        (&authzen, "authzen"),
    ] {
        assert_eq!(e["target"], "portcullis::decision");
        assert_eq!(e["surface"], surface);
        assert_eq!(e["decision"], "Deny");
        assert_eq!(e["outcome"], "decided");
        assert_eq!(e["principal"], r#"Portal::User::"walt""#);
        assert_eq!(e["resource"], r#"Portal::Invoice::"inv-1001""#);
    }
    assert_eq!(cedar["route"], "");
    assert_eq!(grpc["route"], "GET /accounts/{account}/invoices/{invoice}");
    assert_eq!(grpc["protocol"], "envoy-grpc");
    assert_eq!(gateway["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(gateway["span_id"], "00f067aa0ba902b7");
    for e in [&cedar, &authzen] {
        assert_eq!(e["trace_id"], "", "no traceparent: {e}");
        assert_eq!(e["span_id"], "", "no traceparent: {e}");
    }
    for (id, traceparent) in malformed {
        let e = entry(&text, id);
        assert_eq!(e["decision"], "Deny", "{id}");
        assert_eq!(e["trace_id"], "", "`{traceparent}` was read: {e}");
        assert_eq!(e["span_id"], "", "`{traceparent}` was read: {e}");
    }
    let future = entry(&text, "req-trace-future");
    assert_eq!(future["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(future["span_id"], "00f067aa0ba902b7");
    let entry = gateway;
    assert_eq!(entry["route"], "GET /accounts/{account}/invoices/{invoice}");
    assert_eq!(entry["protocol"], "traefik");
    assert_eq!(entry["decision"], "Deny");
    assert_eq!(entry["principal"], r#"Portal::User::"walt""#);
    assert_eq!(entry["resource"], r#"Portal::Invoice::"inv-1001""#);
}
