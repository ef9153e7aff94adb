//! The gateway endpoints through the real server: each proxy's dialect, the statuses
//! a proxy understands, the headers it may pass upstream, and the metrics.
// Case tables are tuples, read like the tables in the domain document.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;

use common::jwt::{claims, TestKey, AUDIENCE, ISSUER};
use common::TestServer;
use http::{Method, StatusCode};
use portcullis::config::{GatewayArgs, ServeArgs};

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

/// Asks the gateway about `method path` in `protocol`'s dialect.
async fn ask(
    server: &TestServer,
    protocol: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> common::Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    match protocol {
        "nginx" => {
            headers.push(("x-original-method", method));
            headers.push(("x-original-uri", path));
            server
                .send(Method::GET, "/forward-auth/nginx", &headers, Vec::new())
                .await
        }
        "traefik" => {
            headers.push(("x-forwarded-method", method));
            headers.push(("x-forwarded-uri", path));
            headers.push(("x-forwarded-host", "portal.example"));
            server
                .send(Method::GET, "/forward-auth/traefik", &headers, Vec::new())
                .await
        }
        "envoy" => {
            server
                .send(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &format!("/ext-authz{path}"),
                    &headers,
                    Vec::new(),
                )
                .await
        }
        other => panic!("unknown protocol {other}"),
    }
}

