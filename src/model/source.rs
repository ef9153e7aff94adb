//! The model's source files: where each comes from (a path the flags name, or the
//! shipped portal model compiled into the binary), and the problems found in them,
//! each placed at `file:line:col`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::ModelArgs;

/// The shipped portal model, compiled into the binary so that it runs from anywhere.
pub mod embedded {
    /// Display name and text of the shipped schema.
    pub const SCHEMA: (&str, &str) = (
        "schema/portal.cedarschema",
        include_str!("../../schema/portal.cedarschema"),
    );
    /// Display names and texts of the shipped policy files.
    pub const POLICIES: &[(&str, &str)] = &[
        (
            "policies/email.cedar",
            include_str!("../../policies/email.cedar"),
        ),
        (
            "policies/grants.cedar",
            include_str!("../../policies/grants.cedar"),
        ),
        (
            "policies/guards.cedar",
            include_str!("../../policies/guards.cedar"),
        ),
        (
            "policies/members.cedar",
            include_str!("../../policies/members.cedar"),
        ),
        (
            "policies/owner.cedar",
            include_str!("../../policies/owner.cedar"),
        ),
    ];
    /// Display name and text of the shipped template links.
    pub const LINKS: (&str, &str) = (
        "policies/links.json",
        include_str!("../../policies/links.json"),
    );
    /// Display name and text of the shipped gateway route table.
    pub const ROUTES: (&str, &str) = (
        "policies/routes.yaml",
        include_str!("../../policies/routes.yaml"),
    );
    /// Display name and text of the shipped AuthZEN mapping.
    pub const MAPPING: (&str, &str) = (
        "examples/portal/authzen.yaml",
        include_str!("../../examples/portal/authzen.yaml"),
    );
    /// Display name and text of the demo entity data.
    pub const ENTITIES: (&str, &str) = (
        "examples/portal/entities.json",
        include_str!("../../examples/portal/entities.json"),
    );
}

