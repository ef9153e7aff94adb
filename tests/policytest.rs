//! `portcullis test` and `portcullis fmt`, run as the built binary the way a policy
//! repository's CI runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::model::EntityFile;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo_entities() -> String {
    repo()
        .join("examples/portal/entities.json")
        .display()
        .to_string()
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary in `cwd` with `args`.
fn portcullis(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs");
    Run {
        status: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes a YAML suite on the demo data with the given cases into a fresh directory.
fn yaml_suite(dir: &Path, name: &str, cases: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("entities: {}\ncases:\n{cases}", demo_entities()),
    )
    .unwrap();
    path
}

/// The number of static policies in the shipped model on disk.
fn static_policies() -> usize {
    let model = portcullis::config::ModelArgs {
        schema: Some(repo().join("schema/portal.cedarschema")),
        policies: Some(repo().join("policies")),
        ..Default::default()
    };
    let snapshot = portcullis::model::load(&model, &EntityFile::External).unwrap();
    snapshot
        .info
        .iter()
        .filter(|p| p.kind == portcullis::model::PolicyKind::Static)
        .count()
}

#[test]
fn the_shipped_suites_pass_with_full_coverage() {
    let run = portcullis(&repo(), &["test", "--coverage", "--min-coverage", "100"]);
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(" passed, 0 failed"), "{}", run.stdout);
    let snapshot = portcullis::model::load(
        &portcullis::config::ModelArgs {
            schema: Some(repo().join("schema/portal.cedarschema")),
            policies: Some(repo().join("policies")),
            template_links: Some(repo().join("policies/links.json")),
            ..Default::default()
        },
        &EntityFile::External,
    )
    .unwrap();
    let n = snapshot.active_policy_count();
    let line =
        format!("policy coverage: {n} of {n} policies determining in at least one case (100.0%)");
    assert!(run.stdout.contains(&line), "{line}\n{}", run.stdout);
    assert!(!run.stdout.contains("not covered"), "{}", run.stdout);
    // The model came from the files on disk, not the embedded copy.
    assert!(run.stdout.contains("policies `policies`"), "{}", run.stdout);
}

#[tokio::test]
async fn the_shipped_suites_cover_every_policy_of_the_snapshot() {
    // The same check through the library, against whatever the snapshot holds, so a
    // policy added without a test case fails here even if the count above is updated.
    // The model `portcullis test` picks when run from the repository root (cargo runs
    // integration tests there).
    let model = portcullis::policytest::model_args(&Default::default(), &repo());
    assert!(model.policies.is_some() && model.schema.is_some());
    let snapshot = portcullis::model::load(&model, &EntityFile::External).unwrap();
    let result = portcullis::policytest::run_path(&snapshot, &repo().join("policies/tests"))
        .await
        .unwrap();
    assert_eq!(result.failed(), 0);
    assert!(
        result.coverage.uncovered.is_empty(),
        "{:?}",
        result.coverage.uncovered
    );
    assert_eq!(result.coverage.total, snapshot.active_policy_count());
}

#[test]
fn without_the_model_on_disk_the_embedded_model_is_tested() {
    let elsewhere = tempfile::tempdir().unwrap();
    let tests = repo().join("policies/tests");
    let run = portcullis(elsewhere.path(), &["test", tests.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("model: schema (embedded); policies (embedded)"),
        "{}",
        run.stdout
    );
}

/// A failing case and the lines its diff must show.
struct Failing {
    what: &'static str,
    case: &'static str,
    diff: &'static [&'static str],
}

