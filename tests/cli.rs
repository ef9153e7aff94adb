#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
//! The command line: `validate`, `authorize`, and `serve` as a process (start-up
//! errors, the decision log, graceful shutdown on SIGTERM).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of the shipped policies in a temporary directory, with one file replaced.
fn policies_with(file: &str, content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cedar") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.path().join(file), content).unwrap();
    dir
}

#[test]
fn validate_accepts_the_shipped_model() {
    let out = run(&["validate"]);
    assert!(out.status.success(), "{}", text(&out));
    let from_disk = run(&[
        "validate",
        "--schema",
        repo("schema/portal.cedarschema").to_str().unwrap(),
        "--policies",
        repo("policies").to_str().unwrap(),
    ]);
    assert!(from_disk.status.success(), "{}", text(&from_disk));
    // Valid, with one warning: the isolation guard reads the resource's account's
    // owner, so it would be skipped for an account missing from the data.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: policies/guards.cedar:23: forbid `user-account-isolation` reads `resource.account.owner`"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_a_broken_policy_at_its_line() {
    let broken = "// a comment\n@id(\"broken\")\npermit (principal, action, resource)\nwhen { principal.nosuch == 1 && };\n";
    let dir = policies_with("zz-broken.cedar", broken);
    let out = run(&["validate", "--policies", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("zz-broken.cedar").display().to_string();
    assert!(
        stderr.contains(&format!("{file}:4:")),
        "syntax error located on line 4: {stderr}"
    );
}

#[test]
fn validate_reports_every_schema_violation_with_its_location() {
    let bad = "@id(\"typo-attr\")\npermit (principal is Portal::User, action, resource)\nwhen { principal.disabeld };\n\n@id(\"wrong-type\")\npermit (principal is Portal::User, action, resource)\nwhen { principal.email == 3 };\n";
    let dir = policies_with("zz-bad.cedar", bad);
    let out = run(&["validate", "--policies", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("zz-bad.cedar").display().to_string();
    assert!(
        stderr.contains(&format!("{file}:3:")) && stderr.contains("typo-attr"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:7:")) && stderr.contains("wrong-type"),
        "{stderr}"
    );
}

#[test]
fn validate_rejects_duplicate_policy_ids() {
    let dup = "@id(\"owner-on-account\")\npermit (principal, action, resource) when { false };\n";
    let dir = policies_with("zz-dup.cedar", dup);
    let out = run(&["validate", "--policies", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("duplicate policy id `owner-on-account`"),
        "{stderr}"
    );
    assert!(stderr.contains("zz-dup.cedar:1:"), "{stderr}");
}

/// The demo data with its user `bea` changed by `edit`, written to a temporary file.
fn data_with(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, String) {
    let mut data: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("examples/portal/entities.json")).unwrap(),
    )
    .unwrap();
    let bea = data
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["uid"]["type"] == "Portal::User" && e["uid"]["id"] == "bea")
        .expect("the demo data has bea");
    edit(bea);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("entities.json");
    std::fs::write(&path, data.to_string()).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

/// Entity files that do not fit the portal schema, and what the message must say:
/// the entity's uid, the attribute or parent at fault, and what the schema expects.
fn misfit_data() -> Vec<(&'static str, (tempfile::TempDir, String), &'static str)> {
    vec![
        (
            "a wrong-typed attribute",
            data_with(|bea| bea["attrs"]["disabled"] = "no".into()),
            r#"entity `Portal::User::"bea"`: attribute `disabled` must be Bool, found `"no"`"#,
        ),
        (
            "a missing required attribute",
            data_with(|bea| {
                bea["attrs"].as_object_mut().unwrap().remove("email");
            }),
            r#"entity `Portal::User::"bea"`: required attribute `email` (String) is missing"#,
        ),
        (
            "an unknown entity type",
            data_with(|bea| bea["uid"]["type"] = "Portal::Robot".into()),
            r#"entity `Portal::Robot::"bea"`: entity type `Portal::Robot` is not declared in the schema (declared: `Portal::Account`"#,
        ),
        (
            "an unknown parent type",
            data_with(|bea| {
                bea["parents"] = serde_json::json!([{"type": "Portal::Robot", "id": "r2"}]);
            }),
            r#"entity `Portal::User::"bea"`: parent `Portal::Robot::"r2"` has type `Portal::Robot`, but a `Portal::User` may only be in `Portal::Account`"#,
        ),
    ]
}

#[test]
fn validate_names_the_entity_attribute_and_expected_type_of_data_that_does_not_fit() {
    for (what, (_dir, path), expected) in misfit_data() {
        let out = run(&["validate", "--entities", &path]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{path}: entity data does not conform to the schema: {expected}"
            )),
            "{what}: {stderr}"
        );
    }
    let out = run(&[
        "validate",
        "--entities",
        repo("examples/portal/entities.json").to_str().unwrap(),
        "--authzen-mapping",
        repo("examples/portal/authzen.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("entities in"), "{stdout}");
    assert!(stdout.contains("conform to the schema"), "{stdout}");
}

#[test]
fn validate_checks_an_authzen_mapping_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("authzen.yaml");
    std::fs::write(
        &mapping,
        "entity_types:\n  user: Portal::User\n  robot: Portal::Robot\n",
    )
    .unwrap();
    let out = run(&["validate", "--authzen-mapping", mapping.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:3: `entity_types.robot`: entity type `Portal::Robot` is not declared in the schema",
            mapping.display()
        )),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_to_start_on_data_that_does_not_fit_and_names_the_misfit() {
    for (what, (_dir, path), expected) in misfit_data() {
        let out = run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--entities",
            &path,
        ]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        assert!(text(&out).contains(expected), "{what}: {}", text(&out));
    }
}

#[test]
fn authorize_prints_the_decision_and_its_determining_policies() {
    let allow = run(&[
        "authorize",
        "--principal",
        r#"Portal::User::"bea""#,
        "--action",
        r#"Portal::Action::"PayInvoice""#,
        "--resource",
        r#"Portal::Invoice::"inv-1001""#,
    ]);
    assert_eq!(allow.status.code(), Some(0), "{}", text(&allow));
    let out = String::from_utf8_lossy(&allow.stdout);
    assert!(out.starts_with("ALLOW"), "{out}");
    assert!(
        out.contains("member-invoices (policies/members.cedar:"),
        "{out}"
    );

    let deny = run(&[
        "authorize",
        "--principal",
        r#"Portal::User::"bea""#,
        "--action",
        r#"Portal::Action::"UpdatePaymentMethod""#,
        "--resource",
        r#"Portal::Account::"acme""#,
        "--context",
        r#"{"secondFactor": false}"#,
    ]);
    assert_eq!(deny.status.code(), Some(1), "{}", text(&deny));
    let out = String::from_utf8_lossy(&deny.stdout);
    assert!(
        out.starts_with("DENY") && out.contains("payment-method-needs-second-factor"),
        "{out}"
    );

    let bad = run(&[
        "authorize",
        "--principal",
        "bea",
        "--action",
        "x",
        "--resource",
        "y",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("`principal`"),
        "{}",
        text(&bad)
    );
}

#[test]
fn serve_refuses_to_start_on_an_invalid_policy_set() {
    let dir = policies_with(
        "zz-broken.cedar",
        "permit (principal, action, resource) when { nosuch };\n",
    );
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--policies",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let file = dir.path().join("zz-broken.cedar").display().to_string();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{file}:1:")),
        "{}",
        text(&out)
    );
}

#[test]
fn check_config_loads_everything_and_exits() {
    let out = run(&["serve", "--check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configuration ok"),
        "{}",
        text(&out)
    );
}

/// Reads JSON log lines until one satisfies `want`, within a deadline.
fn wait_for_line(
    lines: &mut impl Iterator<Item = String>,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if want(&v) {
                return v;
            }
        }
    }
    panic!("no matching log line before the deadline or end of output");
}