#[tokio::test]
async fn each_proxy_gets_the_portal_decisions_in_its_own_dialect() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let server = portal_with_jwt(&dir, &key).await;
    let cases = common::gateway_cases::portal(&key);
    for protocol in ["nginx", "traefik", "envoy"] {
        for (story, method, path, token, status, policy) in &cases {
            let r = ask(&server, protocol, method, path, token.as_deref()).await;
            assert_eq!(r.status, *status, "{protocol}: {story}: {}", r.text);
            assert!(r.header("x-request-id").is_some(), "{protocol}: {story}");
            if *status == StatusCode::OK {
                let principal = r.header("x-portcullis-principal").unwrap();
                assert!(
                    principal.starts_with("Portal::User::"),
                    "{protocol}: {story}"
                );
                assert_eq!(
                    r.header("x-portcullis-policy"),
                    Some(*policy),
                    "{protocol}: {story}"
                );
            } else {
                assert!(
                    r.header("x-portcullis-principal").is_none(),
                    "{protocol}: {story}"
                );
                assert!(
                    r.json["error"].is_string(),
                    "{protocol}: {story}: {}",
                    r.text
                );
            }
            if *status == StatusCode::UNAUTHORIZED {
                assert_eq!(
                    r.header("www-authenticate"),
                    Some("Bearer"),
                    "{protocol}: {story}"
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_check_request_that_does_not_name_the_original_request_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let server = portal_with_jwt(&dir, &key).await;
    let cases: &[(&str, &[(&str, &str)], &str)] = &[
        (
            "/forward-auth/nginx",
            &[("x-original-method", "GET")],
            "X-Original-URI",
        ),
        (
            "/forward-auth/nginx",
            &[("x-original-uri", "/accounts/acme/profile")],
            "X-Original-Method",
        ),
        (
            "/forward-auth/traefik",
            &[("x-forwarded-uri", "/accounts/acme/profile")],
            "X-Forwarded-Method",
        ),
    ];
    for (endpoint, headers, named) in cases {
        let r = server
            .send(Method::GET, endpoint, headers, Vec::new())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{endpoint} {headers:?}");
        assert_eq!(r.json["error"], "invalid_forward_auth_request");
        assert!(
            r.json["message"].as_str().unwrap().contains(named),
            "{}",
            r.text
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_checks_per_route_template_never_per_path() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let server = portal_with_jwt(&dir, &key).await;
    let bea = key.sign(&claims("bea"));
    ask(
        &server,
        "nginx",
        "GET",
        "/accounts/acme/invoices/inv-1001",
        Some(&bea),
    )
    .await;
    ask(
        &server,
        "nginx",
        "GET",
        "/accounts/globex/invoices/inv-9001",
        Some(&bea),
    )
    .await;
    ask(
        &server,
        "traefik",
        "GET",
        "/accounts/acme/nowhere",
        Some(&bea),
    )
    .await;
    let text = server.admin_get("/metrics").await.text;
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with("portcullis_gateway_checks_total{") && l.contains(needle))
            .map(str::to_string)
    };
    let allow = line(r#"outcome="allow""#).expect("an allow is counted");
    assert!(
        allow.contains(r#"route="GET /accounts/{account}/invoices/{invoice}""#),
        "{allow}"
    );
    assert!(allow.contains(r#"protocol="nginx""#), "{allow}");
    assert!(allow.ends_with(" 1"), "{allow}");
    // Labels are exported in name order: outcome, protocol, route.
    let deny = line(
        r#"outcome="deny",protocol="nginx",route="GET /accounts/{account}/invoices/{invoice}""#,
    )
    .expect("a deny is counted");
    assert!(deny.ends_with(" 1"), "{deny}");
    let unmatched = line(r#"route="unmatched""#).expect("an unmatched request is counted");
    assert!(unmatched.contains(r#"protocol="traefik""#), "{unmatched}");
    for l in text.lines().filter(|l| l.starts_with("portcullis_gateway")) {
        assert!(
            !l.contains("inv-1001") && !l.contains("acme"),
            "an id leaked into {l}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_trusted_header_identifies_callers_when_enabled() {
    let server = TestServer::start(ServeArgs {
        gateway: GatewayArgs {
            trusted_principal_header: Some("X-Auth-User".into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    let ask = |user: Option<&'static str>| {
        let mut headers = vec![
            ("x-original-method", "GET"),
            ("x-original-uri", "/accounts/acme/invoices/inv-1001"),
        ];
        if let Some(u) = user {
            headers.push(("x-auth-user", u));
        }
        let server = &server;
        async move {
            server
                .send(Method::GET, "/forward-auth/nginx", &headers, Vec::new())
                .await
                .status
        }
    };
    assert_eq!(ask(Some("bea")).await, StatusCode::OK);
    assert_eq!(ask(Some("walt")).await, StatusCode::FORBIDDEN);
    assert_eq!(ask(None).await, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn a_second_factor_header_sent_twice_is_refused() {
    let server = TestServer::start(ServeArgs {
        gateway: GatewayArgs {
            trusted_principal_header: Some("X-Auth-User".into()),
            trusted_second_factor_header: Some("X-Auth-2FA".into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    let ask = |second_factor: &'static [&'static str]| {
        let mut headers = vec![
            ("x-original-method", "PUT"),
            ("x-original-uri", "/accounts/acme/payment-method"),
            ("x-auth-user", "bea"),
        ];
        for v in second_factor {
            headers.push(("x-auth-2fa", v));
        }
        let server = &server;
        async move {
            server
                .send(Method::GET, "/forward-auth/nginx", &headers, Vec::new())
                .await
        }
    };
    assert_eq!(ask(&["true"]).await.status, StatusCode::OK);
    assert_eq!(ask(&[]).await.status, StatusCode::FORBIDDEN);
    // Which copy a proxy chain puts first is not a fact to authorize on.
    for twice in [
        &["true", "false"][..],
        &["false", "true"],
        &["true", "true"],
    ] {
        let reply = ask(twice).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{twice:?}");
        assert!(reply.text.contains("x-auth-2fa"), "{}", reply.text);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_path_variable_that_is_not_a_plain_id_matches_no_route() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::ed25519("login");
    let server = portal_with_jwt(&dir, &key).await;
    let olivia = key.sign(&claims("olivia"));
    // The owner may remove acme's users, so each of these was a 200 whose path went
    // on to the upstream, where `..;` or a backslash can mean another resource.
    assert_eq!(
        ask(
            &server,
            "nginx",
            "DELETE",
            "/accounts/acme/users/bea",
            Some(&olivia)
        )
        .await
        .status,
        StatusCode::OK
    );
    for value in [
        "..;",
        "..;%2Fadmin",
        "..%5C..%5Cadmin",
        "%EF%BC%8F..%EF%BC%8Fadmin",
        "bea%00",
        "bea%0D%0AX-Injected:%201",
    ] {
        for path in [
            format!("/accounts/acme/users/{value}"),
            format!("/accounts/{value}/users/bea"),
        ] {
            for protocol in ["nginx", "traefik", "envoy"] {
                let reply = ask(&server, protocol, "DELETE", &path, Some(&olivia)).await;
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{protocol} {path}");
                assert_eq!(reply.json["error"], "no_route", "{protocol} {path}");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn without_an_identity_source_matched_routes_are_refused() {
    let server = TestServer::portal().await;
    let r = server
        .send(
            Method::GET,
            "/forward-auth/nginx",
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/accounts/acme/invoices/inv-1001"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["error"], "gateway_not_configured");
    server.stop().await;
}

#[tokio::test]
async fn a_table_may_let_unmatched_requests_through() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "namespace: Portal\ndefault: allow\nroutes:\n  - route: GET /accounts/{account}/invoices/{invoice}\n    action: ViewInvoice\n    resource: Portal::Invoice::\"{invoice}\"\n",
    )
    .unwrap();
    let server = TestServer::start(ServeArgs {
        model: portcullis::config::ModelArgs {
            routes: Some(routes),
            ..Default::default()
        },
        gateway: GatewayArgs {
            trusted_principal_header: Some("X-Auth-User".into()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    let r = server
        .send(
            Method::GET,
            "/forward-auth/traefik",
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/help/faq"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = server
        .send(
            Method::GET,
            "/forward-auth/traefik",
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/accounts/acme/invoices/inv-1001"),
                ("x-auth-user", "walt"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    server.stop().await;
}

#[test]
fn a_route_table_that_does_not_fit_the_schema_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "namespace: Portal\nroutes:\n  - route: GET /accounts/{account}/invoices/{invoice}\n    action: ViewInvoices\n    resource: Portal::Invoice::\"{invoice}\"\n",
    )
    .unwrap();
    let args = ServeArgs {
        model: portcullis::config::ModelArgs {
            routes: Some(routes.clone()),
            ..Default::default()
        },
        ..ServeArgs::default()
    };
    let err = portcullis::http::App::build(&args)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(&format!("{}:3:", routes.display())),
        "{err}"
    );
    assert!(err.contains("ViewInvoices"), "{err}");
}

#[tokio::test]
async fn the_client_address_reaches_the_policies_only_from_the_trusted_header() {
    // The shipped policies plus one that blocks a documentation network.
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for (name, text) in portcullis::model::embedded::POLICIES {
        let file = std::path::Path::new(name).file_name().unwrap();
        std::fs::write(policies.join(file), text).unwrap();
    }
    std::fs::write(
        policies.join("blocklist.cedar"),
        "@id(\"blocked-network\")\nforbid (principal, action, resource)\nwhen { context has clientIp && context.clientIp.isInRange(ip(\"203.0.113.0/24\")) };\n",
    )
    .unwrap();
    let server = TestServer::start(ServeArgs {
        model: portcullis::config::ModelArgs {
            policies: Some(policies),
            ..Default::default()
        },
        gateway: GatewayArgs {
            trusted_principal_header: Some("X-Auth-User".into()),
            client_ip_from: portcullis::config::ClientIpFrom::XForwardedFor,
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    // (story, X-Forwarded-For, status)
    let cases = [
        (
            "the bookkeeper from an ordinary address",
            "198.51.100.7",
            StatusCode::OK,
        ),
        (
            "the bookkeeper from the blocked network",
            "203.0.113.9",
            StatusCode::FORBIDDEN,
        ),
        (
            "a client-written entry before the proxy's is ignored",
            "203.0.113.9, 198.51.100.7",
            StatusCode::OK,
        ),
        (
            "the proxy's entry counts even after a client-written one",
            "198.51.100.7, 203.0.113.9",
            StatusCode::FORBIDDEN,
        ),
        (
            "an unreadable address is left out of the context",
            "not-an-address",
            StatusCode::OK,
        ),
    ];
    for (story, xff, status) in cases {
        let r = server
            .send(
                Method::GET,
                "/forward-auth/nginx",
                &[
                    ("x-original-method", "GET"),
                    ("x-original-uri", "/accounts/acme/invoices/inv-1001"),
                    ("x-auth-user", "bea"),
                    ("x-forwarded-for", xff),
                ],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, status, "{story}: {}", r.text);
    }
    server.stop().await;
}