const FAILING: &[Failing] = &[
    Failing {
        what: "a wrong expected decision",
        case: r#"
  - name: the webmaster may view acme's invoice
    principal: Portal::User::"walt"
    action: Portal::Action::"ViewInvoice"
    resource: Portal::Invoice::"inv-1001"
    decision: allow
"#,
        diff: &[
            "FAIL  the webmaster may view acme's invoice",
            "- decision: allow",
            "+ decision: deny",
        ],
    },
    Failing {
        what: "a wrong reason",
        case: r#"
  - name: the bookkeeper pays as the owner
    principal: Portal::User::"bea"
    action: Portal::Action::"PayInvoice"
    resource: Portal::Invoice::"inv-1001"
    decision: allow
    reasons: [owner-on-account-objects]
"#,
        diff: &[
            "FAIL  the bookkeeper pays as the owner",
            "- reasons: [owner-on-account-objects]",
            "+ reasons: [member-invoices]",
        ],
    },
    Failing {
        what: "an error count mismatch",
        case: r#"
  - name: a missing invoice is denied without errors
    principal: Portal::User::"bea"
    action: Portal::Action::"ViewInvoice"
    resource: Portal::Invoice::"inv-missing"
    decision: deny
    errors: 0
"#,
        diff: &[
            "FAIL  a missing invoice is denied without errors",
            "- errors: 0",
            "+ errors: 1 (the resource `Portal::Invoice::\"inv-missing\"` does not exist",
        ],
    },
    Failing {
        what: "a request the schema rejects",
        case: r#"
  - name: the bookkeeper may fly
    principal: Portal::User::"bea"
    action: Portal::Action::"Fly"
    resource: Portal::Account::"acme"
    decision: allow
"#,
        diff: &[
            "ERROR the bookkeeper may fly",
            "action `Portal::Action::\"Fly\"` is not declared in the schema",
        ],
    },
];

const PASSING: &str = r#"
  - name: the bookkeeper may pay acme's invoice
    principal: Portal::User::"bea"
    action: Portal::Action::"PayInvoice"
    resource: Portal::Invoice::"inv-1001"
    decision: allow
    reasons: [member-invoices]
    errors: 0
"#;

#[test]
fn each_kind_of_failure_fails_the_run_with_its_diff() {
    for f in FAILING {
        let dir = tempfile::tempdir().unwrap();
        let suite = yaml_suite(dir.path(), "suite.yaml", &format!("{PASSING}{}", f.case));
        let run = portcullis(&repo(), &["test", suite.to_str().unwrap()]);
        assert_eq!(run.status, 1, "{}: {}", f.what, run.stdout);
        for line in f.diff {
            assert!(
                run.stdout.contains(line),
                "{}: `{line}` missing in\n{}",
                f.what,
                run.stdout
            );
        }
        assert!(run
            .stdout
            .contains("ok    the bookkeeper may pay acme's invoice"));
        assert!(
            run.stdout.contains("\n1 passed, 1 failed"),
            "{}: {}",
            f.what,
            run.stdout
        );
    }
}

#[test]
fn a_file_that_does_not_load_counts_as_a_failure_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    yaml_suite(dir.path(), "good.yaml", PASSING);
    // `decison` is misspelt: unknown keys are errors, so the case cannot pass silently.
    yaml_suite(
        dir.path(),
        "typo.yaml",
        "  - name: typo\n    principal: Portal::User::\"bea\"\n    action: Portal::Action::\"Login\"\n    resource: Portal::Account::\"acme\"\n    decison: allow\n",
    );
    let run = portcullis(&repo(), &["test", dir.path().to_str().unwrap()]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    assert!(run.stdout.contains("typo.yaml"), "{}", run.stdout);
    assert!(
        run.stdout.contains("unknown field `decison`"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("1 passed, 1 failed"), "{}", run.stdout);
}

#[test]
fn junit_xml_is_well_formed_with_the_right_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cases: String = FAILING.iter().map(|f| f.case).collect();
    yaml_suite(dir.path(), "a.yaml", &format!("{PASSING}{cases}"));
    yaml_suite(dir.path(), "b.yaml", PASSING);
    std::fs::write(dir.path().join("c.yaml"), "cases: [ not closed").unwrap();
    let xml_path = dir.path().join("out/junit.xml");
    std::fs::create_dir_all(xml_path.parent().unwrap()).unwrap();
    let run = portcullis(
        &repo(),
        &[
            "test",
            dir.path().to_str().unwrap(),
            "--junit",
            xml_path.to_str().unwrap(),
        ],
    );
    assert_eq!(run.status, 1, "{}", run.stdout);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    // a.yaml: 1 pass, 3 mismatches, 1 schema error; b.yaml: 1 pass; c.yaml: load error.
    assert_eq!(root.attribute("tests"), Some("7"));
    assert_eq!(root.attribute("failures"), Some("3"));
    assert_eq!(root.attribute("errors"), Some("2"));
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 3);
    let a = suites[0];
    assert!(a.attribute("name").unwrap().ends_with("a.yaml"));
    assert_eq!(a.attribute("tests"), Some("5"));
    let failure = a
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .expect("a failure element");
    assert!(failure
        .attribute("message")
        .unwrap()
        .contains("decision: expected allow, got deny"));
    assert!(failure.text().unwrap().contains("+ decision: deny"));
    let c = suites[2];
    assert_eq!(c.attribute("errors"), Some("1"));
    // Names with quotes and apostrophes survive escaping.
    assert!(doc
        .descendants()
        .any(|n| n.attribute("name") == Some("the webmaster may view acme's invoice")));
}

