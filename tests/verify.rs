//! `portcullis verify` against the real cvc5 solver (the binary named by `CVC5`, or
//! the wheel wrapper that `scripts/deps/cvc5.sh` links into `.tools/bin`). Every
//! counterexample is sent to a real server loaded with the mutated policies and the
//! counterexample's entities, to see the wrong decision with our own eyes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestServer;
use portcullis::config::{EntityArgs, ModelArgs, ServeArgs};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The solver every test uses. A missing solver fails the suite: these tests are the
/// only proof the invariants hold, and skipping them would report a proof never made.
fn solver() -> PathBuf {
    if let Some(p) = std::env::var_os("CVC5") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("cvc5");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let local = repo().join(".tools/bin/cvc5");
    assert!(
        local.exists(),
        "no cvc5 solver: set CVC5=/path/to/cvc5 (1.3.1) or run `bash scripts/deps/cvc5.sh`"
    );
    local
}

struct Run {
    status: i32,
    json: Value,
    stdout: String,
    stderr: String,
}

fn verify(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("verify")
        .args(args)
        .env("CVC5", solver())
        .current_dir(repo())
        .output()
        .expect("portcullis runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    Run {
        status: out.status.code().unwrap_or(-1),
        json,
        stdout,
        stderr,
    }
}

/// The shipped policy files copied to a temporary directory, for editing. The
/// invariants stay where they are and are named with `--invariants`.
fn shipped_policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "cedar") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Replaces text in a policy file; the text must be there, so that a change to the
/// shipped policies fails this test instead of silently not mutating anything.
fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(from),
        "{file} no longer contains the text this mutation edits:\n{from}"
    );
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// Removes the policy with this `@id` (up to the `;` that ends it).
fn remove_policy(dir: &Path, file: &str, id: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("@id(\"{id}\")");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("{file} no longer holds the policy `{id}`"));
    let end = start + text[start..].find(';').unwrap() + 1;
    let mut out = text[..start].to_string();
    out.push_str(&text[end..]);
    std::fs::write(&path, out).unwrap();
}

fn append(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    let mut all = std::fs::read_to_string(&path).unwrap_or_default();
    all.push('\n');
    all.push_str(text);
    std::fs::write(&path, all).unwrap();
}

fn invariants_dir() -> String {
    repo().join("policies/invariants").display().to_string()
}

fn failing(run: &Run) -> Vec<String> {
    run.json["invariants"]
        .as_array()
        .unwrap_or_else(|| panic!("no JSON report:\n{}\n{}", run.stdout, run.stderr))
        .iter()
        .filter(|i| i["holds"] == false)
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

fn invariant<'a>(run: &'a Run, name: &str) -> &'a Value {
    run.json["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no invariant `{name}` in the report"))
}

/// Sends a counterexample to a real server that runs `policies` on the
/// counterexample's entity data, as a client of the API would.
async fn replay_over_http(policies: &Path, counterexample: &Value) -> Value {
    let entities = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        entities.path(),
        serde_json::to_string(&counterexample["entities"]).unwrap(),
    )
    .unwrap();
    let server = TestServer::start(ServeArgs {
        model: ModelArgs {
            policies: Some(policies.to_path_buf()),
            ..ModelArgs::default()
        },
        entity: EntityArgs {
            entities: Some(entities.path().to_path_buf()),
            ..EntityArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    let reply = server
        .post("/v1/is_authorized", &counterexample["request"])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    server.stop().await;
    reply.json
}

#[test]
fn every_shipped_invariant_holds_on_the_shipped_policies() {
    let run = verify(&[
        "--policies",
        "policies",
        "--invariants",
        &invariants_dir(),
        "--format",
        "json",
    ]);
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json["ok"], true);
    let names: Vec<&str> = run.json["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "no-policy-errors",
            "contacts-only-receive-email",
            "disabled-user-denied",
            "account-isolation",
            "only-owner-manages-users",
            "payment-method-needs-second-factor",
        ]
    );
    for inv in run.json["invariants"].as_array().unwrap() {
        assert!(
            inv["environments_checked"].as_u64().unwrap() > 0,
            "`{}` covers no request environment",
            inv["name"]
        );
    }
}

#[test]
fn the_default_run_checks_the_embedded_model_and_prints_text() {
    let run = verify(&[]);
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("6 of 6 invariants hold"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("ok   account-isolation"),
        "{}",
        run.stdout
    );
}

