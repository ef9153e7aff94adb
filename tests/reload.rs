//! Hot reload on a running server whose model lives in files in a temporary directory:
//! good edits apply, bad edits change nothing and are reported, bursts end on their
//! last write, and requests under load never fail or see an empty policy set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{request, uid, TestServer, DEADLINE};
use portcullis::config::{ModelArgs, ServeArgs};
use portcullis::entities::SourceGate;
use portcullis::model::reload::{self, ReloadOptions, ReloadTask, Trigger};
use serde_json::Value;
use tempfile::TempDir;

/// Waits for `check` like [`common::eventually`], and says how long it took.
async fn eventually<T, F, Fut>(what: &str, check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let value = common::eventually(what, DEADLINE, check).await;
    (value, started.elapsed())
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Writes a file the way deployment tools do: a temporary file beside it, renamed
/// over it, so that no reader ever sees it half-written.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The shipped model's files by name: the schema, `*.cedar` and `links.json`.
fn model_files() -> Vec<(String, String)> {
    let mut files = vec![(
        "portal.cedarschema".to_string(),
        std::fs::read_to_string(repo("schema/portal.cedarschema")).unwrap(),
    )];
    for entry in std::fs::read_dir(repo("policies")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Test suites, invariants and the route table live beside the policies too.
        if !(name.ends_with(".cedar") || name == "links.json") {
            continue;
        }
        files.push((name, std::fs::read_to_string(&path).unwrap()));
    }
    files
}

/// The shipped model copied into `dir`: `portal.cedarschema`, `policies/*.cedar` and
/// `policies/links.json`.
fn copy_model(dir: &Path) -> ModelArgs {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let schema = dir.join("portal.cedarschema");
    for (name, text) in model_files() {
        let to = if name.ends_with(".cedarschema") {
            schema.clone()
        } else {
            policies.join(name)
        };
        std::fs::write(to, text).unwrap();
    }
    ModelArgs {
        schema: Some(schema),
        template_links: Some(policies.join("links.json")),
        policies: Some(policies),
        ..ModelArgs::default()
    }
}

/// A server on a model in a temporary directory, with its reload task.
struct Served {
    dir: TempDir,
    server: TestServer,
    _reload: ReloadTask,
}

impl Served {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = copy_model(dir.path());
        Self::start_with(dir, model).await
    }

    async fn start_with(dir: TempDir, model: ModelArgs) -> Self {
        let server = TestServer::start(ServeArgs {
            model,
            ..ServeArgs::default()
        })
        .await;
        // `watch: None` is the default of `serve`: watch because the model is files.
        let reload = reload::spawn(
            server.app.model.clone(),
            Arc::new(SourceGate(server.app.entities.clone())),
            ReloadOptions {
                watch: None,
                debounce: Duration::from_millis(50),
                settle: Duration::from_millis(50),
                sighup: false,
            },
        );
        let served = Self {
            dir,
            server,
            _reload: reload,
        };
        eventually("the watcher is watching", || async {
            served.server.app.model.status().watching.then_some(())
        })
        .await;
        served
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    fn write(&self, rel: &str, text: &str) {
        write_atomically(&self.path(rel), text);
    }

    async fn allowed(&self, principal: &str, action: &str, resource: &str) -> bool {
        decide(&self.server, principal, action, resource).await
    }

    async fn policies(&self) -> Value {
        let reply = self.server.admin_get("/v1/policies").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    }

    /// Awaits a decision.
    async fn until_decision(
        &self,
        what: &str,
        (principal, action, resource): (&str, &str, &str),
        allowed: bool,
    ) -> Duration {
        eventually(what, || async {
            (self.allowed(principal, action, resource).await == allowed).then_some(())
        })
        .await
        .1
    }

    /// Awaits a rejected reload whose messages mention `needle`; returns them.
    async fn until_rejected(&self, what: &str, needle: &str) -> Vec<String> {
        eventually(what, || async {
            let body = self.policies().await;
            let messages: Vec<String> = body["reload"]["last_error"]["messages"]
                .as_array()?
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect();
            messages
                .iter()
                .any(|m| m.contains(needle))
                .then_some(messages)
        })
        .await
        .0
    }

    async fn until_no_error(&self, what: &str) {
        eventually(what, || async {
            self.policies().await["reload"]["last_error"]
                .is_null()
                .then_some(())
        })
        .await;
    }

    async fn metric(&self, line_prefix: &str) -> f64 {
        metric(&self.server, line_prefix).await
    }
}

async fn decide(server: &TestServer, principal: &str, action: &str, resource: &str) -> bool {
    let reply = server
        .post("/v1/is_authorized", &request(principal, action, resource))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["decision"] == "Allow"
}

/// The value of the first metric line starting with `line_prefix`, 0 when absent.
async fn metric(server: &TestServer, line_prefix: &str) -> f64 {
    let reply = server.admin_get("/metrics").await;
    reply
        .text
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn user(id: &str) -> String {
    uid("User", id)
}

// Decisions of the demo data that no edit in these tests touches; each must hold on
// every snapshot, old or new.
fn stable_decisions() -> Vec<(String, &'static str, String, bool)> {
    vec![
        (
            user("olivia"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
            true,
        ),
        (
            user("walt"),
            "PayInvoice",
            uid("Invoice", "inv-1001"),
            false,
        ),
        (user("walt"), "OpenTicket", uid("Account", "acme"), true),
        (
            user("bea"),
            "ViewInvoice",
            uid("Invoice", "inv-9001"),
            false,
        ),
        (
            user("dev"),
            "ManageDomain",
            uid("Domain", "globex.example"),
            true,
        ),
        (
            user("dev"),
            "ManageDomain",
            uid("Domain", "acme.example"),
            false,
        ),
        (
            user("dora"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
            false,
        ),
    ]
}

async fn assert_stable_decisions(server: &TestServer) {
    for (p, a, r, expected) in stable_decisions() {
        assert_eq!(decide(server, &p, a, &r).await, expected, "{p} {a} {r}");
    }
}

/// A policy file letting the webmaster view acme's invoices.
const WALT_VIEWS_INVOICES: &str = r#"// The security team lets the webmaster see invoices.
@id("webmaster-views-invoices")
permit (
  principal == Portal::User::"walt",
  action == Portal::Action::"ViewInvoice",
  resource is Portal::Invoice
)
when { principal in resource.account };
"#;

#[tokio::test]
async fn valid_edits_apply_while_the_server_runs() {
    let s = Served::start().await;
    let hash_before = s.policies().await["hash"].clone();

    // A new policy file: the webmaster may now view acme's invoice.
    let (p, a, r) = (user("walt"), "ViewInvoice", uid("Invoice", "inv-1001"));
    assert!(!s.allowed(&p, a, &r).await);
    s.write("policies/webmaster.cedar", WALT_VIEWS_INVOICES);
    s.until_decision("a new policy file applies", (&p, a, &r), true)
        .await;
    let listed = s.policies().await;
    assert_ne!(listed["hash"], hash_before);
    assert!(listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "webmaster-views-invoices"
            && p["file"].as_str().unwrap().ends_with("webmaster.cedar")));
    assert_eq!(listed["reload"]["last_result"], "applied");
    assert_eq!(listed["reload"]["last_trigger"], "file_change");

    // An edit of an existing file: without `member-invoices` the bookkeeper may no
    // longer pay.
    let (p, a, r) = (user("bea"), "PayInvoice", uid("Invoice", "inv-1001"));
    assert!(s.allowed(&p, a, &r).await);
    let members = s.read("policies/members.cedar");
    let start = members.find("@id(\"member-invoices\")").unwrap();
    let end = start + members[start..].find("};").unwrap() + 2;
    let without = format!("{}{}", &members[..start], &members[end..]);
    s.write("policies/members.cedar", &without);
    s.until_decision("removing a policy applies", (&p, a, &r), false)
        .await;

    // A new link in the links file: the owner shares one service with the bookkeeper.
    let (p, a, r) = (user("bea"), "ViewService", uid("Service", "svc-3001"));
    assert!(!s.allowed(&p, a, &r).await);
    let mut links: Vec<Value> = serde_json::from_str(&s.read("policies/links.json")).unwrap();
    links.push(serde_json::json!({
        "template_id": "resource-grant-view",
        "link_id": "bea-views-svc-3001",
        "args": {"?principal": p, "?resource": r},
    }));
    s.write(
        "policies/links.json",
        &serde_json::to_string_pretty(&links).unwrap(),
    );
    s.until_decision("a new template link applies", (&p, a, &r), true)
        .await;
    let listed = s.policies().await;
    let link = listed["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "bea-views-svc-3001")
        .cloned()
        .unwrap();
    assert_eq!(link["template_id"], "resource-grant-view");
    assert_eq!(link["args"]["?resource"], uid("Service", "svc-3001"));

    assert!(
        s.metric(r#"portcullis_reload_total{result="applied",trigger="file_change"}"#)
            .await
            >= 3.0
    );
    assert_eq!(
        s.metric("portcullis_policies_loaded ").await,
        listed["active_policies"].as_f64().unwrap()
    );
    assert_stable_decisions(&s.server).await;
}

/// One bad edit: which file, what it becomes, and a piece of the expected message.
struct BadEdit {
    name: &'static str,
    file: &'static str,
    edit: fn(&str) -> String,
    message: &'static str,
    /// Whether every problem must read `file:line:col: message`.
    located: bool,
}

fn bad_edits() -> Vec<BadEdit> {
    vec![
        BadEdit {
            name: "a syntax error",
            file: "policies/members.cedar",
            edit: |t| format!("{t}\npermit (principal, action, resource\n"),
            message: "members.cedar:",
            located: true,
        },
        BadEdit {
            name: "an attribute the schema does not declare",
            file: "policies/webmaster.cedar",
            edit: |_| {
                WALT_VIEWS_INVOICES.replace(
                    "principal in resource.account",
                    "principal.nickname == \"w\"",
                )
            },
            message: "webmaster.cedar:",
            located: true,
        },
        BadEdit {
            name: "a duplicate policy id",
            file: "policies/webmaster.cedar",
            edit: |_| WALT_VIEWS_INVOICES.replace("webmaster-views-invoices", "member-login"),
            message: "duplicate policy id `member-login`",
            located: true,
        },
        BadEdit {
            name: "a link to a template that does not exist",
            file: "policies/links.json",
            edit: |t| t.replace("\"resource-grant-view\"", "\"no-such-template\""),
            message: "failed to find a template with id `no-such-template`",
            located: true,
        },
        BadEdit {
            name: "a schema the entity data does not conform to",
            file: "portal.cedarschema",
            edit: |t| t.replace("twoFactorEnrolled: Bool,", ""),
            message: "entity data does not conform to the schema",
            located: false,
        },
    ]
}

#[tokio::test]
async fn broken_edits_leave_decisions_unchanged_and_are_reported() {
    let s = Served::start().await;
    // A policy file of our own, so that the edits below have something to break.
    s.write("policies/webmaster.cedar", WALT_VIEWS_INVOICES);
    let walt = (user("walt"), "ViewInvoice", uid("Invoice", "inv-1001"));
    s.until_decision(
        "the webmaster policy applies",
        (&walt.0, walt.1, &walt.2),
        true,
    )
    .await;
    let good = s.policies().await;

    for case in bad_edits() {
        let original = s.read(case.file);
        let rejected_before = s
            .metric(r#"portcullis_reload_total{result="rejected",trigger="file_change"}"#)
            .await;
        s.write(case.file, &(case.edit)(&original));

        let messages = s.until_rejected(case.name, case.message).await;
        if case.located {
            for m in &messages {
                let mut parts = m.splitn(4, ':');
                let (_file, line, col) = (parts.next(), parts.next(), parts.next());
                assert!(
                    line.is_some_and(|l| l.parse::<usize>().is_ok())
                        && col.is_some_and(|c| c.parse::<usize>().is_ok()),
                    "{}: `{m}` is not `file:line:col: message`",
                    case.name
                );
            }
        }
        // The last good snapshot keeps serving.
        let now = s.policies().await;
        assert_eq!(now["hash"], good["hash"], "{}", case.name);
        assert_eq!(now["loaded_at"], good["loaded_at"], "{}", case.name);
        assert!(s.allowed(&walt.0, walt.1, &walt.2).await, "{}", case.name);
        assert_stable_decisions(&s.server).await;
        assert!(
            s.metric(r#"portcullis_reload_total{result="rejected",trigger="file_change"}"#)
                .await
                > rejected_before,
            "{}",
            case.name
        );
        assert_eq!(s.metric("portcullis_reload_failing ").await, 1.0);

        // Putting the file back clears the error without swapping anything.
        s.write(case.file, &original);
        s.until_no_error(&format!("{} is repaired", case.name))
            .await;
        assert_eq!(s.policies().await["hash"], good["hash"]);
        assert_eq!(s.metric("portcullis_reload_failing ").await, 0.0);
    }
}

#[tokio::test]
async fn emptying_every_policy_file_is_rejected() {
    let s = Served::start().await;
    let good = s.policies().await;
    let files: Vec<String> = std::fs::read_dir(s.path("policies"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    for f in &files {
        let empty = if f.ends_with(".json") { "[]" } else { "" };
        s.write(&format!("policies/{f}"), empty);
    }
    s.until_rejected("an empty policy set is rejected", "no policies")
        .await;
    assert_eq!(s.policies().await["hash"], good["hash"]);
    assert_stable_decisions(&s.server).await;
}

#[tokio::test]
async fn a_burst_of_edits_ends_on_the_last_one() {
    let s = Served::start().await;
    let walt = (user("walt"), "ViewInvoice", uid("Invoice", "inv-1001"));
    let applied_before = s
        .metric(r#"portcullis_reload_total{result="applied",trigger="file_change"}"#)
        .await;
    const WRITES: usize = 24;
    // Odd versions let the webmaster view invoices, even ones do not; the last is odd.
    for n in 0..WRITES {
        let text = if n % 2 == 1 {
            WALT_VIEWS_INVOICES.replace("webmaster-views-invoices", &format!("burst-{n}"))
        } else {
            format!("@id(\"burst-{n}\")\nforbid (principal, action, resource) when {{ false }};\n")
        };
        s.write("policies/burst.cedar", &text);
    }
    let last = format!("burst-{}", WRITES - 1);
    eventually("the last write of the burst serves", || async {
        let ids: Vec<String> = s.policies().await["policies"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .filter(|id| id.starts_with("burst-"))
            .collect();
        (ids == [last.clone()]).then_some(())
    })
    .await;
    assert!(s.allowed(&walt.0, walt.1, &walt.2).await);
    let applied = s
        .metric(r#"portcullis_reload_total{result="applied",trigger="file_change"}"#)
        .await
        - applied_before;
    eprintln!("{WRITES} writes made {applied} reloads");
    assert!(applied >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_under_load_never_fail_or_see_an_empty_policy_set() {
    let s = Arc::new(Served::start().await);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for worker in 0..4 {
        let (s, stop, answered) = (s.clone(), stop.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let cases = stable_decisions();
            // Bounded in count as well as by the writer's end.
            for i in 0..200_000usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (p, a, r, expected) = &cases[(i + worker) % cases.len()];
                assert_eq!(
                    decide(&s.server, p, a, r).await,
                    *expected,
                    "{p} {a} {r} during reload"
                );
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Rewrite the model over and over, waiting each time until the server took the
    // new version (or rejected the broken one), so that every round really reloads.
    let members = s.read("policies/members.cedar");
    let schema = s.read("portal.cedarschema");
    for round in 0..12 {
        match round % 3 {
            0 => {
                let marker = format!("load-{round}");
                s.write(
                    "policies/extra.cedar",
                    &format!("@id(\"{marker}\")\nforbid (principal, action, resource) when {{ false }};\n"),
                );
                eventually("a new version serves under load", || async {
                    s.policies().await["policies"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["id"] == marker.as_str())
                        .then_some(())
                })
                .await;
            }
            1 => {
                s.write("policies/members.cedar", &format!("{members}\npermit ("));
                s.until_rejected("a broken version is rejected under load", "members.cedar")
                    .await;
                s.write("policies/members.cedar", &members);
                s.until_no_error("the repair is seen under load").await;
            }
            _ => {
                // A schema change (a new optional attribute) rebuilds everything,
                // entity data included.
                let changed = schema.replace(
                    "twoFactorEnrolled: Bool,",
                    &format!("twoFactorEnrolled: Bool,\n    note{round}?: String,"),
                );
                let before = s.policies().await["schema_hash"].clone();
                s.write("portal.cedarschema", &changed);
                eventually("a schema change serves under load", || async {
                    (s.policies().await["schema_hash"] != before).then_some(())
                })
                .await;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let applied = s
        .metric(r#"portcullis_reload_total{result="applied",trigger="file_change"}"#)
        .await;
    let answered = answered.load(Ordering::Relaxed);
    eprintln!("{answered} requests answered correctly across {applied} reloads");
    assert!(applied >= 8.0, "{applied} reloads");
    assert!(answered > 0);
}

#[tokio::test]
async fn a_configmap_symlink_swap_applies() {
    // The layout a Kubernetes ConfigMap volume has: the visible files are symlinks
    // through `..data`, which points to a timestamped directory; an update writes a
    // new directory and renames a new `..data` over the old one.
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("policy-config");
    let first = mount.join("..2026_11_22_10_00_00.000000001");
    std::fs::create_dir_all(&first).unwrap();
    for (name, text) in model_files() {
        std::fs::write(first.join(&name), text).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(&name), mount.join(&name)).unwrap();
    }
    std::os::unix::fs::symlink(first.file_name().unwrap(), mount.join("..data")).unwrap();
    let served = Served::start_with(
        dir,
        ModelArgs {
            schema: Some(mount.join("portal.cedarschema")),
            policies: Some(mount.clone()),
            template_links: Some(mount.join("links.json")),
            ..ModelArgs::default()
        },
    )
    .await;
    let walt = (user("walt"), "ViewInvoice", uid("Invoice", "inv-1001"));
    assert!(!served.allowed(&walt.0, walt.1, &walt.2).await);

    // The update, as the kubelet does it.
    let second = mount.join("..2026_11_22_10_05_00.000000002");
    std::fs::create_dir(&second).unwrap();
    for entry in std::fs::read_dir(&first).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, second.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(second.join("webmaster.cedar"), WALT_VIEWS_INVOICES).unwrap();
    std::os::unix::fs::symlink("..data/webmaster.cedar", mount.join("webmaster.cedar")).unwrap();
    std::os::unix::fs::symlink(second.file_name().unwrap(), mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    served
        .until_decision(
            "the ConfigMap update applies",
            (&walt.0, walt.1, &walt.2),
            true,
        )
        .await;
    assert!(served.policies().await["reload"]["last_error"].is_null());
    assert_stable_decisions(&served.server).await;
}

#[tokio::test]
async fn a_manual_reload_reports_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let server = TestServer::start(ServeArgs {
        model: model.clone(),
        ..ServeArgs::default()
    })
    .await;
    let serving = &server.app.model;
    let gate = SourceGate(server.app.entities.clone());
    assert!(matches!(
        serving.reload(Trigger::Manual, &gate).await,
        reload::ReloadOutcome::Unchanged
    ));
    write_atomically(
        &model.policies.clone().unwrap().join("webmaster.cedar"),
        WALT_VIEWS_INVOICES,
    );
    assert!(matches!(
        serving.reload(Trigger::Manual, &gate).await,
        reload::ReloadOutcome::Applied { .. }
    ));
    assert!(
        decide(
            &server,
            &user("walt"),
            "ViewInvoice",
            &uid("Invoice", "inv-1001")
        )
        .await
    );
    let body = server.admin_get("/v1/policies").await.json;
    assert_eq!(body["reload"]["last_trigger"], "manual");
    // No task runs here, so nothing watches.
    assert_eq!(body["reload"]["watching"], false);
}

/// The built binary, serving the model in `dir` until dropped.
struct Process {
    child: Child,
    addr: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
}

impl Process {
    fn start(model: &ModelArgs, extra: &[&str]) -> Self {
        let arg = |p: &Option<PathBuf>| p.clone().unwrap().display().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--schema", &arg(&model.schema)])
            .args(["--policies", &arg(&model.policies)])
            .args(["--template-links", &arg(&model.template_links)])
            .args(extra)
            .env("PORTCULLIS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // The start-up line names the bound addresses.
        let (addr, admin_addr) = loop {
            let line = lines.next().expect("the server logs its start").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["message"] == "portcullis serving" {
                let bound = |key: &str| v[key].as_str().unwrap().parse().unwrap();
                break (bound("listen"), bound("admin_listen"));
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self {
            child,
            addr,
            admin_addr,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: `kill` has no memory effects; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    async fn admin_get(&self, path: &str) -> common::Reply {
        common::send(self.admin_addr, http::Method::GET, path, &[], Vec::new()).await
    }

    async fn allowed(&self, principal: &str, action: &str, resource: &str) -> bool {
        let body = request(principal, action, resource)
            .to_string()
            .into_bytes();
        let reply = common::send(
            self.addr,
            http::Method::POST,
            "/v1/is_authorized",
            &[("content-type", "application/json")],
            body,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["decision"] == "Allow"
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_a_server_that_does_not_watch() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let server = Process::start(&model, &["--no-watch"]);
    let walt = (user("walt"), "ViewInvoice", uid("Invoice", "inv-1001"));
    let status = server.admin_get("/v1/policies").await.json;
    assert_eq!(status["reload"]["watching"], false);

    write_atomically(
        &model.policies.clone().unwrap().join("webmaster.cedar"),
        WALT_VIEWS_INVOICES,
    );
    // Nothing watches: the edit waits for the signal.
    assert!(!server.allowed(&walt.0, walt.1, &walt.2).await);
    server.signal(libc::SIGHUP);
    eventually("SIGHUP reloads", || async {
        server.allowed(&walt.0, walt.1, &walt.2).await.then_some(())
    })
    .await;
    let status = server.admin_get("/v1/policies").await.json;
    assert_eq!(status["reload"]["last_trigger"], "signal");
    assert_eq!(status["reload"]["last_result"], "applied");

    // SIGTERM still drains and exits cleanly, the reload task with it.
    server.signal(libc::SIGTERM);
    let mut server = server;
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn the_binary_watches_its_model_files_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let server = Process::start(&model, &["--reload-debounce-ms", "50"]);
    eventually("the binary is watching", || async {
        (server.admin_get("/v1/policies").await.json["reload"]["watching"] == true).then_some(())
    })
    .await;
    let walt = (user("walt"), "ViewInvoice", uid("Invoice", "inv-1001"));
    write_atomically(
        &model.policies.clone().unwrap().join("webmaster.cedar"),
        WALT_VIEWS_INVOICES,
    );
    eventually("an edit applies in the binary", || async {
        server.allowed(&walt.0, walt.1, &walt.2).await.then_some(())
    })
    .await;
}

// Policy changes apply whole or not at all, through the real binary: a file caught
// mid-write, a file emptied, a policy directory behind a swapped link, and writes
// that are no change of the model.

impl Process {
    async fn policies(&self) -> Value {
        let reply = self.admin_get("/v1/policies").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    }

    async fn until_watching(&self) {
        eventually("the binary is watching", || async {
            (self.policies().await["reload"]["watching"] == true).then_some(())
        })
        .await;
    }

    async fn until_allowed(&self, what: &str, (p, a, r): (&str, &str, &str), allowed: bool) {
        eventually(what, || async {
            (self.allowed(p, a, r).await == allowed).then_some(())
        })
        .await;
    }

    /// Awaits a rejected reload with a message containing every one of `needles`.
    async fn until_rejected(&self, what: &str, needles: &[&str]) -> Vec<String> {
        eventually(what, || async {
            let body = self.policies().await;
            let messages: Vec<String> = body["reload"]["last_error"]["messages"]
                .as_array()?
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect();
            messages
                .iter()
                .any(|m| needles.iter().all(|n| m.contains(n)))
                .then_some(messages)
        })
        .await
        .0
    }

    async fn until_no_error(&self, what: &str) {
        eventually(what, || async {
            self.policies().await["reload"]["last_error"]
                .is_null()
                .then_some(())
        })
        .await;
    }

    async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.text
    }

    /// Reload attempts so far, of every result and trigger.
    async fn reloads(&self) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("portcullis_reload_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn series(&self, series: &str) -> f64 {
        common::metric(&self.metrics().await, series).unwrap_or(0.0)
    }
}

/// A guard that never applies: its id shows that a revision of `guards.cedar` serves.
const REVISED_GUARD: &str = r#"
@id("guards-revised")
forbid (principal, action, resource) when { false };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_written_in_two_steps_never_let_a_disabled_user_in() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let server = Arc::new(Process::start(&model, &[]));
    server.until_watching().await;
    let dora = (user("dora"), "ViewInvoice", uid("Invoice", "inv-1001"));
    assert!(!server.allowed(&dora.0, dora.1, &dora.2).await);

    // Disabled dora asks again and again while guards.cedar is rewritten.
    let stop = Arc::new(AtomicBool::new(false));
    let (decided, allowed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let asking = {
        let (server, stop, decided, allowed) = (
            server.clone(),
            stop.clone(),
            decided.clone(),
            allowed.clone(),
        );
        let dora = dora.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if server.allowed(&dora.0, dora.1, &dora.2).await {
                    allowed.fetch_add(1, Ordering::Relaxed);
                }
                decided.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // `( sleep 0.4; cat guards.bak ) > guards.cedar`: the shell truncates the file, and
    // the text arrives 400 ms later. The pause is the writer's, not a wait for the
    // server.
    let guards = model.policies.clone().unwrap().join("guards.cedar");
    let revised = format!(
        "{}{REVISED_GUARD}",
        std::fs::read_to_string(&guards).unwrap()
    );
    let mut file = std::fs::File::create(&guards).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::io::Write::write_all(&mut file, revised.as_bytes()).unwrap();
    drop(file);

    eventually("the complete guards apply", || async {
        server.policies().await["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "guards-revised")
            .then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    asking.await.unwrap();
    let (decided, allowed) = (
        decided.load(Ordering::Relaxed),
        allowed.load(Ordering::Relaxed),
    );
    eprintln!("dora asked {decided} times while guards.cedar was rewritten");
    assert!(decided > 0);
    assert_eq!(allowed, 0, "disabled dora was allowed {allowed} times");
    assert!(!server.allowed(&dora.0, dora.1, &dora.2).await);
    assert!(server.policies().await["reload"]["last_error"].is_null());
}

#[tokio::test]
async fn emptying_a_policy_file_is_rejected_unless_the_file_confirms_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let server = Process::start(&model, &[]);
    server.until_watching().await;
    let guards = model.policies.clone().unwrap().join("guards.cedar");
    // The bookkeeper's session used no second factor.
    let bea = (user("bea"), "UpdatePaymentMethod", uid("Account", "acme"));
    let bea = (bea.0.as_str(), bea.1, bea.2.as_str());
    assert!(!server.allowed(bea.0, bea.1, bea.2).await);
    let serving = server.policies().await["hash"].clone();

    write_atomically(&guards, "");
    server
        .until_rejected(
            "an emptied guards.cedar is rejected",
            &["guards.cedar", "no policies", "// portcullis: empty"],
        )
        .await;
    let status = server.policies().await;
    assert_eq!(status["reload"]["last_result"], "rejected");
    assert_eq!(status["hash"], serving);
    assert_eq!(server.series("portcullis_reload_failing").await, 1.0);
    assert!(!server.allowed(bea.0, bea.1, bea.2).await);

    // Emptied on purpose: the file says so.
    write_atomically(
        &guards,
        "// portcullis: empty\n// The guards moved to the gateway.\n",
    );
    server
        .until_allowed("a confirmed empty guards.cedar applies", bea, true)
        .await;
    server
        .until_no_error("the confirmation clears the error")
        .await;
    assert_eq!(server.policies().await["reload"]["last_result"], "applied");
}

/// Copies the files of directory `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Points the symlink `link` at `target` in one step, as `ln -sfn` to a temporary name
/// and a rename over the link do.
fn swap_link(link: &Path, target: &str) {
    let tmp = link.with_extension("tmp");
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[tokio::test]
async fn a_policy_directory_behind_a_swapped_symlink_is_followed() {
    // Releases side by side in a directory of their own, `current` pointing at the one
    // that serves; the schema lives elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let copied = copy_model(dir.path());
    let releases = dir.path().join("releases");
    std::fs::create_dir(&releases).unwrap();
    let (v1, v2, current) = (
        releases.join("v1"),
        releases.join("v2"),
        releases.join("current"),
    );
    std::fs::rename(copied.policies.unwrap(), &v1).unwrap();
    std::os::unix::fs::symlink("v1", &current).unwrap();
    let model = ModelArgs {
        policies: Some(current.clone()),
        template_links: Some(current.join("links.json")),
        ..copied
    };
    let server = Process::start(&model, &[]);
    server.until_watching().await;
    let walt = (user("walt"), "ViewInvoice", uid("Invoice", "inv-1001"));
    let walt = (walt.0.as_str(), walt.1, walt.2.as_str());
    assert!(!server.allowed(walt.0, walt.1, walt.2).await);

    // Release v2 lets the webmaster view invoices; `current` swaps to it.
    copy_dir(&v1, &v2);
    std::fs::write(v2.join("webmaster.cedar"), WALT_VIEWS_INVOICES).unwrap();
    swap_link(&current, "v2");
    server
        .until_allowed("the swap to v2 applies without SIGHUP", walt, true)
        .await;
    assert_eq!(server.policies().await["reload"]["watching"], true);

    // v2 is removed: nothing to read, so the reload is rejected and v2's policies
    // keep serving.
    std::fs::remove_dir_all(&v2).unwrap();
    server
        .until_rejected("a removed policy directory is reported", &["current"])
        .await;
    assert!(server.allowed(walt.0, walt.1, walt.2).await);

    // v2 is created again, without the webmaster's policy.
    let staged = releases.join("v2.staged");
    copy_dir(&v1, &staged);
    std::fs::rename(&staged, &v2).unwrap();
    server
        .until_allowed("the re-created v2 applies", walt, false)
        .await;
    server.until_no_error("the re-created v2 loads").await;

    // The re-created directory is watched: a direct edit in it applies.
    write_atomically(&v2.join("webmaster.cedar"), WALT_VIEWS_INVOICES);
    server
        .until_allowed("an edit in the re-created v2 applies", walt, true)
        .await;
    assert_eq!(server.policies().await["reload"]["watching"], true);
}

#[tokio::test]
async fn writes_beside_the_model_reload_nothing_and_touches_compile_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let policies = model.policies.clone().unwrap();
    let server = Process::start(&model, &["--reload-debounce-ms", "50"]);
    server.until_watching().await;
    let reloads_before = server.reloads().await;

    // A logger writing into the policy directory, slower than the debounce: if its
    // writes counted, each would be a reload of its own. Its rhythm is the workload,
    // not a wait for the server.
    let mut logger = tokio::time::interval(Duration::from_millis(100));
    for line in 0..10 {
        logger.tick().await;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(policies.join("app.log"))
            .unwrap();
        std::io::Write::write_all(&mut log, format!("request {line} served\n").as_bytes()).unwrap();
    }

    // A real edit after the logger: the one reload there is.
    let walt = (user("walt"), "ViewInvoice", uid("Invoice", "inv-1001"));
    write_atomically(&policies.join("webmaster.cedar"), WALT_VIEWS_INVOICES);
    server
        .until_allowed("the edit applies", (&walt.0, walt.1, &walt.2), true)
        .await;
    eventually("the edit's reload is counted", || async {
        (server.reloads().await > reloads_before).then_some(())
    })
    .await;
    assert_eq!(
        server.reloads().await - reloads_before,
        1.0,
        "only the policy edit reloads, not the log writes"
    );
    let compiles = server.series("portcullis_reload_compiles_total").await;
    assert!(compiles >= 1.0, "the edit compiled the model");

    // Touched and rewritten with the same text: a reload that finds nothing new.
    let unchanged = r#"portcullis_reload_total{result="unchanged",trigger="file_change"}"#;
    let unchanged_before = server.series(unchanged).await;
    let guards = policies.join("guards.cedar");
    std::fs::File::options()
        .append(true)
        .open(&guards)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    write_atomically(&guards, &std::fs::read_to_string(&guards).unwrap());
    eventually("the touch is looked at", || async {
        (server.series(unchanged).await > unchanged_before).then_some(())
    })
    .await;
    assert_eq!(
        server.series("portcullis_reload_compiles_total").await,
        compiles,
        "files that read as the serving snapshot's are not compiled"
    );
}

/// The shipped model with its entity data and AuthZEN mapping copied into `dir` too:
/// every part of the model is a file the server reloads.
fn copy_model_with_data(dir: &Path) -> (ModelArgs, PathBuf) {
    let mut model = copy_model(dir);
    let mapping = dir.join("authzen.yaml");
    std::fs::copy(repo("examples/portal/authzen.yaml"), &mapping).unwrap();
    model.authzen_mapping = Some(mapping);
    let entities = dir.join("entities.json");
    std::fs::copy(repo("examples/portal/entities.json"), &entities).unwrap();
    (model, entities)
}

impl Served {
    async fn start_with_data() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (model, entities) = copy_model_with_data(dir.path());
        let server = TestServer::start(ServeArgs {
            model,
            entity: portcullis::config::EntityArgs {
                entities: Some(entities),
                ..portcullis::config::EntityArgs::default()
            },
            ..ServeArgs::default()
        })
        .await;
        let reload = reload::spawn(
            server.app.model.clone(),
            Arc::new(SourceGate(server.app.entities.clone())),
            ReloadOptions {
                watch: None,
                debounce: Duration::from_millis(50),
                settle: Duration::from_millis(50),
                sighup: false,
            },
        );
        let served = Self {
            dir,
            server,
            _reload: reload,
        };
        eventually("the watcher is watching", || async {
            served.server.app.model.status().watching.then_some(())
        })
        .await;
        served
    }

    /// The entity file with every user changed by `edit`.
    fn users_edited(&self, edit: impl Fn(&str, &mut Value)) -> String {
        let mut data: Value = serde_json::from_str(&self.read("entities.json")).unwrap();
        for e in data.as_array_mut().unwrap() {
            if e["uid"]["type"] == "Portal::User" {
                let id = e["uid"]["id"].as_str().unwrap().to_string();
                edit(&id, e);
            }
        }
        serde_json::to_string_pretty(&data).unwrap()
    }

    /// An AuthZEN decision about `subject` (AuthZEN type and id).
    async fn authzen(&self, subject: (&str, &str), action: &str, resource: (&str, &str)) -> Value {
        let body = serde_json::json!({
            "subject": {"type": subject.0, "id": subject.1},
            "action": {"name": action},
            "resource": {"type": resource.0, "id": resource.1},
        });
        self.server.post("/access/v1/evaluation", &body).await.json
    }
}

#[tokio::test]
async fn editing_the_entity_file_changes_decisions() {
    let s = Served::start_with_data().await;
    let olivia = (user("olivia"), "ViewInvoice", uid("Invoice", "inv-1001"));
    assert!(s.allowed(&olivia.0, olivia.1, &olivia.2).await);

    // The owner is disabled in the data: the guard denies her everything.
    let disabled = s.users_edited(|id, e| {
        if id == "olivia" {
            e["attrs"]["disabled"] = true.into();
        }
    });
    s.write("entities.json", &disabled);
    s.until_decision(
        "the disabled owner is denied",
        (&olivia.0, olivia.1, &olivia.2),
        false,
    )
    .await;
    assert_eq!(
        s.policies().await["reload"]["last_error"],
        Value::Null,
        "the data edit applied cleanly"
    );
}

#[tokio::test]
async fn editing_the_authzen_mapping_applies() {
    let s = Served::start_with_data().await;
    let (bea, pays, invoice) = (("customer", "bea"), "PayInvoice", ("invoice", "inv-1001"));
    let before = s.authzen(bea, pays, invoice).await;
    assert_ne!(
        before["decision"], true,
        "`customer` is no AuthZEN type yet: {before}"
    );

    // The operator renames the AuthZEN type of users.
    let mapping = s
        .read("authzen.yaml")
        .replace("  user: Portal::User", "  customer: Portal::User");
    s.write("authzen.yaml", &mapping);
    eventually("the renamed type decides", || async {
        (s.authzen(bea, pays, invoice).await["decision"] == true).then_some(())
    })
    .await;
    let old_name = s.authzen(("user", "bea"), pays, invoice).await;
    assert_ne!(
        old_name["decision"], true,
        "the old name is gone: {old_name}"
    );
}

/// The portal schema with a required `department` on users.
fn schema_with_department(schema: &str) -> String {
    let with = schema.replace(
        "entity User in [Account] = {\n    email: String,",
        "entity User in [Account] = {\n    department: String,\n    email: String,",
    );
    assert_ne!(with, schema, "the schema declares users as expected");
    with
}

#[tokio::test]
async fn a_schema_change_that_needs_new_data_applies_once_both_files_agree() {
    // Either file may be written first; the state between is rejected and reported,
    // and the pair applies once both are written.
    for schema_first in [true, false] {
        let s = Served::start_with_data().await;
        let hash_before = s.policies().await["hash"].clone();
        let schema = schema_with_department(&s.read("portal.cedarschema"));
        let data = s.users_edited(|_, e| e["attrs"]["department"] = "ops".into());

        let needle = if schema_first {
            s.write("portal.cedarschema", &schema);
            "required attribute `department` (String) is missing"
        } else {
            s.write("entities.json", &data);
            "attribute `department` is not declared for `Portal::User`"
        };
        let messages = s
            .until_rejected("the half-written pair is rejected", needle)
            .await;
        assert!(
            messages
                .iter()
                .any(|m| m.contains("entity `Portal::User::")),
            "the misfit names the user: {messages:?}"
        );
        assert_eq!(
            s.policies().await["hash"],
            hash_before,
            "nothing was served"
        );
        assert_stable_decisions(&s.server).await;

        if schema_first {
            s.write("entities.json", &data);
        } else {
            s.write("portal.cedarschema", &schema);
        }
        s.until_no_error("the consistent pair applies").await;
        assert_ne!(
            s.policies().await["hash"],
            hash_before,
            "schema_first={schema_first}"
        );
        assert_stable_decisions(&s.server).await;
    }
}
