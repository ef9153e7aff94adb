//! The three proxy dialects: how each proxy tells Portcullis which request it is
//! asking about, and where the client's address may be read.

use std::net::IpAddr;
use std::str::FromStr;

use http::{HeaderMap, Method};

use crate::config::ClientIpFrom;

/// Which proxy is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// nginx `auth_request`: the subrequest carries `X-Original-Method` and
    /// `X-Original-URI`, set in the nginx configuration.
    Nginx,
    /// Traefik ForwardAuth: `X-Forwarded-Method`, `X-Forwarded-Uri` and
    /// `X-Forwarded-Host`, set by Traefik itself.
    Traefik,
    /// Envoy HTTP ext_authz: the check request keeps the original method, and its path
    /// is the original path after a configured prefix.
    Envoy,
    /// Envoy gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`): the original
    /// method, path and headers arrive as `attributes.request.http` of the check.
    EnvoyGrpc,
}

impl Protocol {
    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Nginx => "nginx",
            Protocol::Traefik => "traefik",
            Protocol::Envoy => "envoy",
            Protocol::EnvoyGrpc => "envoy-grpc",
        }
    }
}

/// The request the proxy asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub method: Method,
    /// Path and query as the client sent them.
    pub uri: String,
    pub host: Option<String>,
}

/// Why a check request cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The check request does not say which request it is about: a proxy configuration
    /// mistake, answered with 400 (which every proxy treats as a deny).
    #[error("{0}")]
    Incomplete(String),
    /// The original path holds raw bytes that are not ASCII text (nginx forwards them
    /// as the client sent them): no route can match it, so the request is denied like
    /// any request no route allows, with a 403 the proxy passes on as such.
    #[error("{0}")]
    Unmatchable(String),
}

use ProtocolError::Incomplete;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ProtocolError> {
    headers
        .get(name)
        .ok_or_else(|| Incomplete(format!("header `{name}` is missing")))?
        .to_str()
        .map(str::trim)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Incomplete(format!("header `{name}` is empty or not text")))
}

/// The header naming the original URI: missing or empty is a configuration mistake,
/// present but not ASCII text is a path no route can match.
fn uri_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ProtocolError> {
    let value = headers
        .get(name)
        .ok_or_else(|| Incomplete(format!("header `{name}` is missing")))?;
    let text = value.to_str().map_err(|_| {
        ProtocolError::Unmatchable(format!(
            "the path in `{name}` is not ASCII text: no route matches it"
        ))
    })?;
    Some(text.trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Incomplete(format!("header `{name}` is empty")))
}

fn method(value: &str, name: &str) -> Result<Method, ProtocolError> {
    Method::from_str(value)
        .ok()
        .filter(|_| value.chars().all(|c| c.is_ascii_uppercase()))
        .ok_or_else(|| Incomplete(format!("header `{name}`: invalid method `{value}`")))
}

/// An original URI as a path and query; an absolute URI (`http://host/path`) is cut to
/// its path.
fn path_and_query(value: &str, name: &str) -> Result<String, ProtocolError> {
    if value.starts_with('/') {
        return Ok(value.to_string());
    }
    let uri = http::Uri::from_str(value)
        .map_err(|_| Incomplete(format!("header `{name}`: invalid URI `{value}`")))?;
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| Incomplete(format!("header `{name}`: `{value}` has no path")))
}

/// The original request of an Envoy gRPC check: its method and path (with the query)
/// as Envoy's `attributes.request.http` names them, and its host.
pub fn envoy_grpc(method_name: &str, path: &str, host: &str) -> Result<Original, ProtocolError> {
    const METHOD: &str = "attributes.request.http.method";
    const PATH: &str = "attributes.request.http.path";
    if method_name.is_empty() {
        return Err(Incomplete(format!("`{METHOD}` is missing")));
    }
    if path.is_empty() {
        return Err(Incomplete(format!("`{PATH}` is missing")));
    }
    Ok(Original {
        method: method(method_name, METHOD)?,
        uri: path_and_query(path, PATH)?,
        host: Some(host.to_string()).filter(|h| !h.is_empty()),
    })
}

/// Reads the original request from a check request.
pub fn original(
    protocol: Protocol,
    method_of_check: &Method,
    target_of_check: &str,
    headers: &HeaderMap,
    envoy_prefix: &str,
) -> Result<Original, ProtocolError> {
    match protocol {
        Protocol::Nginx => Ok(Original {
            method: method(header(headers, "X-Original-Method")?, "X-Original-Method")?,
            uri: path_and_query(uri_header(headers, "X-Original-URI")?, "X-Original-URI")?,
            host: header(headers, "host").ok().map(str::to_string),
        }),
        Protocol::Traefik => Ok(Original {
            method: method(header(headers, "X-Forwarded-Method")?, "X-Forwarded-Method")?,
            uri: path_and_query(uri_header(headers, "X-Forwarded-Uri")?, "X-Forwarded-Uri")?,
            host: header(headers, "X-Forwarded-Host").ok().map(str::to_string),
        }),
        Protocol::Envoy => {
            let rest = target_of_check
                .strip_prefix(envoy_prefix.trim_end_matches('/'))
                .ok_or_else(|| Incomplete(format!("path does not start with `{envoy_prefix}`")))?;
            let uri = if rest.is_empty() || rest.starts_with('?') {
                format!("/{rest}")
            } else if rest.starts_with('/') {
                rest.to_string()
            } else {
                return Err(Incomplete(format!(
                    "path does not start with `{envoy_prefix}/`"
                )));
            };
            Ok(Original {
                method: method_of_check.clone(),
                uri,
                host: header(headers, "host").ok().map(str::to_string),
            })
        }
        // The gRPC check names the original request in its message, not in headers.
        Protocol::EnvoyGrpc => envoy_grpc(
            method_of_check.as_str(),
            target_of_check,
            header(headers, "host").unwrap_or_default(),
        ),
    }
}

