//! The portal's personas asking through a real proxy in front of an upstream (nginx,
//! Caddy): the status each request gets, and on an allow the principal and policies
//! the upstream is told. One table, so that no proxy's test can drift from another's.
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use http::{Method, StatusCode};
use serde_json::json;

use super::jwt::{claims, claims_2fa, now, TestKey};

/// (story, method, path, bearer token, status, what the upstream sees on 200:
/// `<principal> by <policies>`)
pub type ProxyCase = (
    &'static str,
    Method,
    &'static str,
    Option<String>,
    StatusCode,
    &'static str,
);

/// The cases, with tokens signed by `key` (and one by a stranger's key).
pub fn portal(key: &TestKey) -> Vec<ProxyCase> {
    let token = |c: serde_json::Value| key.sign(&c);
    let bea = token(claims("bea"));
    let bea_2fa = token(claims_2fa("bea"));
    let walt = token(claims("walt"));
    let olivia = token(claims("olivia"));
    let dev = token(claims("dev"));
    let dora = token(claims("dora"));
    let mut expired = claims("bea");
    expired["exp"] = json!(now() - 3600);
    let expired = token(expired);
    let stranger = TestKey::ed25519("login").sign(&claims("olivia"));
    vec![
        (
            "the owner views acme's invoice",
            Method::GET,
            "/accounts/acme/invoices/inv-1001",
            Some(olivia.clone()),
            StatusCode::OK,
            r#"Portal::User::"olivia" by member-invoices,owner-on-account-objects"#,
        ),
        (
            "the bookkeeper pays acme's invoice",
            Method::POST,
            "/accounts/acme/invoices/inv-1001/pay",
            Some(bea.clone()),
            StatusCode::OK,
            r#"Portal::User::"bea" by member-invoices"#,
        ),
        (
            "the bookkeeper may not see globex's invoice",
            Method::GET,
            "/accounts/globex/invoices/inv-9001",
            Some(bea.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "the bookkeeper needs a second factor for the payment method",
            Method::PUT,
            "/accounts/acme/payment-method",
            Some(bea.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "and with one may change it",
            Method::PUT,
            "/accounts/acme/payment-method",
            Some(bea_2fa.clone()),
            StatusCode::OK,
            r#"Portal::User::"bea" by member-payment-method"#,
        ),
        (
            "the webmaster may not see invoices",
            Method::GET,
            "/accounts/acme/invoices/inv-1001",
            Some(walt.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "the webmaster replies to acme's ticket",
            Method::POST,
            "/accounts/acme/tickets/t-2001/replies",
            Some(walt.clone()),
            StatusCode::OK,
            r#"Portal::User::"walt" by member-tickets"#,
        ),
        (
            "the developer manages globex's domain",
            Method::PUT,
            "/accounts/globex/domains/globex.example/whois",
            Some(dev.clone()),
            StatusCode::OK,
            r#"Portal::User::"dev" by member-managedomains"#,
        ),
        (
            "but not acme's",
            Method::PUT,
            "/accounts/acme/domains/acme.example/whois",
            Some(dev.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "the developer signs on to acme's service",
            Method::POST,
            "/accounts/acme/services/svc-3001/sso",
            Some(dev.clone()),
            StatusCode::OK,
            r#"Portal::User::"dev" by member-productsso"#,
        ),
        (
            "a disabled user can do nothing",
            Method::GET,
            "/accounts/acme/profile",
            Some(dora.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "only the owner manages users",
            Method::POST,
            "/accounts/acme/users",
            Some(bea.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "a path outside the table is denied",
            Method::GET,
            "/admin",
            Some(olivia.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "no token",
            Method::GET,
            "/accounts/acme/invoices/inv-1001",
            None,
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            "an expired token",
            Method::GET,
            "/accounts/acme/invoices/inv-1001",
            Some(expired.clone()),
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            "a token signed by a stranger",
            Method::GET,
            "/accounts/acme/invoices/inv-1001",
            Some(stranger.clone()),
            StatusCode::UNAUTHORIZED,
            "",
        ),
    ]
}
