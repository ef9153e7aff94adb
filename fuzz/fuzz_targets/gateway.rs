//! Gateway forward-auth: a proxy's check request (nginx mode `0`, Traefik `1`, Envoy
//! `2`) read for the original request, matched against the shipped route table,
//! identified by the trusted header `x-portal-user` and decided on the demo data.
//!
//! Input after the mode byte: a first line `METHOD TARGET` (the check request's
//! method and path), then `name: value` header lines.
//!
//! Holds: no panic; an allow names a route of the table and the principal the trusted
//! header named; no allow for a path with empty, `.` or `..` segments or an encoded
//! `/`; a matched path rebuilt from its route and values matches the same route with
//! the same values.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use portcullis::config::{ClientIpFrom, GatewayArgs};
use portcullis::decision::Call;
use portcullis::entities::FileSource;
use portcullis::gateway::{protocol, Gateway, GatewaySettings, Protocol, Verdict};
use portcullis::model::routes::split_path;
use portcullis_fuzz::{block_on, mode, snapshot};

const USER: &str = "x-portal-user";

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let settings = GatewaySettings::from_args(&GatewayArgs {
            trusted_principal_header: Some(USER.to_string()),
            trusted_second_factor_header: Some("x-portal-mfa".to_string()),
            client_ip_from: ClientIpFrom::XForwardedFor,
            ..GatewayArgs::default()
        })
        .expect("the trusted header settings are valid");
        Gateway::new(settings, &prometheus::Registry::new()).expect("gateway metrics register")
    })
}

/// The check request the input describes; lines that are no header are skipped, as
/// the HTTP server would have refused them before the gateway saw anything.
fn check_request(text: &[u8]) -> (Method, String, HeaderMap) {
    let mut lines = text.split(|b| *b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first.as_str()));
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    (method, target.to_string(), headers)
}

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = mode(data, 3);
    let protocol = [Protocol::Nginx, Protocol::Traefik, Protocol::Envoy][usize::from(mode)];
    let (method, target, headers) = check_request(rest);
    let snapshot = snapshot();
    let gateway = gateway();
    let mut call = Call::unrecorded();
    let verdict = block_on(gateway.check(
        snapshot,
        &FileSource,
        &mut call,
        protocol,
        &method,
        &target,
        &headers,
    ));
    let table = snapshot
        .routes
        .as_ref()
        .expect("the shipped model has routes");
    let original = protocol::original(
        protocol,
        &method,
        &target,
        &headers,
        &gateway.settings.ext_authz_prefix,
    );
    if let Verdict::Allow {
        principal, route, ..
    } = &verdict
    {
        assert!(
            table.routes().iter().any(|r| &r.template == route),
            "allowed on `{route}`, which is not a route of the table"
        );
        let named = headers
            .get(USER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or_default();
        assert_eq!(principal.id().unescaped(), named, "{verdict:?}");
        let original = original
            .as_ref()
            .expect("an allowed check names its request");
        assert!(
            split_path(&original.uri).is_some(),
            "allowed `{}`, a path no route may match",
            original.uri
        );
    }
    let Ok(original) = original else {
        return;
    };
    if let Some(segments) = split_path(&original.uri) {
        for s in &segments {
            assert!(
                !s.is_empty() && s != "." && s != ".." && !s.contains('/'),
                "`{}` split into segment `{s}`",
                original.uri
            );
        }
    }
    let Some(found) = table.find(&original.method, &original.uri) else {
        return;
    };
    let value_of = |name: &str| {
        found
            .vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let rebuilt = found.route.path_with(value_of);
    let again = table
        .find(found.route.method(), &rebuilt)
        .unwrap_or_else(|| panic!("`{rebuilt}` (from `{}`) matches no route", original.uri));
    assert_eq!(again.route.template, found.route.template, "`{rebuilt}`");
    assert_eq!(again.vars, found.vars, "`{rebuilt}`");
});