/// The client's address, when the header `from` names holds one.
pub fn client_ip(from: ClientIpFrom, headers: &HeaderMap) -> Option<IpAddr> {
    let last = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let value = match from {
        ClientIpFrom::None => return None,
        ClientIpFrom::XRealIp => last("x-real-ip")?,
        ClientIpFrom::XForwardedFor => last("x-forwarded-for")?
            .rsplit(',')
            .next()
            .map(str::to_string)?,
    };
    IpAddr::from_str(value.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_str(k).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn each_proxy_names_the_original_request_its_own_way() {
        let nginx = headers(&[
            ("X-Original-Method", "POST"),
            ("X-Original-URI", "/accounts/acme/invoices/inv-1001/pay?x=1"),
        ]);
        let traefik = headers(&[
            ("X-Forwarded-Method", "POST"),
            (
                "X-Forwarded-Uri",
                "/accounts/acme/invoices/inv-1001/pay?x=1",
            ),
            ("X-Forwarded-Host", "portal.example"),
        ]);
        let want = |host: Option<&str>| Original {
            method: Method::POST,
            uri: "/accounts/acme/invoices/inv-1001/pay?x=1".to_string(),
            host: host.map(str::to_string),
        };
        assert_eq!(
            original(
                Protocol::Nginx,
                &Method::GET,
                "/forward-auth/nginx",
                &nginx,
                "/ext-authz"
            ),
            Ok(want(None))
        );
        assert_eq!(
            original(
                Protocol::Traefik,
                &Method::GET,
                "/forward-auth/traefik",
                &traefik,
                "/ext-authz"
            ),
            Ok(want(Some("portal.example")))
        );
        assert_eq!(
            original(
                Protocol::Envoy,
                &Method::POST,
                "/ext-authz/accounts/acme/invoices/inv-1001/pay?x=1",
                &HeaderMap::new(),
                "/ext-authz"
            ),
            Ok(want(None))
        );
    }

    #[test]
    fn a_check_request_that_does_not_name_the_original_is_refused() {
        type Case<'a> = (Protocol, &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                Protocol::Nginx,
                "/forward-auth/nginx",
                &[("X-Original-URI", "/a")],
                "X-Original-Method",
            ),
            (
                Protocol::Nginx,
                "/forward-auth/nginx",
                &[("X-Original-Method", "GET")],
                "X-Original-URI",
            ),
            (
                Protocol::Nginx,
                "/forward-auth/nginx",
                &[("X-Original-Method", "get"), ("X-Original-URI", "/a")],
                "invalid method",
            ),
            (
                Protocol::Traefik,
                "/forward-auth/traefik",
                &[("X-Forwarded-Method", "GET")],
                "X-Forwarded-Uri",
            ),
            (Protocol::Envoy, "/ext-authzfoo", &[], "/ext-authz/"),
        ];
        for (protocol, target, pairs, fragment) in cases {
            let err = original(
                *protocol,
                &Method::GET,
                target,
                &headers(pairs),
                "/ext-authz",
            )
            .unwrap_err();
            assert!(
                matches!(&err, Incomplete(m) if m.contains(fragment)),
                "{protocol:?} {pairs:?}: {err:?}"
            );
        }
    }

    #[test]
    fn the_client_address_is_read_only_from_the_configured_header() {
        let h = headers(&[
            ("X-Forwarded-For", "203.0.113.9, 198.51.100.7"),
            ("X-Real-IP", "198.51.100.8"),
        ]);
        let cases = [
            (ClientIpFrom::None, None),
            (ClientIpFrom::XRealIp, Some("198.51.100.8")),
            (ClientIpFrom::XForwardedFor, Some("198.51.100.7")),
        ];
        for (from, want) in cases {
            assert_eq!(
                client_ip(from, &h),
                want.map(|w| IpAddr::from_str(w).unwrap()),
                "{from:?}"
            );
        }
        assert_eq!(
            client_ip(
                ClientIpFrom::XRealIp,
                &headers(&[("X-Real-IP", "not-an-ip")])
            ),
            None
        );
    }

    #[test]
    fn envoy_grpc_names_the_original_request_in_its_message() {
        assert_eq!(
            envoy_grpc(
                "POST",
                "/accounts/acme/invoices/inv-1001/pay?x=1",
                "portal.example"
            ),
            Ok(Original {
                method: Method::POST,
                uri: "/accounts/acme/invoices/inv-1001/pay?x=1".to_string(),
                host: Some("portal.example".to_string()),
            })
        );
        assert_eq!(
            envoy_grpc("GET", "https://portal.example/help", "").map(|o| (o.uri, o.host)),
            Ok(("/help".to_string(), None))
        );
        // (method, path, what the error names)
        let bad = [
            ("", "/help", "attributes.request.http.method"),
            ("get", "/help", "attributes.request.http.method"),
            ("GET", "", "attributes.request.http.path"),
            ("GET", "help", "attributes.request.http.path"),
        ];
        for (method, path, named) in bad {
            let e = envoy_grpc(method, path, "portal.example").unwrap_err();
            assert!(e.to_string().contains(named), "{method} {path}: {e}");
        }
    }
}
