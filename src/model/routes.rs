//! The route table: which Cedar action and resource an HTTP request stands for.
//!
//! Security teams own the table (`policies/routes.yaml`) next to the policies. It is
//! compiled inside [`crate::model::compile`] against the same schema, so a table that
//! names an unknown action, an undeclared entity type, an unbound template variable or
//! a context field of the wrong type never serves. Matching is deliberately strict: a
//! path that is not in the table (including paths with dot segments, empty segments or
//! encoded slashes) matches nothing and is denied by default, so a difference between
//! how the proxy's upstream and Portcullis read a path can only deny, never allow.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid, Schema};
use http::{HeaderName, Method};
use serde::Deserialize;

use super::source::{line_col, Problem, Problems, SourceFile};

/// What a request that matches no route gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    #[default]
    Deny,
    Allow,
}

/// Where a context field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// The client's address, as the `--client-ip-from` setting trusts it; a Cedar
    /// `ipaddr`.
    ClientIp,
    /// Whether the caller's session used a second factor, as the identity says; a
    /// Cedar `Bool`.
    SecondFactor,
    /// A request header's value, as a Cedar `String`.
    Header(HeaderName),
}

/// The wire form of a context source: `client_ip`, `second_factor`, or
/// `{header: NAME}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ContextSourceWire {
    Named(String),
    Header { header: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteWire {
    route: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: BTreeMap<String, ContextSourceWire>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableWire {
    /// Namespace of short action names (`ViewInvoice`).
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    default: Unmatched,
    /// Context fields every route carries.
    #[serde(default)]
    context: BTreeMap<String, ContextSourceWire>,
    /// Patterns a path variable's decoded value must match, by variable name; a
    /// variable not listed gets [`is_plain_id`].
    #[serde(default)]
    variables: BTreeMap<String, String>,
    routes: Vec<RouteWire>,
}

/// The values a path variable takes when the table sets no pattern for it: 1 to 256
/// ASCII letters, digits and `-_.~@+`, not starting with `.`. Anything else (`..;`,
/// backslashes, full-width slashes, NUL, CR/LF, spaces) does not bind, so the route
/// does not match and such a segment never reaches a policy or the upstream as an id.
pub fn is_plain_id(value: &str) -> bool {
    (1..=256).contains(&value.len())
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~@+".contains(&b))
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var(String),
}

/// One piece of a resource id template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Var(String),
}

/// A resource uid template: `Portal::Invoice::"{invoice}"`. The id is built by
/// substitution and never parsed again, so a path variable cannot inject Cedar syntax.
#[derive(Debug, Clone)]
pub struct UidTemplate {
    type_name: EntityTypeName,
    id: Vec<Piece>,
}

impl UidTemplate {
    /// Parses `Type::"id with {vars}"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ty, rest) = text.split_once("::\"").ok_or_else(|| {
            format!("`{text}` is not a uid template of the form `Type::\"{{var}}\"`")
        })?;
        let id = rest
            .strip_suffix('"')
            .ok_or_else(|| format!("`{text}`: the id must end with `\"`"))?;
        let type_name = EntityTypeName::from_str(ty)
            .map_err(|e| format!("`{text}`: invalid entity type `{ty}`: {e}"))?;
        let mut pieces = Vec::new();
        let mut rest = id;
        while !rest.is_empty() {
            match rest.find('{') {
                None => {
                    pieces.push(Piece::Literal(rest.to_string()));
                    rest = "";
                }
                Some(start) => {
                    if let Some(lit) = rest.get(..start).filter(|l| !l.is_empty()) {
                        pieces.push(Piece::Literal(lit.to_string()));
                    }
                    let after = rest.get(start + 1..).unwrap_or("");
                    let end = after
                        .find('}')
                        .ok_or_else(|| format!("`{text}`: `{{` without a closing `}}`"))?;
                    let name = after.get(..end).unwrap_or("");
                    if !is_var_name(name) {
                        return Err(format!("`{text}`: invalid variable name `{name}`"));
                    }
                    pieces.push(Piece::Var(name.to_string()));
                    rest = after.get(end + 1..).unwrap_or("");
                }
            }
        }
        if id.contains('"') || id.contains('\\') {
            return Err(format!(
                "`{text}`: the id template may not contain quotes or backslashes"
            ));
        }
        Ok(Self {
            type_name,
            id: pieces,
        })
    }

    pub fn type_name(&self) -> &EntityTypeName {
        &self.type_name
    }

    /// Names of the variables the template uses.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.id.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v.as_str()),
            Piece::Literal(_) => None,
        })
    }

    /// Builds the uid, or `None` when a variable has no value (the table compiler
    /// rejects such templates, so this is defence in depth).
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> Option<EntityUid> {
        let mut id = String::new();
        for p in &self.id {
            match p {
                Piece::Literal(l) => id.push_str(l),
                Piece::Var(v) => id.push_str(&lookup(v)?),
            }
        }
        Some(EntityUid::from_type_name_and_id(
            self.type_name.clone(),
            EntityId::new(id),
        ))
    }
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route as written, `GET /accounts/{account}/invoices/{invoice}`: the label
    /// of metrics and decision logs (never the raw path, which carries ids).
    pub template: String,
    method: Method,
    segments: Vec<Segment>,
    pub action: EntityUid,
    pub resource: UidTemplate,
    pub context: Vec<(String, ContextSource)>,
}

