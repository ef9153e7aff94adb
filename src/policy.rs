//! The policy store: reads schema, policies and template links, validates them
//! strictly, and produces an immutable [`PolicySnapshot`].
//!
//! A snapshot is never changed after it is built. The server holds the current one in
//! an `ArcSwap`, so a request keeps the snapshot it started with while a reload swaps in
//! a new one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use cedar_policy::{
    EntityUid, PolicyId, PolicySet, Schema, SlotId, ValidationMode, ValidationWarning, Validator,
};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The shipped portal model, compiled into the binary so that it runs from anywhere.
pub mod embedded {
    /// Display name and text of the shipped schema.
    pub const SCHEMA: (&str, &str) = (
        "schema/portal.cedarschema",
        include_str!("../schema/portal.cedarschema"),
    );
    /// Display names and texts of the shipped policy files.
    pub const POLICIES: &[(&str, &str)] = &[
        (
            "policies/email.cedar",
            include_str!("../policies/email.cedar"),
        ),
        (
            "policies/grants.cedar",
            include_str!("../policies/grants.cedar"),
        ),
        (
            "policies/guards.cedar",
            include_str!("../policies/guards.cedar"),
        ),
        (
            "policies/members.cedar",
            include_str!("../policies/members.cedar"),
        ),
        (
            "policies/owner.cedar",
            include_str!("../policies/owner.cedar"),
        ),
    ];
    /// Display name and text of the shipped template links.
    pub const LINKS: (&str, &str) = (
        "policies/links.json",
        include_str!("../policies/links.json"),
    );
    /// Display name and text of the shipped gateway route table.
    pub const ROUTES: (&str, &str) = (
        "policies/routes.yaml",
        include_str!("../policies/routes.yaml"),
    );
    /// Display name and text of the demo entity data.
    pub const ENTITIES: (&str, &str) = (
        "examples/portal/entities.json",
        include_str!("../examples/portal/entities.json"),
    );
}

/// One source file: the name shown in errors and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    /// The path it was read from; `None` for text compiled into the binary. The
    /// reload watcher watches the directories of these paths.
    pub path: Option<PathBuf>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
            path: None,
        }
    }

    /// Reads a file, naming it by the path it was given.
    pub fn read(path: &Path) -> Result<Self, LoadErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadErrors::single(Problem::file(
                path.display().to_string(),
                format!("cannot read: {e}"),
            ))
        })?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            ..Self::new(path.display().to_string(), text)
        })
    }
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone)]
pub struct PolicySources {
    pub schema: SourceFile,
    pub policies: Vec<SourceFile>,
    pub links: Option<SourceFile>,
    /// The gateway route table; compiled against the same schema, so schema, policies
    /// and routes always change together.
    pub routes: Option<SourceFile>,
}

impl PolicySources {
    /// The shipped portal model.
    pub fn embedded() -> Self {
        Self {
            schema: SourceFile::new(embedded::SCHEMA.0, embedded::SCHEMA.1),
            policies: embedded::POLICIES
                .iter()
                .map(|(name, text)| SourceFile::new(*name, *text))
                .collect(),
            links: Some(SourceFile::new(embedded::LINKS.0, embedded::LINKS.1)),
            routes: Some(SourceFile::new(embedded::ROUTES.0, embedded::ROUTES.1)),
        }
    }

    /// Every source file. A new kind of source must be listed here: this is how the
    /// reload watcher learns which directories to watch. The destructuring has no
    /// `..` so that adding a field without listing it fails to compile.
    pub fn files(&self) -> Vec<&SourceFile> {
        let Self {
            schema,
            policies,
            links,
            routes,
        } = self;
        std::iter::once(schema)
            .chain(policies.iter())
            .chain(links.iter())
            .chain(routes.iter())
            .collect()
    }

