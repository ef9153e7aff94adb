//! Faults under load: a steady stream of decisions with known answers, through the
//! Cedar-native API, AuthZEN and the gateway, while Redis is paused, killed and
//! restarted empty, while a proxy silently drops every flow to it, while the
//! invalidation subscription is killed, while the policies
//! are reloaded, and while a grant is revoked. Every answer is compared with what the
//! data at that moment supports: no Allow the data does not support, no 5xx but the
//! documented 503 `entity_store_unavailable`, and after each fault the same server
//! answers every question correctly again, without a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::blackhole::Blackhole;
use common::redis::RedisServer;
use common::{eventually, Reply, TestServer, DEADLINE};
use http::Method;
use portcullis::config::{GatewayArgs, ModelArgs, RedisArgs, ServeArgs};
use portcullis::entities::SourceGate;
use portcullis::model::reload::{ReloadOutcome, Trigger};
use serde_json::{json, Value};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/portal/entities.json");

/// One question and its answer before and after bea loses acme's `invoices` permission.
struct Question {
    story: &'static str,
    principal: &'static str,
    action: &'static str,
    resource: (&'static str, &'static str),
    /// The gateway request standing for the same question.
    gateway: (&'static str, &'static str),
    before: bool,
    after: bool,
}

const QUESTIONS: &[Question] = &[
    Question {
        story: "the bookkeeper pays acme's invoice",
        principal: "bea",
        action: "PayInvoice",
        resource: ("Invoice", "inv-1001"),
        gateway: ("POST", "/accounts/acme/invoices/inv-1001/pay"),
        before: true,
        after: false,
    },
    Question {
        story: "the bookkeeper opens a ticket for acme",
        principal: "bea",
        action: "OpenTicket",
        resource: ("Account", "acme"),
        gateway: ("POST", "/accounts/acme/tickets"),
        before: true,
        after: true,
    },
    Question {
        story: "the bookkeeper may not see globex's invoice",
        principal: "bea",
        action: "ViewInvoice",
        resource: ("Invoice", "inv-9001"),
        gateway: ("GET", "/accounts/globex/invoices/inv-9001"),
        before: false,
        after: false,
    },
    Question {
        story: "the webmaster may not see acme's invoice",
        principal: "walt",
        action: "ViewInvoice",
        resource: ("Invoice", "inv-1001"),
        gateway: ("GET", "/accounts/acme/invoices/inv-1001"),
        before: false,
        after: false,
    },
    Question {
        story: "the owner views acme's invoice",
        principal: "olivia",
        action: "ViewInvoice",
        resource: ("Invoice", "inv-1001"),
        gateway: ("GET", "/accounts/acme/invoices/inv-1001"),
        before: true,
        after: true,
    },
    Question {
        story: "the developer manages globex's domain",
        principal: "dev",
        action: "ManageDomain",
        resource: ("Domain", "globex.example"),
        gateway: ("PUT", "/accounts/globex/domains/globex.example/whois"),
        before: true,
        after: true,
    },
    Question {
        story: "a disabled user sees no profile",
        principal: "dora",
        action: "ViewProfile",
        resource: ("Account", "acme"),
        gateway: ("GET", "/accounts/acme/profile"),
        before: false,
        after: false,
    },
];

const SURFACES: [&str; 3] = ["cedar", "authzen", "gateway"];

