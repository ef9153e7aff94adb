//! `portcullis test`: a test runner for policy repositories.
//!
//! A suite is a file of cases: a request, the entity data it is decided on, and the
//! expected decision (optionally the determining policies and the number of errors).
//! Two formats are read: the YAML format of [`yaml`], written beside the policies, and
//! the cedar CLI's `run-tests` JSON format of [`cedar_json`], so suites written for that
//! tool run unchanged. Both load into the same [`Suite`]; one runner decides every case
//! through [`crate::decision`] (the same code path as the server), and [`report`] prints
//! the results, the coverage and JUnit XML.

pub mod cedar_json;
mod entities;
pub mod report;
pub mod yaml;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::Entities;
use serde::Deserialize;

use crate::config::{ModelArgs, TestArgs};
use crate::decision::{self, Call, RawRequest};
use crate::entities::MemorySource;
use crate::model::{EntityFile, PolicyKind, Snapshot, Sources};

/// The decision a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ExpectedDecision {
    #[serde(rename = "allow", alias = "Allow")]
    Allow,
    #[serde(rename = "deny", alias = "Deny")]
    Deny,
}

impl ExpectedDecision {
    fn name(allowed: bool) -> &'static str {
        if allowed {
            "allow"
        } else {
            "deny"
        }
    }
}

/// How a case checks the determining policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasonCheck {
    /// Not checked.
    Any,
    /// Exactly these policies determined the decision (the YAML format: an empty list
    /// says that no policy applied, so the deny is the default one).
    Exactly(BTreeSet<String>),
    /// At least these policies did (the cedar CLI's semantics of `reason`).
    Includes(BTreeSet<String>),
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub decision: ExpectedDecision,
    pub reasons: ReasonCheck,
    /// Number of evaluation errors; `None` leaves it unchecked.
    pub errors: Option<usize>,
}

/// One test case: its name, and what it runs or why it cannot run (its entity data
/// does not match the schema, or in the cedar CLI format the case is malformed). A case
/// that cannot run fails alone; the rest of its file still runs.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub body: Result<CaseBody, String>,
}

/// A request, the entity data it is decided on, and the expectation.
#[derive(Debug, Clone)]
pub struct CaseBody {
    pub request: RawRequest,
    pub entities: Arc<Entities>,
    pub expect: Expectation,
}

/// One test file.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The file, as named on the command line or found in the directory.
    pub file: String,
    pub cases: Vec<Case>,
}

/// Why a test file could not be loaded; reported as one failure of that file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SuiteError {
    pub file: String,
    pub message: String,
}

impl SuiteError {
    fn new(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.display().to_string(),
            message: message.into(),
        }
    }
}

/// One field whose actual value differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub actual: String,
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The decision differs from the expectation.
    Fail(Vec<Mismatch>),
    /// The case could not be decided (bad request or entity data).
    Error(String),
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub outcome: Outcome,
    /// Policies that determined the decision.
    pub reasons: Vec<String>,
    pub elapsed: Duration,
}

/// The results of one file.
#[derive(Debug, Clone)]
pub struct SuiteResult {
    pub file: String,
    pub cases: Vec<CaseResult>,
    /// Set when the file did not load; the file then counts as one failure.
    pub load_error: Option<String>,
}

impl SuiteResult {
    pub fn passed(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| c.outcome == Outcome::Pass)
            .count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed() + usize::from(self.load_error.is_some())
    }
}

/// Decides one case and compares the result with its expectation.
pub async fn run_case(snapshot: &Snapshot, case: &Case) -> CaseResult {
    let started = Instant::now();
    let decided = match case.body.as_ref() {
        Ok(body) => decide(snapshot, body).await.map(|d| (body, d)),
        Err(e) => Err(e.clone()),
    };
    let (outcome, reasons) = match decided {
        Ok((body, d)) => (
            compare(&body.expect, d.allowed, &d.reasons, &d.errors),
            d.reasons,
        ),
        Err(e) => (Outcome::Error(e), Vec::new()),
    };
    CaseResult {
        name: case.name.clone(),
        outcome,
        reasons,
        elapsed: started.elapsed(),
    }
}