impl Route {
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// A path this route matches, each variable filled by `value_of`: the route table
    /// read backwards, for documentation and tests. Values are percent-encoded where
    /// a path needs it.
    pub fn path_with(&self, value_of: impl Fn(&str) -> String) -> String {
        let mut path = String::new();
        for s in &self.segments {
            path.push('/');
            match s {
                Segment::Literal(l) => path.push_str(l),
                Segment::Var(v) => {
                    for b in value_of(v).bytes() {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            path.push(char::from(b));
                        } else {
                            path.push_str(&format!("%{b:02X}"));
                        }
                    }
                }
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    }
}

/// A route that matched a request, with the path variables' values.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    pub route: &'a Route,
    pub vars: Vec<(&'a str, String)>,
}

impl RouteMatch<'_> {
    /// The resource the request is about.
    pub fn resource(&self) -> Option<EntityUid> {
        self.route.resource.render(|name| {
            self.vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        })
    }
}

/// The compiled route table.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The file the table came from, for status output.
    pub file: String,
    pub default: Unmatched,
    routes: Vec<Route>,
    /// Whole-value patterns of the variables the table names (`variables:`).
    patterns: BTreeMap<String, regex::Regex>,
}

impl RouteTable {
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The most specific route for a request, or `None`. A `HEAD` request matches a
    /// `GET` route when no `HEAD` route matches, as HTTP servers answer it alike.
    pub fn find(&self, method: &Method, path_and_query: &str) -> Option<RouteMatch<'_>> {
        let segments = split_path(path_and_query)?;
        let found = self.find_for(method, &segments);
        if found.is_none() && method == Method::HEAD {
            return self.find_for(&Method::GET, &segments);
        }
        found
    }

    /// Whether `value` is one the variable `name` may take.
    fn binds(&self, name: &str, value: &str) -> bool {
        match self.patterns.get(name) {
            Some(pattern) => pattern.is_match(value),
            None => is_plain_id(value),
        }
    }

    fn find_for(&self, method: &Method, segments: &[Cow<'_, str>]) -> Option<RouteMatch<'_>> {
        let mut best: Option<(Vec<bool>, &Route)> = None;
        for route in &self.routes {
            if route.method != *method || route.segments.len() != segments.len() {
                continue;
            }
            let matches = route.segments.iter().zip(segments).all(|(t, s)| match t {
                Segment::Literal(l) => l == s.as_ref(),
                Segment::Var(name) => self.binds(name, s),
            });
            if !matches {
                continue;
            }
            // Literal segments outrank variables, from the left: `/invoices/new`
            // wins over `/invoices/{invoice}`.
            let rank: Vec<bool> = route
                .segments
                .iter()
                .map(|s| matches!(s, Segment::Literal(_)))
                .collect();
            if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                best = Some((rank, route));
            }
        }
        let (_, route) = best?;
        let vars = route
            .segments
            .iter()
            .zip(segments)
            .filter_map(|(t, s)| match t {
                Segment::Var(name) => Some((name.as_str(), s.to_string())),
                Segment::Literal(_) => None,
            })
            .collect();
        Some(RouteMatch { route, vars })
    }
}

