//! Signing keys fetched from an identity provider (`--jwt-jwks-url`,
//! `--jwt-oidc-discovery`): the service is ready only with a first key set, picks up
//! a rotation without a restart, and keeps the last good set while the provider is
//! down. The provider is a small HTTP server of the test on `127.0.0.1:0`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::jwt::{claims, jwks, TestKey, AUDIENCE, ISSUER};
use common::{eventually, metric, TestServer, DEADLINE};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portcullis::config::{GatewayArgs, ServeArgs};
use portcullis::gateway::Authenticator;
use serde_json::json;
use tokio::net::TcpListener;

/// What the identity provider publishes: its JWKS at `/jwks`, its OpenID
/// configuration at `/.well-known/openid-configuration`, or, while down, 503s.
struct Published {
    jwks: String,
    down: bool,
}

/// An identity provider on a loopback port, until dropped.
struct Idp {
    addr: SocketAddr,
    published: Arc<Mutex<Published>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Idp {
    async fn start(jwks: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let published = Arc::new(Mutex::new(Published { jwks, down: false }));
        let shared = published.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let published = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let published = published.clone();
                        async move {
                            let p = published.lock().unwrap();
                            let (status, body) = match (p.down, req.uri().path()) {
                                (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "down".to_string()),
                                (false, "/jwks") => (StatusCode::OK, p.jwks.clone()),
                                (false, "/.well-known/openid-configuration") => (
                                    StatusCode::OK,
                                    json!({
                                        "issuer": format!("http://{addr}"),
                                        "jwks_uri": format!("http://{addr}/jwks"),
                                    })
                                    .to_string(),
                                ),
                                _ => (StatusCode::NOT_FOUND, String::new()),
                            };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            published,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn publish(&self, keys: &[&TestKey]) {
        let mut p = self.published.lock().unwrap();
        p.jwks = jwks(keys);
        p.down = false;
    }

    fn go_down(&self) {
        self.published.lock().unwrap().down = true;
    }
}

fn args(jwks_url: &str, refresh_secs: u64) -> ServeArgs {
    ServeArgs {
        gateway: GatewayArgs {
            jwt_jwks_url: Some(jwks_url.to_string()),
            jwt_jwks_refresh_secs: refresh_secs,
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    }
}

/// The status of bea's request to view acme's invoice, through Traefik's endpoint.
async fn view_invoice(server: &TestServer, token: &str) -> common::Reply {
    let auth = format!("Bearer {token}");
    common::send(
        server.addr,
        Method::GET,
        "/forward-auth/traefik",
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/accounts/acme/invoices/inv-1001"),
            ("authorization", &auth),
        ],
        Vec::new(),
    )
    .await
}

async fn failures(server: &TestServer) -> f64 {
    let text = server.admin_get("/metrics").await.text;
    metric(&text, "portcullis_jwks_refresh_failures_total").unwrap_or(0.0)
}

#[tokio::test]
async fn the_service_is_not_ready_until_a_first_key_set_arrives() {
    let login = TestKey::ed25519("login-1");
    let idp = Idp::start(jwks(&[&login])).await;
    idp.go_down();
    let server = TestServer::start(args(&idp.url(), 300)).await;
    let bea = login.sign(&claims("bea"));

    // While the provider fails, the service says it is starting, names the JWKS, and
    // identifies no one (503, not 401: the token may well be good).
    eventually("a failed first fetch is counted", DEADLINE, || async {
        (failures(&server).await >= 1.0).then_some(())
    })
    .await;
    for listener in [server.addr, server.admin_addr] {
        let ready = common::send(listener, Method::GET, "/readyz", &[], Vec::new()).await;
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            ready.text
        );
        assert_eq!(ready.json["status"], "starting");
        assert!(
            ready.json["reason"].as_str().unwrap().contains(&idp.url()),
            "{}",
            ready.text
        );
    }
    let r = view_invoice(&server, &bea).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["error"], "identity_keys_unavailable");

    // When the provider comes up, the service becomes ready and bea gets in, without
    // waiting for the five-minute refresh.
    idp.publish(&[&login]);
    eventually("ready once the keys arrived", DEADLINE, || async {
        (server.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    let r = view_invoice(&server, &bea).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    server.stop().await;
}

#[tokio::test]
async fn a_token_of_a_rotated_in_key_is_accepted_without_a_restart() {
    let old = TestKey::ed25519("login-1");
    let new = TestKey::p256("login-2");
    let idp = Idp::start(jwks(&[&old])).await;
    // A refresh far beyond the test: only the fetch an unknown `kid` asks for can
    // bring the new key in.
    let server = TestServer::start(args(&idp.url(), 3600)).await;
    eventually("ready", DEADLINE, || async {
        (server.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    let by_old = old.sign(&claims("bea"));
    let by_new = new.sign(&claims("bea"));
    assert_eq!(view_invoice(&server, &by_old).await.status, StatusCode::OK);
    assert_eq!(
        view_invoice(&server, &by_new).await.status,
        StatusCode::UNAUTHORIZED,
        "the new key is not published yet"
    );

    idp.publish(&[&new]);
    eventually("the new key is accepted", DEADLINE, || async {
        (view_invoice(&server, &by_new).await.status == StatusCode::OK).then_some(())
    })
    .await;
    let r = view_invoice(&server, &by_old).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the retired key no longer verifies: {}",
        r.text
    );
    assert!(r.text.contains("unknown key id `login-1`"), "{}", r.text);
    server.stop().await;
}

#[tokio::test]
async fn while_the_identity_provider_is_down_the_last_good_keys_keep_serving() {
    let login = TestKey::ed25519("login-1");
    let next = TestKey::ed25519("login-2");
    let idp = Idp::start(jwks(&[&login])).await;
    let server = TestServer::start(args(&idp.url(), 1)).await;
    eventually("ready", DEADLINE, || async {
        (server.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    let bea = login.sign(&claims("bea"));
    assert_eq!(view_invoice(&server, &bea).await.status, StatusCode::OK);
    assert_eq!(failures(&server).await, 0.0);

    idp.go_down();
    eventually("the failing refreshes are counted", DEADLINE, || async {
        (failures(&server).await >= 2.0).then_some(())
    })
    .await;
    let r = view_invoice(&server, &bea).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the last good set serves: {}",
        r.text
    );
    assert_eq!(server.get("/readyz").await.status, StatusCode::OK);

    // A document without a usable key is a failure too, and changes nothing.
    {
        let mut p = idp.published.lock().unwrap();
        p.jwks = json!({"keys": []}).to_string();
        p.down = false;
    }
    let before = failures(&server).await;
    eventually("the unusable document is counted", DEADLINE, || async {
        (failures(&server).await > before).then_some(())
    })
    .await;
    assert_eq!(view_invoice(&server, &bea).await.status, StatusCode::OK);

    // Back with a rotated set: the periodic refresh installs it.
    idp.publish(&[&next]);
    eventually("the old key is dropped", DEADLINE, || async {
        (view_invoice(&server, &bea).await.status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    let r = view_invoice(&server, &next.sign(&claims("bea"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    server.stop().await;
}

#[tokio::test]
async fn oidc_discovery_finds_the_keys_the_issuer_names() {
    let login = TestKey::ed25519("login-1");
    let idp = Idp::start(jwks(&[&login])).await;
    let issuer = format!("http://{}", idp.addr);
    let server = TestServer::start(ServeArgs {
        gateway: GatewayArgs {
            jwt_oidc_discovery: true,
            jwt_issuer: Some(issuer.clone()),
            jwt_audience: Some(AUDIENCE.into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    eventually("ready", DEADLINE, || async {
        (server.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    let mut c = claims("bea");
    c["iss"] = json!(issuer);
    let r = view_invoice(&server, &login.sign(&c)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    server.stop().await;
}

#[test]
fn keys_are_fetched_only_over_https_or_from_loopback() {
    let with = |url: &str| {
        Authenticator::from_args(&GatewayArgs {
            jwt_jwks_url: Some(url.to_string()),
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            ..GatewayArgs::default()
        })
        .map(|a| a.kind())
    };
    for good in [
        "https://login.portal.example/jwks",
        "http://127.0.0.1:8000/jwks",
        "http://[::1]:8000/jwks",
        "http://localhost/jwks",
    ] {
        assert_eq!(with(good), Ok("jwt"), "{good}");
    }
    for bad in [
        "http://login.portal.example/jwks",
        "http://10.0.0.1/jwks",
        "ftp://127.0.0.1/jwks",
        "/jwks",
    ] {
        let e = with(bad).unwrap_err();
        assert!(e.contains("--jwt-jwks-url"), "{bad}: {e}");
    }
    // A second key source, or discovery as well, is refused.
    let both = Authenticator::from_args(&GatewayArgs {
        jwt_jwks_url: Some("https://login.portal.example/jwks".into()),
        jwt_oidc_discovery: true,
        jwt_issuer: Some(ISSUER.into()),
        jwt_audience: Some(AUDIENCE.into()),
        ..GatewayArgs::default()
    });
    assert!(both.unwrap_err().contains("exactly one"));
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_leaves_the_set() {
    let old = TestKey::ed25519("login-1");
    let new = TestKey::ed25519("login-2");
    let idp = Idp::start(jwks(&[&old, &new])).await;
    let server = TestServer::start(args(&idp.url(), 1)).await;
    eventually("ready", DEADLINE, || async {
        (server.get("/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
    // Verified once, then answered from the verified-token cache.
    let by_old = old.sign(&claims("bea"));
    for _ in 0..3 {
        assert_eq!(view_invoice(&server, &by_old).await.status, StatusCode::OK);
    }
    // The provider retires the old key; the periodic refresh installs the new set,
    // and the cached token is no longer accepted.
    idp.publish(&[&new]);
    let refused = eventually("the cached token is refused", DEADLINE, || async {
        let r = view_invoice(&server, &by_old).await;
        (r.status == StatusCode::UNAUTHORIZED).then_some(r)
    })
    .await;
    assert!(
        refused.text.contains("unknown key id `login-1`"),
        "{}",
        refused.text
    );
    assert_eq!(
        view_invoice(&server, &new.sign(&claims("bea")))
            .await
            .status,
        StatusCode::OK
    );
    server.stop().await;
}