/// One source file: the name shown in problems and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    /// The path it was read from; `None` for text compiled into the binary. The
    /// reload watcher watches these paths.
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
    pub fn read(path: &Path) -> Result<Self, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems::single(Problem::file(
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

/// Where the model's entity data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityFile {
    /// The shipped demo data (another schema must fit it, or name its own data).
    Shipped,
    /// A Cedar JSON entity file.
    Path(PathBuf),
    /// None in the model: the data lives in an external store (Redis).
    External,
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub schema: SourceFile,
    pub policies: Vec<SourceFile>,
    pub links: Option<SourceFile>,
    /// The gateway route table.
    pub routes: Option<SourceFile>,
    /// The AuthZEN mapping.
    pub mapping: Mapping,
    /// Entity data held by the model (the file source); `None` when the data lives in
    /// an external store or no data is configured.
    pub entities: Option<SourceFile>,
}

/// The AuthZEN mapping's source. A mapping named by the operator must fit the schema;
/// the shipped portal mapping is tolerated on other schemas (its entries that name
/// nothing are ignored), so any schema can be served without writing one.
#[derive(Debug, Clone)]
pub enum Mapping {
    Shipped(SourceFile),
    File(SourceFile),
}

impl Mapping {
    pub fn file(&self) -> &SourceFile {
        match self {
            Mapping::Shipped(f) | Mapping::File(f) => f,
        }
    }
}

impl Sources {
    /// The shipped portal model with its demo data.
    pub fn embedded() -> Self {
        Self {
            schema: SourceFile::new(embedded::SCHEMA.0, embedded::SCHEMA.1),
            policies: embedded::POLICIES
                .iter()
                .map(|(name, text)| SourceFile::new(*name, *text))
                .collect(),
            links: Some(SourceFile::new(embedded::LINKS.0, embedded::LINKS.1)),
            routes: Some(SourceFile::new(embedded::ROUTES.0, embedded::ROUTES.1)),
            mapping: Mapping::Shipped(SourceFile::new(embedded::MAPPING.0, embedded::MAPPING.1)),
            entities: Some(SourceFile::new(embedded::ENTITIES.0, embedded::ENTITIES.1)),
        }
    }

    /// Reads the sources the flags name, each falling back to the shipped model.
    pub fn read(args: &ModelArgs, entities: &EntityFile) -> Result<Self, Problems> {
        let mut sources = Self::embedded();
        if let Some(path) = &args.schema {
            sources.schema = SourceFile::read(path)?;
            // The shipped route table belongs to the shipped schema.
            sources.routes = None;
        }
        if let Some(path) = &args.policies {
            sources.policies = policy_files(path)?
                .iter()
                .map(|p| SourceFile::read(p))
                .collect::<Result<_, _>>()?;
            // The shipped links name the shipped templates; other policies bring their
            // own links file or none.
            sources.links = None;
        }
        if let Some(path) = &args.template_links {
            sources.links = Some(SourceFile::read(path)?);
        }
        if let Some(path) = &args.routes {
            sources.routes = Some(SourceFile::read(path)?);
        }
        if let Some(path) = &args.authzen_mapping {
            sources.mapping = Mapping::File(SourceFile::read(path)?);
        }
        match entities {
            EntityFile::Shipped => {}
            EntityFile::Path(path) => sources.entities = Some(SourceFile::read(path)?),
            EntityFile::External => sources.entities = None,
        }
        Ok(sources)
    }

    /// Every source file. A new kind of source must be listed here: this is how the
    /// reload watcher learns which files to watch and how the snapshot's hash covers
    /// every input. The destructuring has no `..` so that adding a field without
    /// listing it fails to compile.
    pub fn files(&self) -> Vec<&SourceFile> {
        let Self {
            schema,
            policies,
            links,
            routes,
            mapping,
            entities,
        } = self;
        std::iter::once(schema)
            .chain(policies.iter())
            .chain(links.iter())
            .chain(routes.iter())
            .chain(std::iter::once(mapping.file()))
            .chain(entities.iter())
            .collect()
    }

    /// SHA-256 over every source file's name and text, hex: the snapshot built from
    /// these sources carries it as its `hash`, so a reload can tell that the files
    /// still say what serves without compiling them.
    pub fn content_hash(&self) -> String {
        let files = self.files();
        let mut all: Vec<&str> = Vec::with_capacity(files.len() * 2);
        for f in &files {
            all.push(&f.name);
            all.push(&f.text);
        }
        super::compile::sha256_hex(&all)
    }
}

/// The line that confirms that a policy file is meant to hold no policies. Without it a
/// reload that takes every policy out of a file that still exists is rejected: a file
/// caught truncated mid-write parses as a valid empty file, and serving it would drop
/// the file's guards.
pub const EMPTY_MARKER: &str = "// portcullis: empty";

/// Whether `text` carries [`EMPTY_MARKER`] on a line of its own.
pub fn confirms_empty(text: &str) -> bool {
    text.lines().any(|l| l.trim() == EMPTY_MARKER)
}

/// The `.cedar` files a policies path names: the file itself, or a directory's
/// `*.cedar` files in name order (not recursive, so test and invariant folders beside
/// the policies are not read as policies).
pub fn policy_files(path: &Path) -> Result<Vec<PathBuf>, Problems> {
    let unreadable = |e: std::io::Error| {
        Problems::single(Problem::file(
            path.display().to_string(),
            format!("cannot read: {e}"),
        ))
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(unreadable)?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Problems::single(Problem::file(
            path.display().to_string(),
            "no `.cedar` files in this directory".to_string(),
        )));
    }
    Ok(files)
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
    /// A problem of a whole file.
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// A problem at a byte offset of a file.
    pub fn at(file: &SourceFile, offset: Option<usize>, message: impl Into<String>) -> Self {
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
            message: message.into(),
        }
    }

    /// A problem at a known line and column (1-based) of a file.
    pub fn at_line(
        file: &SourceFile,
        line: Option<usize>,
        column: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.name.clone(),
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem that stopped a load. Never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn single(p: Problem) -> Self {
        Self(vec![p])
    }
}

impl fmt::Display for Problems {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn the_embedded_policies_are_exactly_the_policies_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let on_disk: Vec<String> = policy_files(&root.join("policies"))
            .unwrap()
            .iter()
            .map(|p| format!("policies/{}", p.file_name().unwrap().to_string_lossy()))
            .collect();
        let embedded: Vec<String> = embedded::POLICIES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(embedded, on_disk, "update `model::embedded::POLICIES`");
        let mut files: Vec<(&str, &str)> = embedded::POLICIES.to_vec();
        files.extend([
            embedded::SCHEMA,
            embedded::LINKS,
            embedded::ROUTES,
            embedded::MAPPING,
            embedded::ENTITIES,
        ]);
        for (name, text) in files {
            let disk = std::fs::read_to_string(root.join(name)).unwrap();
            assert_eq!(text, disk, "{name}");
        }
    }

    #[test]
    fn another_schema_drops_the_shipped_routes_but_not_the_demo_data() {
        let dir = tempfile::tempdir().unwrap();
        let schema = dir.path().join("app.cedarschema");
        std::fs::write(&schema, "entity A;").unwrap();
        let args = ModelArgs {
            schema: Some(schema),
            ..ModelArgs::default()
        };
        let sources = Sources::read(&args, &EntityFile::Shipped).unwrap();
        assert!(sources.routes.is_none());
        assert!(sources.entities.is_some());
        let shipped = Sources::read(&ModelArgs::default(), &EntityFile::External).unwrap();
        assert!(shipped.routes.is_some());
        assert!(shipped.entities.is_none());
    }
}