/// Splits a request target into percent-decoded segments. `None` for a path no route
/// may match: not absolute, with empty, `.` or `..` segments, with an encoded `/`, or
/// not UTF-8 once decoded. One trailing slash is ignored.
pub fn split_path(path_and_query: &str) -> Option<Vec<Cow<'_, str>>> {
    let path = path_and_query
        .split(['?', '#'])
        .next()
        .unwrap_or(path_and_query);
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut out = Vec::new();
    for raw in rest.split('/') {
        let seg = percent_decode(raw)?;
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains('/') {
            return None;
        }
        out.push(seg);
    }
    Some(out)
}

/// `s` with its `%XX` escapes decoded; itself when it has none.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
            let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Parses a path template: `/accounts/{account}/invoices/{invoice}`.
fn parse_path_template(path: &str) -> Result<Vec<Segment>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("path `{path}` must start with `/`"))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err(format!("path `{path}` has an empty segment"));
        }
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if !is_var_name(name) {
                return Err(format!("path `{path}`: invalid variable name `{name}`"));
            }
            if !seen.insert(name.to_string()) {
                return Err(format!("path `{path}`: variable `{name}` appears twice"));
            }
            out.push(Segment::Var(name.to_string()));
        } else if seg.contains(['{', '}', '%', '?', '#']) || seg == "." || seg == ".." {
            return Err(format!(
                "path `{path}`: segment `{seg}` must be a literal or a whole `{{variable}}`"
            ));
        } else {
            out.push(Segment::Literal(seg.to_string()));
        }
    }
    Ok(out)
}

fn parse_source(name: &str, wire: &ContextSourceWire) -> Result<ContextSource, String> {
    match wire {
        ContextSourceWire::Named(s) if s == "client_ip" => Ok(ContextSource::ClientIp),
        ContextSourceWire::Named(s) if s == "second_factor" => Ok(ContextSource::SecondFactor),
        ContextSourceWire::Named(s) => Err(format!(
            "context field `{name}`: unknown source `{s}` (expected `client_ip`, `second_factor` or `{{header: NAME}}`)"
        )),
        ContextSourceWire::Header { header } => HeaderName::from_str(header)
            .map(ContextSource::Header)
            .map_err(|_| format!("context field `{name}`: invalid header name `{header}`")),
    }
}

/// A sample value of each source, to check a route's context against the schema at
/// load time.
fn sample(source: &ContextSource) -> serde_json::Value {
    match source {
        ContextSource::ClientIp => serde_json::json!({"__extn": {"fn": "ip", "arg": "192.0.2.1"}}),
        ContextSource::SecondFactor => serde_json::Value::Bool(true),
        ContextSource::Header(_) => serde_json::Value::String("sample".to_string()),
    }
}

fn parse_action(text: &str, namespace: Option<&str>) -> Result<EntityUid, String> {
    let full = if text.contains("::") {
        text.to_string()
    } else {
        match namespace {
            Some(ns) => format!("{ns}::Action::\"{text}\""),
            None => format!("Action::\"{text}\""),
        }
    };
    EntityUid::from_str(&full).map_err(|e| format!("invalid action `{text}`: {e}"))
}

