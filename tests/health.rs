#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
mod common;

use common::TestServer;

#[tokio::test]
async fn health_and_readiness_answer_on_the_portal_demo() {
    let server = TestServer::portal().await;
    let health = server.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json["status"], "ok");
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    server.stop().await;
}
