//! Envoy's external authorization over gRPC (`envoy.service.auth.v3.Authorization`)
//! and the gRPC health service, through the real server on the decision listener's one
//! port, asked by a tonic client over loopback: the portal decisions every HTTP proxy
//! dialect gets, malformed checks denied and never failed, the entity store's outage a
//! deny with 503, readiness, and the metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::grpc::{self, ask, check};
use common::jwt::{claims, TestKey, AUDIENCE, ISSUER};
use common::redis::RedisServer;
use common::{eventually, TestServer, DEADLINE};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use http::{Method, StatusCode};
use portcullis::config::{GatewayArgs, RedisArgs, ServeArgs};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// The portal model with the gateway trusting tokens signed by `key`.
async fn portal_with_jwt(dir: &tempfile::TempDir, key: &TestKey) -> TestServer {
    let pem = dir.path().join("login.pem");
    std::fs::write(&pem, &key.public_pem).unwrap();
    TestServer::start(ServeArgs {
        gateway: GatewayArgs {
            jwt_key_file: Some(pem),
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await
}

/// The gRPC status Envoy reads for the HTTP status the HTTP endpoints answer.
fn code_of(status: StatusCode) -> Code {
    match status {
        StatusCode::OK => Code::Ok,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        other => panic!("no gRPC code for {other}"),
    }
}

#[tokio::test]
async fn envoy_over_grpc_gets_the_decisions_of_every_http_dialect() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let server = portal_with_jwt(&dir, &key).await;
    let channel = grpc::channel(server.addr).await;
    for (story, method, path, token, status, policy) in common::gateway_cases::portal(&key) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("x-request-id", "req-envoy-1")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let a = ask(&channel, check(method, path, &headers)).await;
        assert_eq!(a.code, code_of(status), "{story}: {a:?}");
        assert_eq!(a.http_status, status.as_u16(), "{story}: {a:?}");
        // The original request's id names the check, so Envoy's log and ours agree.
        assert_eq!(a.header("x-request-id"), Some("req-envoy-1"), "{story}");
        assert_eq!(a.call_request_id.as_deref(), Some("req-envoy-1"), "{story}");
        // The same check over HTTP answers the same.
        let http = server
            .send(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &format!("/ext-authz{path}"),
                &headers,
                Vec::new(),
            )
            .await;
        assert_eq!(http.status, status, "{story}: over HTTP: {}", http.text);
        if status == StatusCode::OK {
            let principal = a.header("x-portcullis-principal").unwrap();
            assert!(principal.starts_with("Portal::User::"), "{story}");
            assert_eq!(principal, http.header("x-portcullis-principal").unwrap());
            assert_eq!(a.header("x-portcullis-policy"), Some(policy), "{story}");
            assert_eq!(
                a.header("x-portcullis-route"),
                http.header("x-portcullis-route"),
                "{story}"
            );
            assert!(a.header("x-portcullis-route").is_some(), "{story}");
        } else {
            assert!(a.header("x-portcullis-principal").is_none(), "{story}");
            assert_eq!(a.header("content-type"), Some("application/json"));
            assert!(a.json["error"].is_string(), "{story}: {}", a.body);
            assert_eq!(a.json["error"], http.json["error"], "{story}");
        }
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{story}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_check_that_does_not_name_the_original_request_is_denied_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let server = portal_with_jwt(&dir, &key).await;
    let channel = grpc::channel(server.addr).await;
    let bea = format!("Bearer {}", key.sign(&claims("bea")));
    let without_http = {
        let mut c = check("GET", "/accounts/acme/invoices/inv-1001", &[]);
        if let Some(request) = c.attributes.as_mut().and_then(|a| a.request.as_mut()) {
            request.http = None;
        }
        c
    };
    // (what is wrong, the check, what the message names)
    let cases: Vec<(&str, CheckRequest, &str)> = vec![
        (
            "no attributes at all",
            CheckRequest { attributes: None },
            "attributes.request.http",
        ),
        ("no HTTP request", without_http, "attributes.request.http"),
        (
            "no method",
            check(
                "",
                "/accounts/acme/invoices/inv-1001",
                &[("authorization", &bea)],
            ),
            "attributes.request.http.method",
        ),
        (
            "a method that is not one",
            check(
                "get me",
                "/accounts/acme/invoices/inv-1001",
                &[("authorization", &bea)],
            ),
            "attributes.request.http.method",
        ),
        (
            "no path",
            check("GET", "", &[("authorization", &bea)]),
            "attributes.request.http.path",
        ),
    ];
    for (story, request, named) in cases {
        let a = ask(&channel, request).await;
        assert_eq!(a.code, Code::InvalidArgument, "{story}: {a:?}");
        assert_eq!(a.http_status, 400, "{story}: {a:?}");
        assert_eq!(a.json["error"], "invalid_forward_auth_request", "{story}");
        assert!(
            a.json["message"].as_str().unwrap().contains(named),
            "{story}: {}",
            a.body
        );
        assert!(a.header("x-portcullis-principal").is_none(), "{story}");
    }
    // The service is still there and still decides.
    let a = ask(
        &channel,
        check(
            "GET",
            "/accounts/acme/invoices/inv-1001",
            &[("authorization", &bea)],
        ),
    )
    .await;
    assert_eq!(a.code, Code::Ok, "{a:?}");
    let metrics = server.admin_get("/metrics").await.text;
    let bad = common::metric(
        &metrics,
        r#"portcullis_errors_total{kind="invalid_forward_auth_request"}"#,
    );
    assert_eq!(bad, Some(5.0), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_claiming_the_gateway_headers_cannot_pass_them_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "namespace: Portal\ndefault: allow\nroutes:\n  - route: GET /accounts/{account}/invoices/{invoice}\n    action: ViewInvoice\n    resource: Portal::Invoice::\"{invoice}\"\n",
    )
    .unwrap();
    let mut args = ServeArgs::default();
    args.model.routes = Some(routes);
    let server = TestServer::start(args).await;
    let channel = grpc::channel(server.addr).await;
    let a = ask(
        &channel,
        check(
            "GET",
            "/help/faq",
            &[("x-portcullis-principal", r#"Portal::User::"olivia""#)],
        ),
    )
    .await;
    assert_eq!(a.code, Code::Ok, "{a:?}");
    assert!(a.header("x-portcullis-principal").is_none(), "{a:?}");
    for h in [
        "x-portcullis-principal",
        "x-portcullis-policy",
        "x-portcullis-route",
    ] {
        assert!(a.removed.iter().any(|r| r == h), "{h} is kept: {a:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_grpc_checks_under_their_own_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let server = portal_with_jwt(&dir, &key).await;
    let channel = grpc::channel(server.addr).await;
    let bea = format!("Bearer {}", key.sign(&claims("bea")));
    for path in [
        "/accounts/acme/invoices/inv-1001",
        "/accounts/globex/invoices/inv-9001",
    ] {
        ask(&channel, check("GET", path, &[("authorization", &bea)])).await;
    }
    let text = server.admin_get("/metrics").await.text;
    let route = r#"route="GET /accounts/{account}/invoices/{invoice}""#;
    for outcome in ["allow", "deny"] {
        let series = format!(
            r#"portcullis_gateway_checks_total{{outcome="{outcome}",protocol="envoy-grpc",{route}}}"#
        );
        assert_eq!(
            common::metric(&text, &series),
            Some(1.0),
            "{series}\n{text}"
        );
    }
    let timed = r#"portcullis_request_duration_seconds_count{endpoint="ext_authz_grpc"}"#;
    assert_eq!(common::metric(&text, timed), Some(2.0), "{text}");
    for l in text.lines().filter(|l| l.contains("envoy-grpc")) {
        assert!(!l.contains("inv-1001"), "an id leaked into {l}");
    }
    server.stop().await;
}

fn with_redis(redis: &RedisServer) -> ServeArgs {
    let mut args = ServeArgs {
        gateway: GatewayArgs {
            trusted_principal_header: Some("x-portal-user".to_string()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    };
    args.entity.redis = RedisArgs {
        redis_url: Some(redis.url()),
        redis_timeout_ms: 300,
        ..RedisArgs::default()
    };
    args
}

async fn import(redis: &RedisServer) {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/portal/entities.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["entities", "--redis-url", &redis.url(), "import", demo])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bea pays acme's invoice: a check that needs the entity store.
fn bea_pays() -> CheckRequest {
    check(
        "POST",
        "/accounts/acme/invoices/inv-1001/pay",
        &[("x-portal-user", "bea")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_entity_store_checks_are_denied_unavailable_and_health_says_so() {
    let mut redis = RedisServer::start();
    import(&redis).await;
    let server = TestServer::start(with_redis(&redis)).await;
    let channel = grpc::channel(server.addr).await;
    eventually("the server is ready", DEADLINE, || async {
        (grpc::health(&channel, "").await.ok() == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    assert_eq!(
        grpc::health(&channel, "envoy.service.auth.v3.Authorization")
            .await
            .unwrap(),
        ServingStatus::Serving
    );
    let unknown = grpc::health(&channel, "portal.Billing").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    // Nothing was asked yet, so nothing is cached: the check needs the store.
    redis.stop();
    let a = ask(&channel, bea_pays()).await;
    assert_eq!(a.code, Code::Unavailable, "{a:?}");
    assert_eq!(a.http_status, 503, "{a:?}");
    assert_eq!(a.json["error"], "entity_store_unavailable", "{a:?}");
    assert!(a.header("x-portcullis-principal").is_none(), "{a:?}");
    assert_eq!(
        grpc::health(&channel, "").await.unwrap(),
        ServingStatus::NotServing
    );
    let change = watch.message().await.unwrap().unwrap();
    assert_eq!(change.status(), ServingStatus::NotServing);
    // The HTTP probe agrees.
    assert_eq!(server.get("/readyz").await.status, 503);

    redis.start_again();
    import(&redis).await;
    eventually(
        "the health service says serving again",
        DEADLINE,
        || async {
            (grpc::health(&channel, "").await.ok() == Some(ServingStatus::Serving)).then_some(())
        },
    )
    .await;
    let change = watch.message().await.unwrap().unwrap();
    assert_eq!(change.status(), ServingStatus::Serving);
    eventually("checks are decided again", DEADLINE, || async {
        (ask(&channel, bea_pays()).await.code == Code::Ok).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn http_and_grpc_share_the_one_port_and_its_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let pem = dir.path().join("login.pem");
    std::fs::write(&pem, &key.public_pem).unwrap();
    let server_args = ServeArgs {
        max_body_bytes: 512,
        gateway: GatewayArgs {
            jwt_key_file: Some(pem),
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    };
    let server = TestServer::start(server_args).await;
    let channel = grpc::channel(server.addr).await;
    let padding = "x".repeat(2048);
    let too_large = check(
        "GET",
        "/accounts/acme/invoices/inv-1001",
        &[("x-padding", &padding)],
    );
    let refused =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            channel.clone(),
        )
        .check(too_large)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // The same connection and port still answer checks and HTTP.
    let bea = format!("Bearer {}", key.sign(&claims("bea")));
    let a = ask(
        &channel,
        check(
            "GET",
            "/accounts/acme/invoices/inv-1001",
            &[("authorization", &bea)],
        ),
    )
    .await;
    assert_eq!(a.code, Code::Ok, "{a:?}");
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    server.stop().await;
}

async fn closed_for_idleness(server: &TestServer) -> f64 {
    let text = server.admin_get("/metrics").await.text;
    common::metric(
        &text,
        r#"portcullis_connections_closed_total{listener="decision",reason="idle_timeout"}"#,
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_watch_keeps_its_connection_past_the_idle_timeout() {
    let mut redis = RedisServer::start();
    import(&redis).await;
    let mut args = with_redis(&redis);
    args.listener.idle_timeout_secs = 2;
    args.listener.header_read_timeout_secs = 1;
    let server = TestServer::start(args).await;
    let watching = grpc::channel(server.addr).await;
    eventually("the server is ready", DEADLINE, || async {
        (grpc::health(&watching, "").await.ok() == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    let mut watch = tonic_health::pb::health_client::HealthClient::new(watching.clone())
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    // Two connections opened after the watch, one after the other, each asking once
    // and then left without a stream until the idle timeout closes it: by then the
    // watch's connection has gone without a new request for longer than the idle and
    // header timeouts together.
    for closed in [1.0, 2.0] {
        let idle = grpc::channel(server.addr).await;
        grpc::health(&idle, "").await.unwrap();
        eventually("an idle connection is closed", DEADLINE, || async {
            (closed_for_idleness(&server).await >= closed).then_some(())
        })
        .await;
    }
    redis.stop();
    let change = watch
        .message()
        .await
        .map(|m| m.map(|m| m.status()))
        .map_err(|e| e.to_string());
    assert_eq!(
        change,
        Ok(Some(ServingStatus::NotServing)),
        "the watch's stream ended with its connection"
    );
    assert_eq!(closed_for_idleness(&server).await, 2.0);
    server.stop().await;
}

/// gRPC over TLS: the listener's certificate, `h2` chosen by ALPN.
mod tls {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use hyper_util::rt::TokioIo;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    type Io = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

    /// Connects to the server over TLS offering only `h2`, and keeps the protocol the
    /// server chose.
    #[derive(Clone)]
    struct TlsConnector {
        addr: std::net::SocketAddr,
        config: Arc<ClientConfig>,
        chosen: Arc<Mutex<Option<Vec<u8>>>>,
    }

    impl tonic::codegen::Service<http::Uri> for TlsConnector {
        type Response = Io;
        type Error = std::io::Error;
        type Future = Pin<Box<dyn Future<Output = Result<Io, std::io::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Uri) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                let tcp = tokio::net::TcpStream::connect(this.addr).await?;
                let tls = tokio_rustls::TlsConnector::from(this.config)
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                *this.chosen.lock().unwrap() = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                Ok(TokioIo::new(tls))
            })
        }
    }

    #[tokio::test]
    async fn envoy_asks_over_tls_with_h2_chosen_by_alpn() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        let mut args = ServeArgs {
            gateway: GatewayArgs {
                trusted_principal_header: Some("x-portal-user".to_string()),
                ..GatewayArgs::default()
            },
            ..ServeArgs::default()
        };
        args.tls.tls_cert = Some(dir.path().join("server.pem"));
        args.tls.tls_key = Some(dir.path().join("server.key"));
        let server = TestServer::start(args).await;

        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
            .unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector {
            addr: server.addr,
            config: Arc::new(config),
            chosen: Arc::default(),
        };
        let chosen = connector.chosen.clone();
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(connector)
            .await
            .unwrap();

        let a = ask(
            &channel,
            check(
                "GET",
                "/accounts/acme/invoices/inv-1001",
                &[("x-portal-user", "bea")],
            ),
        )
        .await;
        assert_eq!(a.code, Code::Ok, "{a:?}");
        assert_eq!(a.header("x-portcullis-policy"), Some("member-invoices"));
        let a = ask(
            &channel,
            check(
                "GET",
                "/accounts/acme/invoices/inv-1001",
                &[("x-portal-user", "walt")],
            ),
        )
        .await;
        assert_eq!(a.code, Code::PermissionDenied, "{a:?}");
        assert_eq!(
            grpc::health(&channel, "").await.unwrap(),
            ServingStatus::Serving
        );
        assert_eq!(chosen.lock().unwrap().as_deref(), Some(&b"h2"[..]));
        server.stop().await;
    }
}