/// Decides a case through the server's pipeline, on the case's own entity data.
async fn decide(snapshot: &Snapshot, body: &CaseBody) -> Result<decision::Decision, String> {
    let checked = decision::check(snapshot, &body.request).map_err(|e| e.to_string())?;
    let source = MemorySource::new(body.entities.clone());
    let outcome = decision::decide(snapshot, &source, &Call::unrecorded(), &checked, &[]).await;
    Ok(outcome.decision())
}

fn list(ids: &BTreeSet<String>) -> String {
    format!("[{}]", ids.iter().cloned().collect::<Vec<_>>().join(", "))
}

/// Compares an actual decision with the expectation, field by field.
pub fn compare(
    expect: &Expectation,
    allowed: bool,
    reasons: &[String],
    errors: &[String],
) -> Outcome {
    let mut mismatches = Vec::new();
    let expected_allow = expect.decision == ExpectedDecision::Allow;
    if expected_allow != allowed {
        mismatches.push(Mismatch {
            field: "decision",
            expected: ExpectedDecision::name(expected_allow).to_string(),
            actual: ExpectedDecision::name(allowed).to_string(),
        });
    }
    let actual: BTreeSet<String> = reasons.iter().cloned().collect();
    match &expect.reasons {
        ReasonCheck::Any => {}
        ReasonCheck::Exactly(want) if want != &actual => mismatches.push(Mismatch {
            field: "reasons",
            expected: list(want),
            actual: list(&actual),
        }),
        ReasonCheck::Includes(want) if !want.is_subset(&actual) => mismatches.push(Mismatch {
            field: "reasons",
            expected: format!("at least {}", list(want)),
            actual: list(&actual),
        }),
        ReasonCheck::Exactly(_) | ReasonCheck::Includes(_) => {}
    }
    if let Some(want) = expect.errors {
        if want != errors.len() {
            let detail = if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            };
            mismatches.push(Mismatch {
                field: "errors",
                expected: want.to_string(),
                actual: format!("{}{detail}", errors.len()),
            });
        }
    }
    if mismatches.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(mismatches)
    }
}

/// Runs every case of a suite.
pub async fn run_suite(snapshot: &Snapshot, suite: &Suite) -> SuiteResult {
    let mut cases = Vec::with_capacity(suite.cases.len());
    for c in &suite.cases {
        cases.push(run_case(snapshot, c).await);
    }
    SuiteResult {
        file: suite.file.clone(),
        cases,
        load_error: None,
    }
}

/// The format of a test file, told by its extension and, for JSON, its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    CedarJson,
}

/// Which format a file is in; `None` for a file that is not a test suite (entity data
/// kept beside the suites, for example).
pub fn detect(path: &Path) -> Option<Format> {
    match path.extension().and_then(|x| x.to_str()) {
        Some("yaml" | "yml") => Some(Format::Yaml),
        Some("json") => {
            let text = std::fs::read_to_string(path).ok()?;
            cedar_json::looks_like_suite(&text).then_some(Format::CedarJson)
        }
        _ => None,
    }
}

/// The test files a path names: the file itself, or the suites found in a directory,
/// recursively and in name order.
pub fn discover(path: &Path) -> Result<Vec<(PathBuf, Format)>, SuiteError> {
    let meta =
        std::fs::metadata(path).map_err(|e| SuiteError::new(path, format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        // A file named on purpose must be a suite; YAML is assumed for other
        // extensions so that the error says what is wrong with it.
        let format = match path.extension().and_then(|x| x.to_str()) {
            Some("json") => detect(path).ok_or_else(|| {
                SuiteError::new(
                    path,
                    "not a cedar CLI test suite (expected a JSON array of test cases with `request`)",
                )
            })?,
            _ => Format::Yaml,
        };
        return Ok(vec![(path.to_path_buf(), format)]);
    }
    let mut found = Vec::new();
    walk(path, &mut found)?;
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<(PathBuf, Format)>) -> Result<(), SuiteError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| SuiteError::new(dir, format!("cannot read: {e}")))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, found)?;
        } else if let Some(format) = detect(&p) {
            found.push((p, format));
        }
    }
    Ok(())
}

/// Loads one test file against the snapshot's schema.
pub fn load(path: &Path, format: Format, snapshot: &Snapshot) -> Result<Suite, SuiteError> {
    match format {
        Format::Yaml => yaml::load(path, snapshot),
        Format::CedarJson => cedar_json::load(path, snapshot),
    }
}