    /// Reads sources from disk. `policies` is a `.cedar` file or a directory whose
    /// `*.cedar` files are read in name order.
    pub fn read(schema: &Path, policies: &Path, links: Option<&Path>) -> Result<Self, LoadErrors> {
        let schema = SourceFile::read(schema)?;
        let policies = policy_files(policies)?
            .iter()
            .map(|p| SourceFile::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        let links = links.map(SourceFile::read).transpose()?;
        Ok(Self {
            schema,
            policies,
            links,
            routes: None,
        })
    }
}

/// The `.cedar` files a policies path names: the file itself, or a directory's
/// `*.cedar` files in name order (not recursive, so test and invariant folders beside
/// the policies are not read as policies).
pub fn policy_files(path: &Path) -> Result<Vec<PathBuf>, LoadErrors> {
    let meta = std::fs::metadata(path).map_err(|e| {
        LoadErrors::single(Problem::file(
            path.display().to_string(),
            format!("cannot read: {e}"),
        ))
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        LoadErrors::single(Problem::file(
            path.display().to_string(),
            format!("cannot read: {e}"),
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadErrors::single(Problem::file(
            path.display().to_string(),
            "no `.cedar` files in this directory".to_string(),
        )));
    }
    Ok(files)
}

/// What kind of policy an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Static,
    Template,
    Link,
}

/// What a snapshot knows about one of its policies.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyInfo {
    pub id: String,
    pub kind: PolicyKind,
    /// The file the policy (or, for a link, its links file) came from.
    pub file: String,
    /// Line of the policy in that file (1-based), where known.
    pub line: Option<usize>,
    /// SHA-256 of the policy's text, hex.
    pub hash: String,
}

/// An immutable, validated policy set with its schema.
#[derive(Debug)]
pub struct PolicySnapshot {
    pub schema: Schema,
    /// The schema's source, for readers that need more than `Schema` exposes (the
    /// AuthZEN mapping reads attribute types from it).
    pub schema_source: SourceFile,
    pub policies: PolicySet,
    /// Policies, templates and links in load order.
    pub info: Vec<PolicyInfo>,
    /// SHA-256 over every source file's name and text, hex.
    pub hash: String,
    /// SHA-256 over the schema text alone: entity data validated against one schema
    /// stays valid while this does not change.
    pub schema_hash: String,
    pub loaded_at: SystemTime,
    /// The gateway route table, validated against `schema`; `None` when none is
    /// configured (the gateway endpoints then deny every request).
    pub routes: Option<Arc<crate::gateway::RouteTable>>,
}

impl PolicySnapshot {
    /// Number of static policies plus template-linked policies: the policies that
    /// take part in decisions.
    pub fn active_policy_count(&self) -> usize {
        self.info
            .iter()
            .filter(|p| p.kind != PolicyKind::Template)
            .count()
    }
}

/// One problem found while loading, located in a source file where possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Problem {
    fn file(file: String, message: String) -> Self {
        Self {
            file,
            line: None,
            column: None,
            message,
        }
    }