#[test]
fn cedar_cli_suites_run_unchanged() {
    let shipped = repo().join("policies/tests/cedar-cli/bookkeeper.json");
    let run = portcullis(&repo(), &["test", shipped.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(run.stdout.contains("5 passed, 0 failed"), "{}", run.stdout);

    // An entity file named relative to the test file; `reason` is a subset of the
    // determining policies, as in the cedar CLI, so `[]` passes an allow.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(demo_entities(), dir.path().join("entities.json")).unwrap();
    let suite = serde_json::json!([
        {
            "name": "the owner may view acme's invoice",
            "request": {
                "principal": "Portal::User::\"olivia\"",
                "action": "Portal::Action::\"ViewInvoice\"",
                "resource": "Portal::Invoice::\"inv-1001\"",
                "context": {}
            },
            "entities": "entities.json",
            "decision": "allow",
            "reason": [],
            "num_errors": 0
        },
        {
            "request": {
                "principal": "Portal::User::\"walt\"",
                "action": "Portal::Action::\"ViewInvoice\"",
                "resource": "Portal::Invoice::\"inv-1001\"",
                "context": {}
            },
            "entities": "entities.json",
            "decision": "deny",
            "reason": ["member-invoices"],
            "num_errors": 0
        }
    ]);
    let path = dir.path().join("tests.json");
    std::fs::write(&path, suite.to_string()).unwrap();
    let run = portcullis(&repo(), &["test", dir.path().to_str().unwrap()]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    // The entity file beside the suite is data, not a suite.
    assert!(
        run.stdout.contains("running 2 case(s) from 1 file(s)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("ok    the owner may view acme's invoice"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("FAIL  (unnamed #2)"), "{}", run.stdout);
    assert!(
        run.stdout.contains("- reasons: at least [member-invoices]"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("+ reasons: []"), "{}", run.stdout);
    assert!(run.stdout.contains("1 passed, 1 failed"), "{}", run.stdout);
}

#[test]
fn coverage_lists_what_no_case_made_determining_and_min_coverage_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let suite = yaml_suite(dir.path(), "one.yaml", PASSING);
    let run = portcullis(&repo(), &["test", suite.to_str().unwrap(), "--coverage"]);
    assert_eq!(run.status, 0, "coverage alone only reports: {}", run.stdout);
    assert!(
        run.stdout.contains("policy coverage: 1 of "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("not covered: policy `member-quotes` (policies/members.cedar:"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("`member-invoices`"), "{}", run.stdout);

    let run = portcullis(
        &repo(),
        &["test", suite.to_str().unwrap(), "--min-coverage", "50"],
    );
    assert_eq!(run.status, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("below the minimum of 50%"),
        "{}",
        run.stdout
    );
}

#[test]
fn coverage_counts_template_links_by_link_id() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|x| x == "cedar") {
            std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        policies.join("test-grants.cedar"),
        r#"@id("invoice-grant")
permit (
  principal == ?principal,
  action == Portal::Action::"ViewInvoice",
  resource == ?resource
);

@id("quote-grant")
permit (
  principal == ?principal,
  action == Portal::Action::"ViewQuote",
  resource == ?resource
);
"#,
    )
    .unwrap();
    let links = dir.path().join("links.json");
    std::fs::write(
        &links,
        serde_json::json!([
            {"template_id": "invoice-grant", "link_id": "walt-sees-inv-1001",
             "args": {"?principal": "Portal::User::\"walt\"", "?resource": "Portal::Invoice::\"inv-1001\""}},
            {"template_id": "invoice-grant", "link_id": "walt-sees-inv-9001",
             "args": {"?principal": "Portal::User::\"walt\"", "?resource": "Portal::Invoice::\"inv-9001\""}}
        ])
        .to_string(),
    )
    .unwrap();
    let suite = yaml_suite(
        dir.path(),
        "grants.yaml",
        r#"
  - name: the owner's grant lets the webmaster view acme's invoice
    principal: Portal::User::"walt"
    action: Portal::Action::"ViewInvoice"
    resource: Portal::Invoice::"inv-1001"
    decision: allow
    reasons: [walt-sees-inv-1001]
"#,
    );
    let schema = repo().join("schema/portal.cedarschema");
    let run = portcullis(
        dir.path(),
        &[
            "test",
            suite.to_str().unwrap(),
            "--schema",
            schema.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
            "--template-links",
            links.to_str().unwrap(),
            "--coverage",
        ],
    );
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    // The static policies and the 2 links; templates themselves are not counted.
    let expected = format!("1 of {} policies", static_policies() + 2);
    assert!(run.stdout.contains(&expected), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("not covered: template-linked policy `walt-sees-inv-9001`"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("`walt-sees-inv-1001`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("note: template `quote-grant` has no links"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("`invoice-grant`"), "{}", run.stdout);
}

#[test]
fn a_model_that_does_not_load_runs_no_test() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.cedar");
    std::fs::write(
        &broken,
        "permit (principal, action, resource) when { nope };",
    )
    .unwrap();
    let run = portcullis(&repo(), &["test", "--policies", broken.to_str().unwrap()]);
    assert_eq!(run.status, 2, "{}", run.stdout);
    assert!(run.stderr.contains("broken.cedar:1:"), "{}", run.stderr);
}

#[test]
fn the_shipped_policies_are_formatted() {
    let run = portcullis(&repo(), &["fmt", "--check"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn fmt_check_finds_an_unformatted_file_and_fmt_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let formatted = repo().join("policies/guards.cedar");
    std::fs::copy(&formatted, dir.path().join("guards.cedar")).unwrap();
    let messy = dir.path().join("messy.cedar");
    let original = "// Members may log in.\n@id(\"member-login\")\npermit(principal is Portal::User,action==Portal::Action::\"Login\",resource is Portal::Account) when {principal in resource};\n";
    std::fs::write(&messy, original).unwrap();

    let run = portcullis(dir.path(), &["fmt", "--check", "."]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("not formatted: ./messy.cedar"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("guards.cedar"), "{}", run.stdout);
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap(),
        original,
        "--check writes nothing"
    );

    let run = portcullis(dir.path(), &["fmt", "."]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let fixed = std::fs::read_to_string(&messy).unwrap();
    assert_eq!(
        fixed,
        "// Members may log in.\n@id(\"member-login\")\npermit (\n  principal is Portal::User,\n  action == Portal::Action::\"Login\",\n  resource is Portal::Account\n)\nwhen { principal in resource };\n"
    );
    let run = portcullis(dir.path(), &["fmt", "--check", "."]);
    assert_eq!(run.status, 0, "{}", run.stdout);
}

#[test]
fn fmt_reports_a_file_that_does_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.cedar");
    std::fs::write(&bad, "permit (principal, action").unwrap();
    let run = portcullis(dir.path(), &["fmt", "bad.cedar"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr
            .contains("bad.cedar: cannot parse input policies"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&bad).unwrap(),
        "permit (principal, action"
    );
}