/// The wrong behaviour a counterexample shows on the real server.
enum Wrong {
    /// The request is allowed.
    Allowed,
    /// The policy errors (and so is skipped: an erroring forbid guards nothing).
    PolicyErrors(&'static str),
}

/// One mutation of the shipped policies and the one invariant it must break.
struct Mutation {
    story: &'static str,
    breaks: &'static str,
    apply: fn(&Path),
    /// What the real server must show for the counterexample.
    wrong: Wrong,
    /// Checks the counterexample says what the story says.
    check: fn(&Value),
}

fn entity<'a>(cex: &'a Value, uid: &str) -> &'a Value {
    cex["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            let t = e["uid"]["type"].as_str().unwrap();
            let id = e["uid"]["id"].as_str().unwrap();
            format!("{t}::{}", Value::String(id.to_string())) == uid
        })
        .unwrap_or_else(|| panic!("no entity {uid} in the counterexample"))
}

fn mutations() -> Vec<Mutation> {
    vec![
        Mutation {
            story: "a permit lets contacts log in to their account (and the guard is gone)",
            breaks: "contacts-only-receive-email",
            apply: |dir| {
                remove_policy(dir, "guards.cedar", "contact-only-receives-email");
                append(
                    dir,
                    "members.cedar",
                    "@id(\"contacts-log-in\")\npermit (principal is Portal::Contact, action == Portal::Action::\"Login\", resource is Portal::Account)\nwhen { principal.account == resource };\n",
                );
            },
            wrong: Wrong::Allowed,
            check: |cex| {
                assert!(cex["request"]["principal"]
                    .as_str()
                    .unwrap()
                    .starts_with("Portal::Contact::"));
                assert_eq!(cex["request"]["action"], "Portal::Action::\"Login\"");
            },
        },
        Mutation {
            story: "the disabled-user guard is removed",
            breaks: "disabled-user-denied",
            apply: |dir| {
                remove_policy(dir, "guards.cedar", "disabled-user-denied");
            },
            wrong: Wrong::Allowed,
            check: |cex| {
                let principal = cex["request"]["principal"].as_str().unwrap();
                assert_eq!(entity(cex, principal)["attrs"]["disabled"], true);
            },
        },
        Mutation {
            story: "the invoice permit ignores the account (and the isolation guard is gone)",
            breaks: "account-isolation",
            apply: |dir| {
                remove_policy(dir, "guards.cedar", "user-account-isolation");
                edit(
                    dir,
                    "members.cedar",
                    "resource is Portal::Invoice\n)\nwhen\n{\n  principal in resource.account &&\n",
                    "resource is Portal::Invoice\n)\nwhen\n{\n",
                );
            },
            wrong: Wrong::Allowed,
            check: |cex| {
                // The user holds an `invoices` tag for the account but is neither a
                // member nor the owner.
                let principal = cex["request"]["principal"].as_str().unwrap();
                let user = entity(cex, principal);
                assert!(cex["request"]["resource"]
                    .as_str()
                    .unwrap()
                    .starts_with("Portal::Invoice::"));
                assert!(
                    user["tags"].as_object().is_some_and(|t| !t.is_empty()),
                    "{user}"
                );
            },
        },
        Mutation {
            story: "members with the `profile` key may manage users",
            breaks: "only-owner-manages-users",
            apply: |dir| {
                edit(
                    dir,
                    "members.cedar",
                    "action in [Portal::Action::\"ViewProfile\", Portal::Action::\"UpdateProfile\"],",
                    "action in [Portal::Action::\"ViewProfile\", Portal::Action::\"UpdateProfile\", Portal::Action::\"ManageUsers\"],",
                );
            },
            wrong: Wrong::Allowed,
            check: |cex| {
                assert_eq!(cex["request"]["action"], "Portal::Action::\"ManageUsers\"");
                let account = entity(cex, cex["request"]["resource"].as_str().unwrap());
                let owner = &account["attrs"]["owner"]["__entity"];
                let owner = format!("{}::{}", owner["type"].as_str().unwrap(), owner["id"]);
                assert_ne!(owner, cex["request"]["principal"].as_str().unwrap());
            },
        },
        Mutation {
            story: "the second-factor guard on the payment method is dropped",
            breaks: "payment-method-needs-second-factor",
            apply: |dir| {
                remove_policy(dir, "guards.cedar", "payment-method-needs-second-factor");
            },
            wrong: Wrong::Allowed,
            check: |cex| {
                assert_eq!(
                    cex["request"]["action"],
                    "Portal::Action::\"UpdatePaymentMethod\""
                );
                assert_ne!(cex["request"]["context"]["secondFactor"], true);
            },
        },
        Mutation {
            story: "a forbid on large invoices can overflow, and an erroring forbid guards nothing",
            breaks: "no-policy-errors",
            apply: |dir| {
                append(
                    dir,
                    "guards.cedar",
                    "@id(\"large-payment-needs-second-factor\")\nforbid (principal, action == Portal::Action::\"PayInvoice\", resource is Portal::Invoice)\nwhen { resource.total * 100 > 1000000 && !(context has secondFactor && context.secondFactor) };\n",
                );
            },
            wrong: Wrong::PolicyErrors("large-payment-needs-second-factor"),
            check: |cex| {
                assert_eq!(cex["request"]["action"], "Portal::Action::\"PayInvoice\"");
            },
        },
    ]
}