#[test]
fn serve_logs_decisions_as_json_lines_and_drains_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--decision-log", "on"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let started = wait_for_line(&mut lines, |v| v["message"] == "portcullis serving");
    let addr = started["listen"].as_str().unwrap().to_string();

    let body = r#"{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\""}"#;
    let answered = common::send_blocking(
        addr.parse().unwrap(),
        http::Method::POST,
        "/v1/is_authorized",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "log-me"),
        ],
        body.as_bytes().to_vec(),
    )
    .unwrap();
    assert_eq!(answered.json["decision"], "Allow", "{}", answered.text);

    let logged = wait_for_line(&mut lines, |v| v["target"] == "portcullis::decision");
    assert_eq!(logged["request_id"], "log-me");
    assert_eq!(logged["principal"], r#"Portal::User::"bea""#);
    assert_eq!(logged["action"], r#"Portal::Action::"PayInvoice""#);
    assert_eq!(logged["resource"], r#"Portal::Invoice::"inv-1001""#);
    assert_eq!(logged["decision"], "Allow");
    assert!(
        logged["policies"]
            .as_str()
            .unwrap()
            .contains("member-invoices"),
        "{logged}"
    );
    assert!(logged["latency_us"].is_u64(), "{logged}");

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    wait_for_line(&mut lines, |v| v["message"] == "all connections closed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
}