    fn at(file: &SourceFile, offset: Option<usize>, message: String) -> Self {
        let (line, column) = match offset {
            Some(o) => {
                let (l, c) = line_col(&file.text, o);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Self {
            file: file.name.clone(),
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem that stopped a load. Never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct LoadErrors(pub Vec<Problem>);

impl LoadErrors {
    fn single(p: Problem) -> Self {
        Self(vec![p])
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in &self.0 {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map_or(1, |tail| tail.chars().count() + 1);
    (line, col)
}

/// The message of a miette diagnostic, with its help, and the offset of its first label.
fn describe(d: &dyn Diagnostic) -> (String, Option<usize>) {
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    (message, offset)
}

/// Every diagnostic of an error: itself, or its related diagnostics when it only
/// gathers them.
fn problems_of(file: &SourceFile, d: &dyn Diagnostic) -> Vec<Problem> {
    let related: Vec<Problem> = d
        .related()
        .map(|r| {
            r.map(|inner| {
                let (m, o) = describe(inner);
                Problem::at(file, o, m)
            })
            .collect()
        })
        .unwrap_or_default();
    if related.is_empty() {
        let (m, o) = describe(d);
        vec![Problem::at(file, o, m)]
    } else {
        related
    }
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a schema in the Cedar schema syntax, or the JSON schema format when the file
/// name ends in `.json`.
pub fn parse_schema(file: &SourceFile) -> Result<Schema, LoadErrors> {
    if file.name.ends_with(".json") {
        Schema::from_json_str(&file.text).map_err(|e| LoadErrors(problems_of(file, &e)))
    } else {
        Schema::from_cedarschema_str(&file.text)
            .map(|(schema, _warnings)| schema)
            .map_err(|e| LoadErrors(problems_of(file, &e)))
    }
}

/// One link of the links file, in the format of the cedar CLI's `--template-linked`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateLink {
    pub template_id: String,
    pub link_id: String,
    pub args: BTreeMap<String, String>,
}

/// Parses a links file: a JSON array of [`TemplateLink`].
pub fn parse_links(file: &SourceFile) -> Result<Vec<TemplateLink>, LoadErrors> {
    serde_json::from_str(&file.text).map_err(|e| {
        LoadErrors::single(Problem {
            file: file.name.clone(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: format!("invalid template links: {e}"),
        })
    })
}

/// Builds and strictly validates a snapshot. Returns every problem found, not only the
/// first, so a policy author fixes them in one round.
pub fn compile(sources: &PolicySources) -> Result<PolicySnapshot, LoadErrors> {
    let mut problems = Vec::new();
    let schema = parse_schema(&sources.schema);

    let mut set = PolicySet::new();
    let mut info: Vec<PolicyInfo> = Vec::new();
    // Which file and offset each policy id came from, to place validation errors.
    let mut origin: HashMap<String, usize> = HashMap::new();

    for (file_index, file) in sources.policies.iter().enumerate() {
        let parsed = match PolicySet::from_str(&file.text) {
            Ok(p) => p,
            Err(e) => {
                problems.extend(problems_of(file, &e));
                continue;
            }
        };
        // The parser names policies and templates `policy0`, `policy1`, ... in file
        // order; keep that order, and find each one's text in the file for its line.
        let mut items: Vec<(usize, usize, Item)> = parsed
            .policies()
            .map(|p| Item::Policy(p.clone()))
            .chain(parsed.templates().map(|t| Item::Template(t.clone())))
            .map(|item| {
                let n = item.parser_index();
                let offset = file.text.find(&item.text()).unwrap_or(0);
                (n, offset, item)
            })
            .collect();
        items.sort_by_key(|(n, _, _)| *n);
        for (_, offset, item) in items {
            let (line, _) = line_col(&file.text, offset);
            let id = item
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}:{}", file.name, line));
            if let Some(prev) = info.iter().find(|p| p.id == id) {
                problems.push(Problem::at(
                    file,
                    Some(offset),
                    format!(
                        "duplicate policy id `{id}`: already used at {}:{}",
                        prev.file,
                        prev.line.unwrap_or(0)
                    ),
                ));
                continue;
            }
            let pid = PolicyId::new(&id);
            let (kind, text, added) = match item {
                Item::Policy(p) => {
                    let p = p.new_id(pid);
                    let text = p.to_string();
                    (
                        PolicyKind::Static,
                        text,
                        set.add(p).map_err(|e| e.to_string()),
                    )
                }
                Item::Template(t) => {
                    let t = t.new_id(pid);
                    let text = t.to_string();
                    (
                        PolicyKind::Template,
                        text,
                        set.add_template(t).map_err(|e| e.to_string()),
                    )
                }
            };
            if let Err(e) = added {
                problems.push(Problem::at(file, Some(offset), e));
                continue;
            }
            origin.insert(id.clone(), file_index);
            info.push(PolicyInfo {
                id,
                kind,
                file: file.name.clone(),
                line: Some(line),
                hash: sha256_hex(&[&text]),
            });
        }
    }

    if let Some(links_file) = &sources.links {
        match parse_links(links_file) {
            Err(e) => problems.extend(e.0),
            Ok(links) => {
                for link in links {
                    if let Err(p) = add_link(&mut set, &link, links_file) {
                        problems.push(p);
                        continue;
                    }
                    info.push(PolicyInfo {
                        id: link.link_id.clone(),
                        kind: PolicyKind::Link,
                        file: links_file.name.clone(),
                        line: link_offset(links_file, &link.link_id)
                            .map(|o| line_col(&links_file.text, o).0),
                        hash: sha256_hex(&[
                            &link.template_id,
                            &serde_json::to_string(&link.args).unwrap_or_default(),
                        ]),
                    });
                }
            }
        }
    }

    let schema = match schema {
        Ok(s) => s,
        Err(e) => {
            problems.extend(e.0);
            return Err(LoadErrors(problems));
        }
    };
    let routes = match &sources.routes {
        None => None,
        Some(file) => match crate::gateway::routes::compile(file, &schema) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                problems.extend(e.0);
                None
            }
        },
    };
    // Validate what did parse even when other files did not, so that one round of
    // fixes can address every problem.
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    for err in result.validation_errors() {
        let id = err.policy_id().to_string();
        let file = info
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| {
                if p.kind == PolicyKind::Link {
                    sources.links.as_ref()
                } else {
                    origin.get(&id).and_then(|i| sources.policies.get(*i))
                }
            })
            .unwrap_or(&sources.schema);
        let (message, offset) = describe(err);
        let offset = match sources.links.as_ref() {
            Some(links)
                if info
                    .iter()
                    .any(|p| p.id == id && p.kind == PolicyKind::Link) =>
            {
                link_offset(links, &id)
            }
            _ => offset,
        };
        // Cedar's validation messages already name the policy.
        let message = if message.contains(&format!("`{id}`")) {
            message
        } else {
            format!("policy `{id}`: {message}")
        };
        problems.push(Problem::at(file, offset, message));
    }
    // A link whose entities can never meet its template's actions (a contact linked
    // into a grant only users can use, an account where an invoice belongs) is only a
    // warning to the validator. A link is written to grant something, so here it is
    // an error.
    for warning in result.validation_warnings() {
        let id = warning.policy_id().to_string();
        let is_link = info
            .iter()
            .any(|p| p.id == id && p.kind == PolicyKind::Link);
        let never_applies = matches!(
            warning,
            ValidationWarning::InvalidActionApplication(_) | ValidationWarning::ImpossiblePolicy(_)
        );
        if let (true, true, Some(file)) = (is_link, never_applies, sources.links.as_ref()) {
            problems.push(Problem::at(
                file,
                link_offset(file, &id),
                format!("link `{id}` can never apply: {warning}"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(LoadErrors(problems));
    }

    let mut all: Vec<&str> = vec![&sources.schema.name, &sources.schema.text];
    for f in &sources.policies {
        all.push(&f.name);
        all.push(&f.text);
    }
    if let Some(l) = &sources.links {
        all.push(&l.name);
        all.push(&l.text);
    }
    if let Some(r) = &sources.routes {
        all.push(&r.name);
        all.push(&r.text);
    }
    Ok(PolicySnapshot {
        schema,
        schema_source: sources.schema.clone(),
        policies: set,
        info,
        hash: sha256_hex(&all),
        schema_hash: sha256_hex(&[&sources.schema.text]),
        loaded_at: SystemTime::now(),
        routes,
    })
}

enum Item {
    Policy(cedar_policy::Policy),
    Template(cedar_policy::Template),
}

impl Item {
    /// The `N` of the parser's default id `policyN`.
    fn parser_index(&self) -> usize {
        let id = match self {
            Item::Policy(p) => p.id().to_string(),
            Item::Template(t) => t.id().to_string(),
        };
        id.trim_start_matches("policy")
            .parse()
            .unwrap_or(usize::MAX)
    }

    fn text(&self) -> String {
        match self {
            Item::Policy(p) => p.to_string(),
            Item::Template(t) => t.to_string(),
        }
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        match self {
            Item::Policy(p) => p.annotation(key),
            Item::Template(t) => t.annotation(key),
        }
    }
}

fn add_link(set: &mut PolicySet, link: &TemplateLink, file: &SourceFile) -> Result<(), Problem> {
    let mut vals = HashMap::new();
    for (slot, uid) in &link.args {
        let slot_id = match slot.as_str() {
            "?principal" => SlotId::principal(),
            "?resource" => SlotId::resource(),
            other => {
                return Err(Problem::at(
                    file,
                    link_offset(file, &link.link_id),
                    format!(
                        "link `{}`: unknown slot `{other}` (expected `?principal` or `?resource`)",
                        link.link_id
                    ),
                ))
            }
        };
        let uid = EntityUid::from_str(uid).map_err(|e| {
            Problem::at(
                file,
                link_offset(file, &link.link_id),
                format!(
                    "link `{}`: invalid entity uid `{uid}` for `{slot}`: {e}",
                    link.link_id
                ),
            )
        })?;
        vals.insert(slot_id, uid);
    }
    set.link(
        PolicyId::new(&link.template_id),
        PolicyId::new(&link.link_id),
        vals,
    )
    .map_err(|e| {
        // The linking error names only the failure; its cause names the template or
        // slot at fault.
        let mut message = format!("link `{}`: {e}", link.link_id);
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Problem::at(file, link_offset(file, &link.link_id), message)
    })
}

/// Where a link's `"link_id": "<id>"` value stands in its links file, to place
/// problems of that link.
fn link_offset(file: &SourceFile, link_id: &str) -> Option<usize> {
    let quoted = serde_json::to_string(link_id).ok()?;
    file.text.match_indices(&quoted).map(|(i, _)| i).find(|&i| {
        file.text
            .get(..i)
            .and_then(|before| before.trim_end().strip_suffix(':'))
            .is_some_and(|key| key.trim_end().ends_with("\"link_id\""))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_model_compiles_strictly() {
        let snap = compile(&PolicySources::embedded());
        assert!(
            snap.is_ok(),
            "{}",
            snap.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }

    #[test]
    fn the_embedded_policies_are_exactly_the_policies_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let on_disk: Vec<String> = policy_files(&dir)
            .unwrap()
            .iter()
            .map(|p| format!("policies/{}", p.file_name().unwrap().to_string_lossy()))
            .collect();
        let embedded: Vec<String> = embedded::POLICIES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(embedded, on_disk, "update `policy::embedded::POLICIES`");
        for (name, text) in embedded::POLICIES {
            let disk =
                std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap();
            assert_eq!(*text, disk);
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn the_embedded_links_are_the_links_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let disk = std::fs::read_to_string(root.join(embedded::LINKS.0)).unwrap();
        assert_eq!(embedded::LINKS.1, disk);
        assert_eq!(embedded::LINKS.0, "policies/links.json");
    }

    /// Compiles the shipped model with another links file.
    fn with_links(links: &str) -> Result<PolicySnapshot, LoadErrors> {
        let mut sources = PolicySources::embedded();
        sources.links = Some(SourceFile::new("links.json", links));
        compile(&sources)
    }

    fn link(principal: &str, resource: &str) -> String {
        serde_json::json!([{
            "template_id": "resource-grant-view",
            "link_id": "grant",
            "args": {"?principal": principal, "?resource": resource},
        }])
        .to_string()
    }

    #[test]
    fn links_that_can_never_apply_are_rejected_with_their_place() {
        let cases = [
            // A grant meant for users given to a contact.
            (
                r#"Portal::Contact::"carl""#,
                r#"Portal::Quote::"q-4001""#,
                "can never apply",
            ),
            // A view grant on the account itself, which no view action applies to.
            (
                r#"Portal::User::"walt""#,
                r#"Portal::Account::"acme""#,
                "can never apply",
            ),
            // An entity type the schema does not know.
            (
                r#"Portal::Robot::"r2""#,
                r#"Portal::Quote::"q-4001""#,
                "Robot",
            ),
        ];
        for (principal, resource, expected) in cases {
            let err = with_links(&link(principal, resource)).err().unwrap();
            let text = err.to_string();
            assert!(text.contains(expected), "{principal} {resource}: {text}");
            assert!(text.starts_with("links.json:1:"), "{text}");
        }
    }

    #[test]
    fn a_link_to_a_missing_template_names_the_template() {
        let links = r#"[{"template_id": "nope", "link_id": "l", "args": {}}]"#;
        let text = with_links(links).err().unwrap().to_string();
        assert!(text.contains("`nope`"), "{text}");
    }

    #[test]
    fn a_good_link_is_listed_with_its_line() {
        let links = "[\n  {\n    \"template_id\": \"resource-grant-view\",\n    \"link_id\": \"g\",\n    \"args\": {\"?principal\": \"Portal::User::\\\"walt\\\"\", \"?resource\": \"Portal::Ticket::\\\"t-2001\\\"\"}\n  }\n]";
        let snap = with_links(links).unwrap();
        let info = snap.info.iter().find(|p| p.id == "g").unwrap();
        assert_eq!(info.kind, PolicyKind::Link);
        assert_eq!(info.line, Some(4));
    }
}