/// Compiles a route table against a schema. Returns every problem found.
pub fn compile(file: &SourceFile, schema: &Schema) -> Result<RouteTable, Problems> {
    let wire: TableWire = serde_yaml_ng::from_str(&file.text).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
        // The place goes in front as `file:line:col`; drop serde's own copy of it.
        let mut message = e.to_string();
        if let (Some(l), Some(c)) = (line, column) {
            message = message.replace(&format!(" at line {l} column {c}"), "");
        }
        Problems(vec![Problem {
            file: file.name.clone(),
            line,
            column,
            message: format!("invalid route table: {message}"),
        }])
    })?;
    let mut problems = Vec::new();
    // Semantic problems are placed at the route's text in the file; serde's values
    // carry no positions, and a route string is unique in practice.
    let at = |needle: &str, message: String| {
        let (line, column) = file.text.find(needle).map_or((None, None), |o| {
            let (l, c) = line_col(&file.text, o);
            (Some(l), Some(c))
        });
        Problem {
            file: file.name.clone(),
            line,
            column,
            message,
        }
    };

    let mut common = Vec::new();
    for (name, w) in &wire.context {
        match parse_source(name, w) {
            Ok(s) => common.push((name.clone(), s)),
            Err(m) => problems.push(at(&format!("{name}:"), m)),
        }
    }

    let mut routes: Vec<Route> = Vec::new();
    for r in &wire.routes {
        match compile_route(r, wire.namespace.as_deref(), &common, schema) {
            Ok(route) => {
                let clash = routes
                    .iter()
                    .find(|o| o.method == route.method && same_shape(&o.segments, &route.segments));
                if let Some(other) = clash {
                    problems.push(at(
                        &r.route,
                        format!(
                            "route `{}` matches the same requests as `{}`",
                            route.template, other.template
                        ),
                    ));
                } else {
                    routes.push(route);
                }
            }
            Err(messages) => {
                for m in messages {
                    problems.push(at(&r.route, format!("route `{}`: {m}", r.route)));
                }
            }
        }
    }
    let mut patterns = BTreeMap::new();
    for (name, pattern) in &wire.variables {
        let used = routes.iter().any(|r| {
            r.segments
                .iter()
                .any(|s| matches!(s, Segment::Var(n) if n == name))
        });
        if !used {
            problems.push(at(
                &format!("{name}:"),
                format!("variable `{name}` has a pattern but no route binds it"),
            ));
            continue;
        }
        // Anchored: the pattern describes the whole decoded segment.
        match regex::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(re) => {
                patterns.insert(name.clone(), re);
            }
            Err(e) => problems.push(at(
                &format!("{name}:"),
                format!("variable `{name}`: invalid pattern `{pattern}`: {e}"),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(RouteTable {
        file: file.name.clone(),
        default: wire.default,
        routes,
        patterns,
    })
}

/// Two templates match the same paths when their literals agree and their variables
/// sit in the same places.
fn same_shape(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Literal(l), Segment::Literal(m)) => l == m,
            (Segment::Var(_), Segment::Var(_)) => true,
            _ => false,
        })
}