/// Asks `q` through `surface`; `Some(allowed)` for a decision, `None` for the
/// documented 503. Anything else is a broken promise, returned as `Err`.
async fn ask(server: &TestServer, surface: &str, q: &Question) -> Result<Option<bool>, String> {
    let json_ct = [("content-type", "application/json")];
    let reply: Reply = match surface {
        "cedar" => {
            let body = json!({
                "principal": format!("Portal::User::\"{}\"", q.principal),
                "action": format!("Portal::Action::\"{}\"", q.action),
                "resource": format!("Portal::{}::\"{}\"", q.resource.0, q.resource.1),
            });
            server
                .send(
                    Method::POST,
                    "/v1/is_authorized",
                    &json_ct,
                    body.to_string().into_bytes(),
                )
                .await
        }
        "authzen" => {
            let body = json!({
                "subject": {"type": "user", "id": q.principal},
                "action": {"name": q.action},
                "resource": {"type": q.resource.0.to_lowercase(), "id": q.resource.1},
            });
            server
                .send(
                    Method::POST,
                    "/access/v1/evaluation",
                    &json_ct,
                    body.to_string().into_bytes(),
                )
                .await
        }
        _ => {
            let headers = [
                ("x-original-method", q.gateway.0),
                ("x-original-uri", q.gateway.1),
                ("x-portal-user", q.principal),
            ];
            server
                .send(Method::GET, "/forward-auth/nginx", &headers, Vec::new())
                .await
        }
    };
    let broken = |why: &str| {
        Err(format!(
            "{surface}: {}: {why}: {} {}",
            q.story, reply.status, reply.text
        ))
    };
    match (surface, reply.status.as_u16()) {
        (_, 503) if reply.json["error"] == "entity_store_unavailable" => Ok(None),
        ("cedar", 200) => match reply.json["decision"].as_str() {
            Some("Allow") => Ok(Some(true)),
            Some("Deny") => Ok(Some(false)),
            _ => broken("no decision"),
        },
        ("authzen", 200) => match reply.json["decision"].as_bool() {
            Some(d) => Ok(Some(d)),
            None => broken("no decision"),
        },
        ("gateway", 200) => Ok(Some(true)),
        ("gateway", 403) => Ok(Some(false)),
        _ => broken("not a decision and not the documented 503"),
    }
}

/// The data in Redis at a moment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Data {
    /// The demo data.
    Before,
    /// The demo data with bea's `invoices` permission on acme revoked.
    After,
    /// Nothing (Redis was killed, or started again empty).
    Empty,
}

impl Data {
    fn allows(self, q: &Question) -> bool {
        match self {
            Data::Before => q.before,
            Data::After => q.after,
            Data::Empty => false,
        }
    }
}

/// What the data supports at a moment: one state, or, while a write or a crash is
/// under way, either of two (a request may read the data from before the write until
/// the write completes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Truth {
    from: Data,
    to: Data,
}

impl Truth {
    fn steady(d: Data) -> Self {
        Self { from: d, to: d }
    }

    fn supports_allow(self, q: &Question) -> bool {
        self.from.allows(q) || self.to.allows(q)
    }

    /// The one right answer in a steady state.
    fn exact(self, q: &Question) -> Option<bool> {
        (self.from == self.to).then(|| self.to.allows(q))
    }
}

/// The stream of decisions and what it saw.
struct Load {
    truth: Mutex<Truth>,
    running: AtomicBool,
    answers: AtomicU64,
    unavailable: AtomicU64,
    broken: Mutex<Vec<String>>,
}

impl Load {
    fn truth(&self) -> Truth {
        *self.truth.lock().unwrap()
    }

    /// Marks the data as changing to `to` while `change` runs, then as `to`.
    async fn change<F: std::future::Future<Output = ()>>(&self, to: Data, change: F) {
        let from = self.truth().to;
        *self.truth.lock().unwrap() = Truth { from, to };
        change.await;
        *self.truth.lock().unwrap() = Truth::steady(to);
    }

    /// Asks every question on every surface in a loop until stopped. The truth is read
    /// before and after each request; an Allow must be supported by both.
    async fn run(self: Arc<Self>, server: Arc<TestServer>, offset: usize) {
        let mut i = offset;
        while self.running.load(Ordering::SeqCst) {
            let q = &QUESTIONS[i % QUESTIONS.len()];
            let surface = SURFACES[(i / QUESTIONS.len()) % SURFACES.len()];
            i += 1;
            let before = self.truth();
            let answer = ask(&server, surface, q).await;
            let after = self.truth();
            // An Allow is right if the data allowed it at some moment of the request.
            self.answers.fetch_add(1, Ordering::SeqCst);
            match answer {
                Err(e) => self.broken.lock().unwrap().push(e),
                Ok(None) => {
                    self.unavailable.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Some(true)) if !(before.supports_allow(q) || after.supports_allow(q)) => {
                    self.broken.lock().unwrap().push(format!(
                        "{surface}: {}: allowed, but the data says {before:?}/{after:?}",
                        q.story
                    ));
                }
                Ok(Some(_)) => {}
            }
        }
    }
}