/// Verifies the mutated policies: exactly the mutation's invariant fails, and each of
/// its counterexamples, sent to a real server, shows the wrong behaviour.
async fn check_mutation(breaks: &str) {
    let m = mutations()
        .into_iter()
        .find(|m| m.breaks == breaks)
        .unwrap();
    let dir = shipped_policies();
    (m.apply)(dir.path());
    let policies = dir.path().display().to_string();
    let run = verify(&[
        "--policies",
        &policies,
        "--invariants",
        &invariants_dir(),
        "--format",
        "json",
    ]);
    assert_eq!(
        run.status, 1,
        "{}: exit status\n{}\n{}",
        m.story, run.stdout, run.stderr
    );
    assert_eq!(failing(&run), [m.breaks], "{}: {}", m.story, run.stdout);
    let inv = invariant(&run, m.breaks);
    let violations = inv["violations"].as_array().unwrap();
    assert!(!violations.is_empty(), "{}", m.story);
    for v in violations {
        assert_eq!(v["replay"]["confirmed"], true, "{}: {v}", m.story);
        let cex = &v["counterexample"];
        (m.check)(cex);
        let reply = replay_over_http(dir.path(), cex).await;
        match m.wrong {
            Wrong::Allowed => {
                assert_eq!(reply["decision"], "Allow", "{}: {cex}", m.story);
            }
            Wrong::PolicyErrors(id) => {
                assert_eq!(v["policy"], id, "{}", m.story);
                let errors = reply["diagnostics"]["errors"].as_array().unwrap();
                assert!(
                    errors.iter().any(|e| e.as_str().unwrap().contains(id)),
                    "{}: the server reports no error of `{id}`: {reply}",
                    m.story
                );
            }
        }
    }
}

#[tokio::test]
async fn a_permit_letting_contacts_log_in_breaks_contacts_only_receive_email() {
    check_mutation("contacts-only-receive-email").await;
}

#[tokio::test]
async fn removing_the_disabled_guard_lets_a_disabled_user_in() {
    check_mutation("disabled-user-denied").await;
}

#[tokio::test]
async fn an_invoice_permit_ignoring_the_account_breaks_isolation() {
    check_mutation("account-isolation").await;
}

#[tokio::test]
async fn letting_members_manage_users_breaks_owner_only() {
    check_mutation("only-owner-manages-users").await;
}

#[tokio::test]
async fn dropping_the_second_factor_guard_lets_payment_methods_change_without_it() {
    check_mutation("payment-method-needs-second-factor").await;
}

#[tokio::test]
async fn a_forbid_that_can_overflow_breaks_no_policy_errors() {
    check_mutation("no-policy-errors").await;
}