fn compile_route(
    r: &RouteWire,
    namespace: Option<&str>,
    common: &[(String, ContextSource)],
    schema: &Schema,
) -> Result<Route, Vec<String>> {
    let mut errors = Vec::new();
    let mut parts = r.route.split_whitespace();
    let (method, path) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), None) => (m, p),
        _ => {
            return Err(vec![
                "expected `METHOD /path`, e.g. `GET /accounts/{account}`".to_string(),
            ])
        }
    };
    let method = match Method::from_str(method) {
        Ok(m) if method.chars().all(|c| c.is_ascii_uppercase()) => Some(m),
        _ => {
            errors.push(format!("invalid method `{method}` (write it in capitals)"));
            None
        }
    };
    let segments = parse_path_template(path).map_err(|e| errors.push(e)).ok();
    let action = match parse_action(&r.action, namespace) {
        // The schema's own instance: requests compare it with the schema's names,
        // by pointer when they share one (`model::entity_table::TypeCanon`).
        Ok(a) if schema.actions().any(|x| x == &a) => schema.actions().find(|x| *x == &a).cloned(),
        Ok(a) => {
            errors.push(format!("action `{a}` is not declared in the schema"));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let resource = match UidTemplate::parse(&r.resource) {
        Ok(t) if schema.entity_types().any(|x| x == t.type_name()) => {
            let declared = schema.entity_types().find(|x| *x == t.type_name()).cloned();
            Some(match declared {
                Some(ty) => UidTemplate { type_name: ty, ..t },
                None => t,
            })
        }
        Ok(t) => {
            errors.push(format!(
                "entity type `{}` is not declared in the schema",
                t.type_name()
            ));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    if let (Some(segments), Some(resource)) = (&segments, &resource) {
        for v in resource.vars() {
            let bound = segments
                .iter()
                .any(|s| matches!(s, Segment::Var(n) if n == v));
            if !bound {
                errors.push(format!(
                    "variable `{v}` of `{}` is not bound by the path",
                    r.resource
                ));
            }
        }
    }
    if let (Some(action), Some(resource)) = (&action, &resource) {
        let applies = schema
            .resources_for_action(action)
            .is_some_and(|mut types| types.any(|t| t == resource.type_name()));
        if !applies {
            errors.push(format!(
                "action `{action}` does not apply to resources of type `{}`",
                resource.type_name()
            ));
        }
    }
    let mut context: Vec<(String, ContextSource)> = common.to_vec();
    for (name, w) in &r.context {
        match parse_source(name, w) {
            Ok(s) => {
                context.retain(|(n, _)| n != name);
                context.push((name.clone(), s));
            }
            Err(m) => errors.push(m),
        }
    }
    if let Some(action) = &action {
        let sample: serde_json::Map<String, serde_json::Value> = context
            .iter()
            .map(|(n, s)| (n.clone(), sample(s)))
            .collect();
        if let Err(e) =
            Context::from_json_value(serde_json::Value::Object(sample), Some((schema, action)))
        {
            errors.push(format!("context does not fit action `{action}`: {e}"));
        }
    }
    match (method, segments, action, resource) {
        (Some(method), Some(segments), Some(action), Some(resource)) if errors.is_empty() => {
            Ok(Route {
                template: format!("{method} {path}"),
                method,
                segments,
                action,
                resource,
                context,
            })
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{embedded, parse_schema};

    fn schema() -> Schema {
        parse_schema(&SourceFile::new(embedded::SCHEMA.0, embedded::SCHEMA.1)).unwrap()
    }

    fn shipped() -> RouteTable {
        let file = SourceFile::new(embedded::ROUTES.0, embedded::ROUTES.1);
        match compile(&file, &schema()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_shipped_table_maps_portal_requests_to_actions_and_resources() {
        let table = shipped();
        // (method, path, expected route, action, resource)
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            (
                "GET",
                "/accounts/acme/invoices/inv-1001",
                "GET /accounts/{account}/invoices/{invoice}",
                "ViewInvoice",
                r#"Portal::Invoice::"inv-1001""#,
            ),
            (
                "POST",
                "/accounts/acme/invoices/inv-1001/pay",
                "POST /accounts/{account}/invoices/{invoice}/pay",
                "PayInvoice",
                r#"Portal::Invoice::"inv-1001""#,
            ),
            (
                "GET",
                "/accounts/acme/invoices/inv-1001/?download=pdf",
                "GET /accounts/{account}/invoices/{invoice}",
                "ViewInvoice",
                r#"Portal::Invoice::"inv-1001""#,
            ),
            (
                "HEAD",
                "/accounts/acme/invoices/inv-1001",
                "GET /accounts/{account}/invoices/{invoice}",
                "ViewInvoice",
                r#"Portal::Invoice::"inv-1001""#,
            ),
            (
                "POST",
                "/accounts/acme/tickets",
                "POST /accounts/{account}/tickets",
                "OpenTicket",
                r#"Portal::Account::"acme""#,
            ),
            (
                "POST",
                "/accounts/acme/tickets/t-2001/replies",
                "POST /accounts/{account}/tickets/{ticket}/replies",
                "ReplyTicket",
                r#"Portal::Ticket::"t-2001""#,
            ),
            (
                "PUT",
                "/accounts/globex/domains/globex.example/nameservers",
                "PUT /accounts/{account}/domains/{domain}/nameservers",
                "ManageDomain",
                r#"Portal::Domain::"globex.example""#,
            ),
            (
                "POST",
                "/accounts/acme/login",
                "POST /accounts/{account}/login",
                "Login",
                r#"Portal::Account::"acme""#,
            ),
            (
                "PUT",
                "/accounts/acme/payment-method",
                "PUT /accounts/{account}/payment-method",
                "UpdatePaymentMethod",
                r#"Portal::Account::"acme""#,
            ),
            (
                "GET",
                "/accounts/acme/contacts/carl",
                "GET /accounts/{account}/contacts/{contact}",
                "ManageContacts",
                r#"Portal::Contact::"carl""#,
            ),
            // A percent-encoded id is decoded, and stays one id.
            (
                "GET",
                "/accounts/acme/invoices/inv%2D1001",
                "GET /accounts/{account}/invoices/{invoice}",
                "ViewInvoice",
                r#"Portal::Invoice::"inv-1001""#,
            ),
        ];
        for (method, path, template, action, resource) in cases {
            let m = table
                .find(&Method::from_str(method).unwrap(), path)
                .unwrap_or_else(|| panic!("{method} {path} matches no route"));
            assert_eq!(m.route.template, *template, "{method} {path}");
            assert_eq!(m.route.action.id().unescaped(), *action, "{method} {path}");
            assert_eq!(
                m.resource().unwrap().to_string(),
                *resource,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn paths_outside_the_table_match_nothing() {
        let table = shipped();
        let cases: &[(&str, &str)] = &[
            ("DELETE", "/accounts/acme/invoices/inv-1001"),
            ("GET", "/accounts/acme/invoices/inv-1001/pay"),
            ("GET", "/accounts/acme/invoices/../users"),
            ("GET", "/accounts/acme/./profile"),
            ("GET", "/accounts/acme//profile"),
            ("GET", "/accounts/acme/invoices/inv%2F1001"),
            ("GET", "/accounts/acme/invoices/%ZZ"),
            ("GET", "accounts/acme/profile"),
            ("GET", "/Accounts/acme/profile"),
            ("GET", "/"),
        ];
        for (method, path) in cases {
            let found = table.find(&Method::from_str(method).unwrap(), path);
            assert!(
                found.is_none(),
                "{method} {path} matched {:?}",
                found.map(|m| m.route.template.clone())
            );
        }
    }

    #[test]
    fn literal_segments_outrank_variables() {
        let text = r#"
namespace: Portal
routes:
  - route: GET /accounts/{account}/tickets/{ticket}
    action: ViewTicket
    resource: Portal::Ticket::"{ticket}"
  - route: GET /accounts/{account}/tickets/latest
    action: ViewProfile
    resource: Portal::Account::"{account}"
"#;
        let table = compile(&SourceFile::new("routes.yaml", text), &schema()).unwrap();
        let m = table
            .find(&Method::GET, "/accounts/acme/tickets/latest")
            .unwrap();
        assert_eq!(m.route.template, "GET /accounts/{account}/tickets/latest");
        let m = table
            .find(&Method::GET, "/accounts/acme/tickets/t-1")
            .unwrap();
        assert_eq!(m.route.template, "GET /accounts/{account}/tickets/{ticket}");
    }

    #[test]
    fn mistakes_in_a_table_are_reported_with_their_place() {
        // (table body, expected fragment of the message, expected line)
        let cases: &[(&str, &str, usize)] = &[
            (
                "routes:\n  - route: GET /a/{x}\n    action: Portal::Action::\"Fly\"\n    resource: Portal::Account::\"{x}\"\n",
                "action `Portal::Action::\"Fly\"` is not declared",
                2,
            ),
            (
                "routes:\n  - route: GET /a/{x}\n    action: Portal::Action::\"ViewInvoice\"\n    resource: Portal::Bill::\"{x}\"\n",
                "entity type `Portal::Bill` is not declared",
                2,
            ),
            (
                "routes:\n  - route: GET /a/{x}\n    action: Portal::Action::\"ViewInvoice\"\n    resource: Portal::Invoice::\"{invoice}\"\n",
                "variable `invoice`",
                2,
            ),
            (
                "routes:\n  - route: GET /a/{x}\n    action: Portal::Action::\"ViewInvoice\"\n    resource: Portal::Account::\"{x}\"\n",
                "does not apply to resources of type `Portal::Account`",
                2,
            ),
            (
                "routes:\n  - route: GET /a/{x}\n    action: Portal::Action::\"ViewProfile\"\n    resource: Portal::Account::\"{x}\"\n    context:\n      clientIp: {header: X-Client}\n",
                "context does not fit",
                2,
            ),
            (
                "routes:\n  - route: GET /a/{x}\n    action: Portal::Action::\"ViewProfile\"\n    resource: Portal::Account::\"{x}\"\n    context:\n      favouriteColour: {header: X-Colour}\n",
                "context does not fit",
                2,
            ),
            (
                "routes:\n  - route: GET /a/{x}\n    action: Portal::Action::\"ViewProfile\"\n    resource: Portal::Account::\"{x}\"\n  - route: GET /a/{y}\n    action: Portal::Action::\"UpdateProfile\"\n    resource: Portal::Account::\"{y}\"\n",
                "matches the same requests as `GET /a/{x}`",
                5,
            ),
            (
                "routes:\n  - route: get /a\n    action: Portal::Action::\"ViewProfile\"\n    resource: Portal::Account::\"acme\"\n",
                "invalid method `get`",
                2,
            ),
            ("routes:\n  - route: GET /a\n    acton: X\n", "unknown field `acton`", 3),
        ];
        for (text, fragment, line) in cases {
            let err = compile(&SourceFile::new("routes.yaml", *text), &schema()).unwrap_err();
            let p = err.0.first().unwrap();
            assert!(p.message.contains(fragment), "{text}\n=> {err}");
            assert_eq!(p.line, Some(*line), "{text}\n=> {err}");
            assert!(
                err.to_string().starts_with(&format!("routes.yaml:{line}:")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_path_variable_cannot_inject_cedar_syntax() {
        // Even a table that lets a variable take any value builds the uid by
        // substitution, never by parsing.
        let text = r#"
namespace: Portal
variables:
  invoice: ".+"
routes:
  - route: GET /invoices/{invoice}
    action: ViewInvoice
    resource: Portal::Invoice::"{invoice}"
"#;
        let table = compile(&SourceFile::new("routes.yaml", text), &schema()).unwrap();
        let m = table
            .find(&Method::GET, "/invoices/x%22%20||%20true")
            .unwrap();
        let uid = m.resource().unwrap();
        assert_eq!(uid.id().unescaped(), "x\" || true");
        assert_eq!(uid.type_name().to_string(), "Portal::Invoice");
    }

    #[test]
    fn a_variable_binds_only_a_plain_id_by_default() {
        let table = shipped();
        // Each of these reached the upstream as an account or user id before.
        let hostile = [
            "..;",
            "..%3B",
            "..%5C..%5C",
            "%EF%BC%8F..%EF%BC%8Fadmin",
            "acme%00",
            "acme%0D%0AX-Injected:%201",
            "acme%20",
            ".hidden",
            "%E2%80%AEacme",
        ];
        for value in hostile {
            for path in [
                format!("/accounts/{value}/users/bea"),
                format!("/accounts/acme/users/{value}"),
            ] {
                let found = table.find(&Method::DELETE, &path);
                assert!(
                    found.is_none(),
                    "{path} matched {:?}",
                    found.map(|m| m.vars)
                );
            }
        }
        for plain in [
            "acme",
            "inv-1001",
            "globex.example",
            "bea@acme.example",
            "a_b~c+d",
        ] {
            assert!(is_plain_id(plain), "{plain}");
        }
        assert!(!is_plain_id(&"a".repeat(257)));
    }

    #[test]
    fn a_table_sets_a_pattern_per_variable() {
        let text = r#"
namespace: Portal
variables:
  invoice: "inv-[0-9]+"
routes:
  - route: GET /accounts/{account}/invoices/{invoice}
    action: ViewInvoice
    resource: Portal::Invoice::"{invoice}"
"#;
        let table = compile(&SourceFile::new("routes.yaml", text), &schema()).unwrap();
        assert!(table
            .find(&Method::GET, "/accounts/acme/invoices/inv-1001")
            .is_some());
        // The pattern is anchored: it describes the whole segment.
        for path in [
            "/accounts/acme/invoices/inv-1001x",
            "/accounts/acme/invoices/xinv-1001",
        ] {
            assert!(table.find(&Method::GET, path).is_none(), "{path}");
        }
        // `account` keeps the default.
        assert!(table
            .find(&Method::GET, "/accounts/..;/invoices/inv-1001")
            .is_none());

        let bad = [
            ("  invoice: \"inv-[0-9\"", "invalid pattern"),
            ("  ticket: \"t-[0-9]+\"", "no route binds it"),
        ];
        for (line, fragment) in bad {
            let text = text.replace("  invoice: \"inv-[0-9]+\"", line);
            let err = compile(&SourceFile::new("routes.yaml", &text), &schema()).unwrap_err();
            assert!(err.to_string().contains(fragment), "{err}");
            assert!(err.to_string().starts_with("routes.yaml:4:"), "{err}");
        }
    }
}
