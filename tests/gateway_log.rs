//! The decision log of gateway checks names the route template and the protocol.
//! A test binary of its own, because it installs the process-wide log subscriber.
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

#[tokio::test]
async fn decision_log_entries_of_gateway_checks_carry_the_route() {
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
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    server.stop().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let entry: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == "req-walt-1")
        .unwrap_or_else(|| panic!("no decision log entry in:\n{text}"));
    assert_eq!(entry["target"], "portcullis::decision");
    assert_eq!(entry["route"], "GET /accounts/{account}/invoices/{invoice}");
    assert_eq!(entry["protocol"], "traefik");
    assert_eq!(entry["decision"], "Deny");
    assert_eq!(entry["principal"], r#"Portal::User::"walt""#);
    assert_eq!(entry["resource"], r#"Portal::Invoice::"inv-1001""#);
}
