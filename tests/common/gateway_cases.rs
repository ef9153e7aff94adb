//! The portal's forward-auth decisions as a table every proxy dialect is checked
//! against (nginx, Traefik, Envoy over HTTP and over gRPC), so that no surface can
//! drift from the others.
#![allow(dead_code, clippy::unwrap_used)]

use http::StatusCode;

use super::jwt::{claims, claims_2fa, TestKey};

/// (story, method, path, bearer token, HTTP status, determining policy on allow)
pub type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<String>,
    StatusCode,
    &'static str,
);

/// The portal's personas asking through a proxy: allowed, denied, unauthenticated,
/// unmatched and hostile paths. Tokens are signed by `key`.
pub fn portal(key: &TestKey) -> Vec<Case> {
    let bea = key.sign(&claims("bea"));
    let bea_2fa = key.sign(&claims_2fa("bea"));
    let walt = key.sign(&claims("walt"));
    let olivia = key.sign(&claims("olivia"));
    let dev = key.sign(&claims("dev"));
    let dora = key.sign(&claims("dora"));
    let carl = key.sign(&claims("carl"));
    // (story, method, path, token, status, determining policy on allow)
    vec![
        (
            "the bookkeeper may view acme's invoice",
            "GET",
            "/accounts/acme/invoices/inv-1001",
            Some(bea.clone()),
            StatusCode::OK,
            "member-invoices",
        ),
        (
            "the bookkeeper may pay acme's invoice",
            "POST",
            "/accounts/acme/invoices/inv-1001/pay",
            Some(bea.clone()),
            StatusCode::OK,
            "member-invoices",
        ),
        (
            "the bookkeeper may not see globex's invoice",
            "GET",
            "/accounts/globex/invoices/inv-9001",
            Some(bea.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "nor by naming acme in the path",
            "GET",
            "/accounts/acme/invoices/inv-9001",
            Some(bea.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "the bookkeeper may not change the payment method without a second factor",
            "PUT",
            "/accounts/acme/payment-method",
            Some(bea.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "the bookkeeper may change it with a one-time password",
            "PUT",
            "/accounts/acme/payment-method",
            Some(bea_2fa.clone()),
            StatusCode::OK,
            "member-payment-method",
        ),
        (
            "the webmaster may not see invoices",
            "GET",
            "/accounts/acme/invoices/inv-1001",
            Some(walt.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "the webmaster may open a ticket",
            "POST",
            "/accounts/acme/tickets",
            Some(walt.clone()),
            StatusCode::OK,
            "member-open-ticket",
        ),
        (
            "the owner manages acme's users",
            "POST",
            "/accounts/acme/users",
            Some(olivia.clone()),
            StatusCode::OK,
            "owner-on-account",
        ),
        (
            "the developer manages globex's nameservers",
            "PUT",
            "/accounts/globex/domains/globex.example/nameservers",
            Some(dev.clone()),
            StatusCode::OK,
            "member-managedomains",
        ),
        (
            "but not acme's",
            "PUT",
            "/accounts/acme/domains/acme.example/nameservers",
            Some(dev.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "a disabled user can do nothing",
            "GET",
            "/accounts/acme/invoices/inv-1001",
            Some(dora.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "a contact never logs in",
            "POST",
            "/accounts/acme/login",
            Some(carl.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "no token is unauthenticated",
            "GET",
            "/accounts/acme/invoices/inv-1001",
            None,
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            "a garbage token is unauthenticated",
            "GET",
            "/accounts/acme/invoices/inv-1001",
            Some("not.a.token".to_string()),
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            "a path outside the table is denied",
            "GET",
            "/accounts/acme/secrets",
            Some(olivia.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            "a dot segment never matches",
            "GET",
            "/accounts/acme/invoices/../users",
            Some(olivia.clone()),
            StatusCode::FORBIDDEN,
            "",
        ),
    ]
}