/// Where each part of the model comes from when its flag is left out: the shipped
/// model's file at the same path under `dir` (the working directory) when it exists
/// there, so that a policy repository tests the policies on disk, and the embedded model
/// otherwise.
pub fn model_args(args: &ModelArgs, dir: &Path) -> ModelArgs {
    let embedded = Sources::embedded();
    let on_disk = |name: &str| {
        let p = dir.join(name);
        p.is_file().then(|| PathBuf::from(name))
    };
    let policies_dir = dir.join("policies");
    let policies_on_disk = crate::model::policy_files(&policies_dir).is_ok();
    ModelArgs {
        schema: args
            .schema
            .clone()
            .or_else(|| on_disk(&embedded.schema.name)),
        policies: args
            .policies
            .clone()
            .or_else(|| policies_on_disk.then(|| PathBuf::from("policies"))),
        template_links: args
            .template_links
            .clone()
            .or_else(|| embedded.links.as_ref().and_then(|l| on_disk(&l.name))),
        routes: args
            .routes
            .clone()
            .or_else(|| embedded.routes.as_ref().and_then(|r| on_disk(&r.name))),
        authzen_mapping: args
            .authzen_mapping
            .clone()
            .or_else(|| on_disk(&embedded.mapping.file().name)),
    }
}

/// Policy coverage: which policies (static and template-linked) some case made
/// determining.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Every policy that takes part in decisions, with where it is defined.
    pub total: usize,
    /// Those that no case made determining: id, kind and location.
    pub uncovered: Vec<(String, PolicyKind, String)>,
    /// Templates without any link: no case can make them determining.
    pub unlinked_templates: Vec<String>,
}

impl Coverage {
    /// Covered share in percent; 100 when there is nothing to cover.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        let covered = self.total - self.uncovered.len();
        covered as f64 * 100.0 / self.total as f64
    }

    pub fn covered(&self) -> usize {
        self.total - self.uncovered.len()
    }
}

/// Computes coverage over every case that ran, passed or not: a failing case still
/// exercised the policies that determined it.
pub fn coverage(snapshot: &Snapshot, results: &[SuiteResult]) -> Coverage {
    let determining: BTreeSet<&str> = results
        .iter()
        .flat_map(|s| s.cases.iter())
        .flat_map(|c| c.reasons.iter().map(String::as_str))
        .collect();
    let mut links_per_template: HashMap<String, usize> = HashMap::new();
    for t in snapshot.policies.templates() {
        links_per_template.insert(t.id().to_string(), 0);
    }
    for p in snapshot.policies.policies() {
        if let Some(t) = p.template_id() {
            *links_per_template.entry(t.to_string()).or_default() += 1;
        }
    }
    let mut cov = Coverage::default();
    for info in &snapshot.info {
        if info.kind == PolicyKind::Template {
            if links_per_template.get(&info.id).copied().unwrap_or(0) == 0 {
                cov.unlinked_templates.push(info.id.clone());
            }
            continue;
        }
        cov.total += 1;
        if !determining.contains(info.id.as_str()) {
            let place = match info.line {
                Some(l) => format!("{}:{l}", info.file),
                None => info.file.clone(),
            };
            cov.uncovered.push((info.id.clone(), info.kind, place));
        }
    }
    cov
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub suites: Vec<SuiteResult>,
    pub coverage: Coverage,
    pub elapsed: Duration,
}

impl RunResult {
    pub fn passed(&self) -> usize {
        self.suites.iter().map(SuiteResult::passed).sum()
    }

    pub fn failed(&self) -> usize {
        self.suites.iter().map(SuiteResult::failed).sum()
    }
}

/// Loads and runs every suite `path` names.
pub async fn run_path(snapshot: &Snapshot, path: &Path) -> Result<RunResult, SuiteError> {
    let started = Instant::now();
    let files = discover(path)?;
    if files.is_empty() {
        return Err(SuiteError::new(
            path,
            "no test files found (`*.yaml`, `*.yml`, or cedar CLI `*.json` suites)",
        ));
    }
    let mut suites: Vec<SuiteResult> = Vec::with_capacity(files.len());
    for (file, format) in &files {
        suites.push(match load(file, *format, snapshot) {
            Ok(suite) => run_suite(snapshot, &suite).await,
            Err(e) => SuiteResult {
                file: file.display().to_string(),
                cases: Vec::new(),
                load_error: Some(e.message),
            },
        });
    }
    let coverage = coverage(snapshot, &suites);
    Ok(RunResult {
        suites,
        coverage,
        elapsed: started.elapsed(),
    })
}