#[test]
fn every_shipped_invariant_has_a_mutation_that_breaks_it() {
    let text = std::fs::read_to_string(repo().join("policies/invariants/portal.yaml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut shipped: Vec<String> = doc["invariants"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    let mut broken: Vec<String> = mutations().iter().map(|m| m.breaks.to_string()).collect();
    shipped.sort();
    broken.sort();
    assert_eq!(shipped, broken);
}

/// The sample edit of a pull request: members with the `invoices` key may now also
/// view quotes, and the affiliate permit is withdrawn.
#[test]
fn the_change_review_lists_exactly_the_environments_an_edit_changes() {
    let dir = shipped_policies();
    append(
        dir.path(),
        "members.cedar",
        "@id(\"member-invoices-see-quotes\")\npermit (principal is Portal::User, action == Portal::Action::\"ViewQuote\", resource is Portal::Quote)\nwhen {\n  principal in resource.account &&\n  principal.hasTag(resource.account.id) &&\n  principal.getTag(resource.account.id).permissions.contains(\"invoices\")\n};\n",
    );
    remove_policy(dir.path(), "members.cedar", "member-affiliates");
    let policies = dir.path().display().to_string();
    let run = verify(&[
        "--policies",
        &policies,
        "--invariants",
        &invariants_dir(),
        "--against",
        "policies",
        "--format",
        "json",
    ]);
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    let review = &run.json["review"];
    assert_eq!(review["undecided"].as_array().unwrap().len(), 0, "{review}");
    let mut changes: Vec<(String, bool, bool)> = review["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let e = &c["environment"];
            (
                format!(
                    "{} {} {}",
                    e["principal_type"].as_str().unwrap(),
                    e["action"].as_str().unwrap(),
                    e["resource_type"].as_str().unwrap()
                ),
                c.get("newly_allowed").is_some(),
                c.get("no_longer_allowed").is_some(),
            )
        })
        .collect();
    changes.sort();
    let expected = vec![
        (
            "Portal::User Portal::Action::\"ManageAffiliate\" Portal::Account".to_string(),
            false,
            true,
        ),
        (
            "Portal::User Portal::Action::\"ViewQuote\" Portal::Quote".to_string(),
            true,
            false,
        ),
    ];
    assert_eq!(changes, expected, "{review}");
    for c in review["changes"].as_array().unwrap() {
        for key in ["newly_allowed", "no_longer_allowed"] {
            if let Some(w) = c.get(key) {
                assert_eq!(w["replay"]["confirmed"], true, "{key}: {w}");
            }
        }
    }
    // The quote newly allowed goes to a member holding `invoices` but not `quotes`.
    let quote = review["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["environment"]["action"] == "Portal::Action::\"ViewQuote\"")
        .unwrap();
    assert_eq!(quote["newly_allowed"]["replay"]["decision"], "allow");
    assert_eq!(quote["newly_allowed"]["replay"]["other_decision"], "deny");
}

#[test]
fn an_unchanged_policy_set_reviews_to_no_change() {
    let dir = shipped_policies();
    let policies = dir.path().display().to_string();
    let run = verify(&["--policies", &policies, "--against", "policies"]);
    assert_eq!(run.status, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("no request is decided differently"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_missing_or_broken_solver_is_a_setup_error_that_says_how_to_install_one() {
    // A path that does not exist, and a program that exits at once without answering.
    for program in ["/nonexistent/cvc5", "/bin/false"] {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("verify")
            .env("CVC5", program)
            .current_dir(repo())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program}: {stderr}");
        assert!(stderr.contains("scripts/deps/cvc5.sh"), "{stderr}");
        assert!(stderr.contains(program), "{stderr}");
    }
}

#[test]
fn invariant_files_with_mistakes_are_rejected_with_the_file_and_the_field() {
    let cases = [
        (
            "invariants:\n  - name: typo\n    property: always_denies\n    covers:\n      actions: [LogIn]\n",
            "`covers.actions`: `LogIn` names nothing",
        ),
        (
            "invariants:\n  - name: no-reference\n    property: implies\n",
            "needs a `reference` policy set",
        ),
        (
            "invariants:\n  - name: bad-reference\n    property: disjoint\n    reference: 'permit (principal, action, resource) when { principal.nope };'\n",
            "does not validate against the schema",
        ),
        (
            "invariants:\n  - name: unknown-kind\n    property: sometimes\n",
            "unknown variant `sometimes`",
        ),
    ];
    for (yaml, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("team.yaml"), yaml).unwrap();
        let invariants = dir.path().display().to_string();
        let run = verify(&["--invariants", &invariants]);
        assert_eq!(run.status, 2, "{yaml}: {}", run.stdout);
        assert!(run.stderr.contains("team.yaml"), "{yaml}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{yaml}: {}", run.stderr);
    }
}