/// Every question on every surface answers exactly what the data says.
async fn all_correct(server: &TestServer, truth: Truth, when: &str) {
    eventually(
        &format!("every answer is right again {when}"),
        DEADLINE,
        || async {
            for q in QUESTIONS {
                for surface in SURFACES {
                    let got = ask(server, surface, q).await;
                    if got != Ok(truth.exact(q)) {
                        println!("{when}: {surface}: {}: {got:?}", q.story);
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await;
}

async fn import(redis: &RedisServer) {
    entities(redis, &["import", DEMO]).await;
}

async fn entities(redis: &RedisServer, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        // A loaded machine may take its time to acknowledge; the answers are checked
        // on their own, so wait for the acknowledgement rather than fail on its delay.
        .args([
            "entities",
            "--redis-url",
            &redis.url(),
            "--ack-timeout-ms",
            "20000",
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "entities {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Bea's entity as the demo has it, with her acme permissions replaced.
fn bea_with_permissions(permissions: &[&str]) -> String {
    let demo: Value = serde_json::from_str(&std::fs::read_to_string(DEMO).unwrap()).unwrap();
    let mut bea = demo
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["uid"]["id"] == "bea")
        .unwrap()
        .clone();
    bea["tags"]["acme"]["permissions"] = json!(permissions);
    bea.to_string()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The shipped model's schema, policies, links and routes copied into `dir`, so that the
/// test can edit them while the server runs.
fn copy_model(dir: &Path) -> ModelArgs {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let schema = dir.join("portal.cedarschema");
    std::fs::copy(repo("schema/portal.cedarschema"), &schema).unwrap();
    for entry in std::fs::read_dir(repo("policies")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".cedar") || name == "links.json" || name == "routes.yaml" {
            std::fs::copy(&path, policies.join(&name)).unwrap();
        }
    }
    ModelArgs {
        schema: Some(schema),
        template_links: Some(policies.join("links.json")),
        routes: Some(policies.join("routes.yaml")),
        policies: Some(policies),
        ..ModelArgs::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decisions_under_faults_never_allow_what_the_data_does_not_support() {
    let mut redis = RedisServer::start();
    import(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServeArgs {
        model: copy_model(dir.path()),
        gateway: GatewayArgs {
            trusted_principal_header: Some("x-portal-user".to_string()),
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    };
    // Portcullis reaches Redis through a proxy that can silence its flows.
    let proxy = Blackhole::start(([127, 0, 0, 1], redis.port).into()).await;
    args.entity.redis = RedisArgs {
        redis_url: Some(proxy.url()),
        redis_timeout_ms: 300,
        ..RedisArgs::default()
    };
    let server = Arc::new(TestServer::start(args).await);
    all_correct(&server, Truth::steady(Data::Before), "at the start").await;

    let load = Arc::new(Load {
        truth: Mutex::new(Truth::steady(Data::Before)),
        running: AtomicBool::new(true),
        answers: AtomicU64::new(0),
        unavailable: AtomicU64::new(0),
        broken: Mutex::new(Vec::new()),
    });
    let streams: Vec<_> = (0..3)
        .map(|k| tokio::spawn(load.clone().run(server.clone(), k * 7)))
        .collect();
    let answered = |at: u64| {
        let load = load.clone();
        async move {
            eventually("the stream goes on", DEADLINE, || async {
                (load.answers.load(Ordering::SeqCst) > at + 50).then_some(())
            })
            .await;
        }
    };

    // Redis hangs (SIGSTOP): uncached questions get the 503, none an unsupported Allow.
    answered(load.answers.load(Ordering::SeqCst)).await;
    redis.pause();
    answered(load.answers.load(Ordering::SeqCst)).await;
    redis.resume();
    all_correct(&server, Truth::steady(Data::Before), "after Redis hung").await;

    // The invalidation subscription is killed: the cache is flushed, answers stay right.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    answered(load.answers.load(Ordering::SeqCst)).await;
    all_correct(
        &server,
        Truth::steady(Data::Before),
        "after the subscription was killed",
    )
    .await;

    // The policies reload under the stream: a new file that changes none of the
    // answers, then the same file removed again.
    let gate = SourceGate(server.app.entities.clone());
    let extra = dir.path().join("policies/unrelated.cedar");
    std::fs::write(
        &extra,
        "permit (principal == Portal::User::\"nobody\", action, resource);\n",
    )
    .unwrap();
    assert!(matches!(
        server.app.model.reload(Trigger::Manual, &gate).await,
        ReloadOutcome::Applied { .. }
    ));
    answered(load.answers.load(Ordering::SeqCst)).await;
    std::fs::remove_file(&extra).unwrap();
    assert!(matches!(
        server.app.model.reload(Trigger::Manual, &gate).await,
        ReloadOutcome::Applied { .. }
    ));
    answered(load.answers.load(Ordering::SeqCst)).await;

    // Bea loses acme's invoices permission while the stream runs.
    let revoked = bea_with_permissions(&["tickets"]);
    load.change(Data::After, async {
        entities(&redis, &["put", &revoked]).await;
    })
    .await;
    answered(load.answers.load(Ordering::SeqCst)).await;

    // Redis dies and comes back empty: with no data nothing is allowed, not even
    // from the cache; once the data is written again, every answer is right.
    // While it is down nobody can write, so the data is still what was last written;
    // it is gone only once a Redis without it answers.
    redis.stop();
    answered(load.answers.load(Ordering::SeqCst)).await;
    load.change(Data::Empty, async { redis.start_again() })
        .await;
    answered(load.answers.load(Ordering::SeqCst)).await;
    load.change(Data::Before, import(&redis)).await;
    load.change(Data::After, async {
        entities(&redis, &["put", &revoked]).await;
    })
    .await;
    all_correct(&server, Truth::steady(Data::After), "after Redis came back").await;

    // Every flow to Redis goes silent, as when a NAT forgets them: answers stay right
    // or are the 503 until the liveness checks replace the connections.
    proxy.drop_open_flows_except(&[]);
    answered(load.answers.load(Ordering::SeqCst)).await;
    all_correct(
        &server,
        Truth::steady(Data::After),
        "after the flows to Redis went silent",
    )
    .await;
    // Writes are acknowledged again through the new connections: the writer fails
    // when no subscriber acknowledges within its timeout.
    // A write published while the old subscription is silent reaches nobody (and its
    // writer rightly reports the missing acknowledgement); once the liveness check has
    // replaced the subscription, writes are acknowledged again.
    eventually("the silent subscription is replaced", DEADLINE, || async {
        let metrics = server.admin_get("/metrics").await.text;
        let replaced = common::metric(
            &metrics,
            "portcullis_redis_subscription_failures_total{how=\"unanswered\"}",
        ) >= Some(1.0);
        (replaced && server.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    load.change(Data::Before, import(&redis)).await;
    all_correct(
        &server,
        Truth::steady(Data::Before),
        "after a write once the flows were replaced",
    )
    .await;

    load.running.store(false, Ordering::SeqCst);
    for s in streams {
        s.await.unwrap();
    }
    let broken = load.broken.lock().unwrap().clone();
    assert!(
        broken.is_empty(),
        "{} broken answers:\n{}",
        broken.len(),
        broken.join("\n")
    );
    // The faults were felt: some answers were the documented 503.
    let unavailable = load.unavailable.load(Ordering::SeqCst);
    let answers = load.answers.load(Ordering::SeqCst);
    println!("{answers} answers, {unavailable} of them 503 entity_store_unavailable");
    assert!(unavailable > 0, "no fault reached the answers");
    Arc::try_unwrap(server)
        .ok()
        .expect("the streams have ended")
        .stop()
        .await;
}