/// `portcullis test`: loads the model, runs the suites, prints the report. Returns the
/// exit status.
pub async fn run(args: &TestArgs, out: &mut dyn Write) -> u8 {
    let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let model = model_args(&args.model, &dir);
    let snapshot = match crate::model::load(&model, &EntityFile::External) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("the policies do not load; no test ran");
            return 2;
        }
    };
    let describe = |p: &Option<PathBuf>, embedded: bool| match p {
        Some(p) => format!("`{}`", p.display()),
        None if embedded => "(embedded)".to_string(),
        None => "none".to_string(),
    };
    let _ = writeln!(
        out,
        "model: schema {}; policies {}; template links {}",
        describe(&model.schema, true),
        describe(&model.policies, true),
        describe(&model.template_links, Sources::embedded().links.is_some()),
    );
    let result = match run_path(&snapshot, &args.path).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    report::text(&result, out);
    let min = args.min_coverage;
    if args.coverage || min.is_some() {
        report::coverage(&result.coverage, out);
    }
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, report::junit(&result)) {
            eprintln!("cannot write `{}`: {e}", path.display());
            return 2;
        }
    }
    let mut status = u8::from(result.failed() > 0);
    if let Some(min) = min {
        if result.coverage.percent() + 1e-9 < min {
            let _ = writeln!(
                out,
                "coverage {:.1}% is below the minimum of {min}%",
                result.coverage.percent()
            );
            status = 1;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn expect(
        decision: ExpectedDecision,
        reasons: ReasonCheck,
        errors: Option<usize>,
    ) -> Expectation {
        Expectation {
            decision,
            reasons,
            errors,
        }
    }

    #[test]
    fn comparison_reports_each_differing_field() {
        use ExpectedDecision::{Allow, Deny};
        let invoices = || vec!["member-invoices".to_string()];
        // (what, expectation, actual allowed, actual reasons, actual errors, fields that differ)
        type Row = (
            &'static str,
            Expectation,
            bool,
            Vec<String>,
            usize,
            Vec<&'static str>,
        );
        let table: Vec<Row> = vec![
            (
                "decision only",
                expect(Allow, ReasonCheck::Any, None),
                true,
                invoices(),
                0,
                vec![],
            ),
            (
                "wrong decision",
                expect(Deny, ReasonCheck::Any, None),
                true,
                invoices(),
                0,
                vec!["decision"],
            ),
            (
                "exact reasons match",
                expect(
                    Allow,
                    ReasonCheck::Exactly(ids(&["member-invoices"])),
                    Some(0),
                ),
                true,
                invoices(),
                0,
                vec![],
            ),
            (
                "exact reasons: one too few expected",
                expect(Allow, ReasonCheck::Exactly(ids(&[])), None),
                true,
                invoices(),
                0,
                vec!["reasons"],
            ),
            (
                "cedar reasons: a subset passes",
                expect(Allow, ReasonCheck::Includes(ids(&[])), Some(0)),
                true,
                invoices(),
                0,
                vec![],
            ),
            (
                "cedar reasons: a missing one fails",
                expect(
                    Allow,
                    ReasonCheck::Includes(ids(&["owner-on-account"])),
                    None,
                ),
                true,
                invoices(),
                0,
                vec!["reasons"],
            ),
            (
                "error count",
                expect(Deny, ReasonCheck::Any, Some(0)),
                false,
                vec![],
                1,
                vec!["errors"],
            ),
            (
                "everything wrong",
                expect(Deny, ReasonCheck::Exactly(ids(&["x"])), Some(2)),
                true,
                invoices(),
                0,
                vec!["decision", "reasons", "errors"],
            ),
        ];
        for (what, exp, allowed, reasons, errors, fields) in table {
            let errors: Vec<String> = (0..errors).map(|i| format!("error {i}")).collect();
            let got = match compare(&exp, allowed, &reasons, &errors) {
                Outcome::Pass => vec![],
                Outcome::Fail(m) => m.iter().map(|m| m.field).collect(),
                Outcome::Error(e) => panic!("{what}: unexpected error {e}"),
            };
            assert_eq!(got, fields, "{what}");
        }
    }
}
