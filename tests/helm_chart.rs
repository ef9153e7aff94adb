//! The Helm chart (`helm/portcullis`) and the container image's build step, checked
//! with the real tools: helm and kubernetes-validate, which `scripts/deps/` installs
//! into `.tools/bin`. A missing tool fails the test with the command that installs it.
//!
//! Every render is one of `helm/portcullis/ci/*.yaml` and `examples/*.yaml` (plus the
//! default values), so a new values file is covered by every check here at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

/// Kubernetes versions every manifest is validated against: the newest three the
/// installed kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.35.0", "1.36.0", "1.37.0"];

/// Kinds kubernetes-validate has no schema for (custom resources). Their structure is
/// asserted by a test of its own instead (`the_service_monitor_scrapes_the_metrics_port`).
const CUSTOM_RESOURCE_KINDS: &[&str] = &["ServiceMonitor"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("helm/portcullis")
}

/// A tool from `.tools/bin` (where `scripts/deps/` puts it) or else from PATH.
fn tool(name: &str) -> Command {
    let local = repo().join(".tools/bin").join(name);
    let program = if local.is_file() {
        local
    } else {
        PathBuf::from(name)
    };
    let mut cmd = Command::new(program);
    cmd.current_dir(repo());
    cmd
}

fn run(mut cmd: Command, tool_name: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {tool_name} ({e}): install it with `bash scripts/deps/{tool_name}.sh`")
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One way of installing the chart: a values file, or none for the defaults.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    values: Option<PathBuf>,
}

fn cases() -> Vec<Case> {
    let mut cases = vec![Case {
        name: "default".to_string(),
        values: None,
    }];
    for dir in ["ci", "examples"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for path in files {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            cases.push(Case {
                name: format!("{dir}/{stem}"),
                values: Some(path),
            });
        }
    }
    assert!(
        cases.len() >= 8,
        "the ci/ and examples/ value files are gone"
    );
    cases
}

fn helm_template(values: Option<&Path>, extra: &[&str]) -> Output {
    let mut cmd = tool("helm");
    cmd.args(["template", "portal-authz"])
        .arg(chart())
        .args(["--namespace", "portal"]);
    if let Some(v) = values {
        cmd.arg("--values").arg(v);
    }
    cmd.args(extra);
    run(cmd, "helm")
}

/// A rendered manifest set: the YAML text and its documents.
struct Render {
    case: Case,
    yaml: String,
    docs: Vec<Value>,
}

impl Render {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.of_kind(kind);
        assert_eq!(found.len(), 1, "{}: expected one {kind}", self.case.name);
        found[0]
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn pod(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    fn portcullis(&self) -> &Value {
        self.pod()["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "portcullis")
            .unwrap_or_else(|| panic!("{}: no portcullis container", self.case.name))
    }

    fn args(&self) -> Vec<String> {
        strings(&self.portcullis()["args"])
    }

    /// The value of `--flag=value` in the container's arguments.
    fn arg(&self, flag: &str) -> Option<String> {
        let prefix = format!("{flag}=");
        self.args()
            .iter()
            .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
    }

    fn config_map(&self, name: &str) -> Option<&Value> {
        self.of_kind("ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == name)
    }

    fn secret(&self, name: &str) -> Option<&Value> {
        self.of_kind("Secret")
            .into_iter()
            .find(|c| c["metadata"]["name"] == name)
    }
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn render_case(case: &Case, extra: &[&str]) -> Render {
    let out = helm_template(case.values.as_deref(), extra);
    assert!(
        out.status.success(),
        "helm template failed for {}: {}",
        case.name,
        text(&out.stderr)
    );
    let yaml = text(&out.stdout);
    let docs = parse_docs(&yaml);
    Render {
        case: case.clone(),
        yaml,
        docs,
    }
}

/// Every case rendered once per test binary (cargo test runs the tests as threads of
/// one process).
fn renders() -> &'static [Render] {
    static RENDERS: OnceLock<Vec<Render>> = OnceLock::new();
    RENDERS.get_or_init(|| cases().iter().map(|c| render_case(c, &[])).collect())
}

fn render_named(name: &str) -> &'static Render {
    renders()
        .iter()
        .find(|r| r.case.name == name)
        .unwrap_or_else(|| panic!("no values file for case {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The flags and `PORTCULLIS_*` variables `portcullis serve --help` lists.
fn serve_help() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    let mut known = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
        let word = word.trim_end_matches([',', '=']);
        if word.starts_with("--") && word.len() > 2 {
            known.insert(word.to_string());
        }
        if let Some(var) = word.strip_prefix("PORTCULLIS_") {
            known.insert(format!("PORTCULLIS_{var}"));
        }
    }
    assert!(known.contains("--check-config") && known.contains("PORTCULLIS_LISTEN"));
    known
}

fn flag_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
}

#[test]
fn the_chart_lints_strictly_with_every_values_file() {
    for case in cases() {
        let mut cmd = tool("helm");
        cmd.args(["lint", "--strict"]).arg(chart());
        if let Some(v) = &case.values {
            cmd.arg("--values").arg(v);
        }
        let out = run(cmd, "helm");
        assert!(
            out.status.success(),
            "helm lint --strict failed for {}:\n{}{}",
            case.name,
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

fn kubernetes_validate(file: &Path) -> Output {
    let mut cmd = tool("kubernetes-validate");
    cmd.arg("--strict");
    for v in KUBERNETES_VERSIONS {
        cmd.args(["-k", v]);
    }
    cmd.arg(file);
    run(cmd, "kubernetes-validate")
}

#[test]
fn every_rendered_manifest_passes_strict_kubernetes_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    for render in renders() {
        let file = dir
            .path()
            .join(format!("{}.yaml", render.case.name.replace('/', "-")));
        std::fs::write(&file, &render.yaml).unwrap();
        let out = kubernetes_validate(&file);
        let report = text(&out.stdout) + &text(&out.stderr);
        assert!(
            out.status.success(),
            "{} does not validate:\n{report}",
            render.case.name
        );
        // A resource without a schema only warns; each one must either have passed for
        // every version or be a known custom resource.
        for doc in &render.docs {
            let kind = doc["kind"].as_str().unwrap();
            let name = doc["metadata"]["name"].as_str().unwrap();
            let passed = format!(
                "for resource {}/{name} against version",
                kind.to_lowercase()
            );
            let times = report.matches(&passed).count();
            if CUSTOM_RESOURCE_KINDS.contains(&kind) {
                assert_eq!(
                    times, 0,
                    "{kind} is validated now: drop it from CUSTOM_RESOURCE_KINDS"
                );
            } else {
                assert_eq!(
                    times,
                    KUBERNETES_VERSIONS.len(),
                    "{}: {kind}/{name} was not validated for every version:\n{report}",
                    render.case.name
                );
            }
        }
        for line in report.lines().filter(|l| l.starts_with("WARN")) {
            assert!(
                CUSTOM_RESOURCE_KINDS
                    .iter()
                    .any(|k| line.contains(&format!("for kind {k} "))),
                "{}: unexpected warning: {line}",
                render.case.name
            );
        }
    }
}

#[test]
fn strict_schema_validation_rejects_a_misspelt_field() {
    // The control for the test above: the validator is strict and really runs.
    let render = render_named("default");
    let broken = render.yaml.replace("readinessProbe:", "readynessProbe:");
    assert_ne!(broken, render.yaml);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, broken).unwrap();
    let out = kubernetes_validate(&file);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("readynessProbe"));
}

#[test]
fn the_service_monitor_scrapes_the_metrics_port() {
    let mut seen = 0;
    for render in renders() {
        for sm in render.of_kind("ServiceMonitor") {
            seen += 1;
            assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
            let service = render.one("Service");
            let service_labels = service["metadata"]["labels"].as_object().unwrap();
            for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
                assert_eq!(
                    service_labels.get(k),
                    Some(v),
                    "{}: selector {k}",
                    render.case.name
                );
            }
            let port_names: Vec<&Value> = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| &p["name"])
                .collect();
            let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
            assert_eq!(endpoints.len(), 1);
            let ep = &endpoints[0];
            assert!(
                port_names.contains(&&ep["port"]),
                "{}: port {}",
                render.case.name,
                ep["port"]
            );
            assert_eq!(ep["path"], "/metrics");
            // The admin port, plain HTTP whether or not the decision port has TLS.
            assert_eq!(ep["port"], "admin", "{}", render.case.name);
            assert_eq!(ep["scheme"], "http", "{}", render.case.name);
            for field in ["interval", "scrapeTimeout"] {
                let d = ep[field].as_str().unwrap();
                assert!(
                    d.ends_with('s') && d[..d.len() - 1].parse::<u32>().is_ok(),
                    "{field}: {d}"
                );
            }
            let known: BTreeSet<&str> = [
                "port",
                "path",
                "scheme",
                "interval",
                "scrapeTimeout",
                "tlsConfig",
            ]
            .into();
            for key in ep.as_object().unwrap().keys() {
                assert!(
                    known.contains(key.as_str()),
                    "unexpected endpoint field {key}"
                );
            }
            assert_eq!(
                sm["spec"]["namespaceSelector"]["matchNames"][0],
                render.deployment()["metadata"]["namespace"]
            );
        }
    }
    assert!(seen >= 2, "no values file turns the ServiceMonitor on");
}

#[test]
fn probes_point_at_the_health_endpoints_on_the_admin_port_portcullis_listens_on() {
    for render in renders() {
        let c = render.portcullis();
        let port = &c["ports"][0];
        assert_eq!(port["name"], "http");
        let container_port = port["containerPort"].as_u64().unwrap();
        let listen = render.arg("--listen").unwrap();
        assert_eq!(
            listen,
            format!("0.0.0.0:{container_port}"),
            "{}: the pod must listen on its pod IP, on the declared port",
            render.case.name
        );
        // The admin listener must bind the pod IP too, or the kubelet cannot reach it.
        let admin = &c["ports"][1];
        assert_eq!(admin["name"], "admin");
        let admin_port = admin["containerPort"].as_u64().unwrap();
        assert_eq!(
            render.arg("--admin-listen").unwrap(),
            format!("0.0.0.0:{admin_port}"),
            "{}: the admin listener must listen on the pod IP, on the declared port",
            render.case.name
        );
        // The admin listener is plain HTTP, with or without TLS on the decision port.
        let scheme = "HTTP";
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{}: {probe}", render.case.name);
            assert_eq!(get["port"], "admin", "{}: {probe}", render.case.name);
            assert_eq!(get["scheme"], scheme, "{}: {probe}", render.case.name);
        }
        let service = render.one("Service");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
        assert_eq!(service["spec"]["ports"][1]["name"], "admin");
        assert_eq!(service["spec"]["ports"][1]["targetPort"], "admin");
    }
}

#[test]
fn the_network_policy_admits_scrapers_to_the_admin_port_only_from_their_peers() {
    let mut seen = 0;
    for render in renders() {
        for np in render.of_kind("NetworkPolicy") {
            seen += 1;
            let rules = np["spec"]["ingress"].as_array().unwrap();
            let admin: Vec<&Value> = rules
                .iter()
                .filter(|r| {
                    r["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["port"] == "admin")
                })
                .collect();
            assert_eq!(
                admin.len(),
                1,
                "{}: one rule for the admin port",
                render.case.name
            );
            // The decision rule does not open the admin port, nor the admin rule the
            // decision port.
            assert_eq!(admin[0]["ports"].as_array().unwrap().len(), 1);
            for rule in rules.iter().filter(|r| !std::ptr::eq(*r, admin[0])) {
                assert!(
                    rule["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|p| p["port"] != "admin"),
                    "{}: {rule}",
                    render.case.name
                );
            }
            if render.case.name == "ci/monitoring-values" {
                assert_eq!(
                    admin[0]["from"][0]["namespaceSelector"]["matchLabels"]
                        ["kubernetes.io/metadata.name"],
                    "monitoring"
                );
            }
        }
    }
    assert!(seen >= 1, "no values file turns the NetworkPolicy on");
}

#[test]
fn connection_limits_and_timeouts_reach_the_command_line_only_when_set() {
    let tuned = render_named("ci/monitoring-values");
    for (flag, value) in [
        ("--max-connections", "1024"),
        ("--admin-max-connections", "8"),
        ("--header-read-timeout-secs", "5"),
        ("--body-read-timeout-secs", "15"),
        ("--idle-timeout-secs", "90"),
        ("--http2-keepalive-interval-secs", "30"),
        ("--http2-keepalive-timeout-secs", "10"),
        ("--http2-max-concurrent-streams", "64"),
    ] {
        assert_eq!(tuned.arg(flag).as_deref(), Some(value), "{flag}");
        // 0 in the values keeps the binary's default: the flag is left out.
        assert_eq!(render_named("default").arg(flag), None, "{flag}");
    }
}

#[test]
fn the_restricted_security_profile_holds_for_every_container() {
    for render in renders() {
        let pod = render.pod();
        let name = &render.case.name;
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        assert!(
            pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
            "{name}"
        );
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            let who = format!("{name}: container {}", c["name"]);
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{who}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{who}");
            assert_eq!(sc["runAsNonRoot"], true, "{who}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{who}"
            );
            assert!(sc["capabilities"]["add"].is_null(), "{who}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{who}");
            assert!(
                !c["resources"]["limits"]["memory"].is_null(),
                "{who}: memory limit"
            );
        }
    }
}

#[test]
fn the_sidecar_examples_put_a_gateway_beside_portcullis_in_one_pod() {
    for (case, gateway) in [
        ("examples/sidecar-nginx", "nginx"),
        ("examples/sidecar-envoy", "envoy"),
    ] {
        let render = render_named(case);
        let names: Vec<&str> = render.pod()["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["portcullis", gateway]);
        // The gateway asks Portcullis over the pod's loopback, on the port it listens on.
        let port = render.portcullis()["ports"][0]["containerPort"]
            .as_u64()
            .unwrap();
        let config = render
            .of_kind("ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"].as_str().unwrap().ends_with(gateway))
            .unwrap();
        let config = serde_json::to_string(&config["data"]).unwrap();
        assert!(
            config.contains(&format!("127.0.0.1:{port}"))
                || config.contains(&format!("port_value: {port}")),
            "{case}: the gateway does not call Portcullis on 127.0.0.1:{port}"
        );
        let service_ports: Vec<&Value> = render.one("Service")["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["name"])
            .collect();
        assert_eq!(
            service_ports,
            [
                &Value::from("http"),
                &Value::from("admin"),
                &Value::from("gateway")
            ]
        );
    }
}

#[test]
fn every_flag_and_variable_the_chart_passes_is_one_serve_accepts() {
    let known = serve_help();
    let mut rendered = BTreeSet::new();
    for render in renders() {
        let args = render.args();
        assert_eq!(
            args.first().map(String::as_str),
            Some("serve"),
            "{}",
            render.case.name
        );
        for arg in &args[1..] {
            assert!(
                arg.starts_with("--"),
                "{}: stray argument {arg}",
                render.case.name
            );
            rendered.insert(flag_name(arg).to_string());
        }
        for var in render.portcullis()["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap();
            if name.starts_with("PORTCULLIS_") {
                rendered.insert(name.to_string());
            }
        }
    }
    for flag in &rendered {
        assert!(
            known.contains(flag),
            "the chart passes {flag}, which `portcullis serve --help` does not list"
        );
    }
}

/// The arguments of a render with every mounted ConfigMap written to `dir`, or `None`
/// when the render needs something outside (a Secret, Redis).
fn localized_args(render: &Render, dir: &Path, known: &BTreeSet<String>) -> Option<Vec<String>> {
    let pod = render.pod();
    let c = render.portcullis();
    if c["env"].as_array().is_some_and(|e| !e.is_empty()) {
        return None;
    }
    let mut mounts = Vec::new();
    for mount in c["volumeMounts"].as_array().unwrap() {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let local = dir.join(mount["name"].as_str().unwrap());
        std::fs::create_dir_all(&local).unwrap();
        // A Secret the chart renders (the page-token key) is laid out like a
        // ConfigMap; one the operator brings cannot be, so that case is left out.
        if let Some(name) = volume["secret"]["secretName"].as_str() {
            let secret = render.secret(name)?;
            for (key, value) in secret["data"].as_object().unwrap() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().unwrap())
                    .unwrap();
                std::fs::write(local.join(key), bytes).unwrap();
            }
        } else {
            let cm = render.config_map(volume["configMap"]["name"].as_str()?)?;
            for (key, value) in cm["data"].as_object().unwrap() {
                std::fs::write(local.join(key), value.as_str().unwrap()).unwrap();
            }
        }
        mounts.push((mount["mountPath"].as_str().unwrap().to_string(), local));
    }
    let mut args = Vec::new();
    for arg in &render.args()[1..] {
        // A flag another branch adds is left out until that branch lands.
        if !known.contains(flag_name(arg)) {
            continue;
        }
        let mut arg = arg.clone();
        for (mount_path, local) in &mounts {
            arg = arg.replace(mount_path.as_str(), local.to_str().unwrap());
        }
        args.push(arg);
    }
    Some(args)
}

#[test]
fn every_replica_signs_page_tokens_with_one_key() {
    // By default the chart creates the key: a random one of 48 characters, mounted
    // where `--page-token-key-file` points.
    let render = render_named("default");
    let path = render
        .arg("--page-token-key-file")
        .expect("the flag is passed");
    let secret = render
        .secret("portal-authz-portcullis-page-token")
        .expect("the chart creates the key's Secret");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["page-token-key"].as_str().unwrap())
        .unwrap();
    assert_eq!(key.len(), 48);
    let mount = render.portcullis()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "page-token")
        .expect("the key is mounted");
    assert_eq!(
        path,
        format!("{}/page-token-key", mount["mountPath"].as_str().unwrap())
    );

    // An operator's Secret replaces the chart's.
    let theirs = render_case(
        &Case {
            name: "existing page-token key".to_string(),
            values: None,
        },
        &["--set", "authzen.pageTokenKey.existingSecret=fleet-key"],
    );
    assert!(theirs.of_kind("Secret").is_empty(), "{}", theirs.yaml);
    let volume = theirs.pod()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "page-token")
        .expect("their Secret is mounted");
    assert_eq!(volume["secret"]["secretName"], "fleet-key");
    assert!(theirs.arg("--page-token-key-file").is_some());

    // Turned off, no key: each pod draws its own.
    let none = render_case(
        &Case {
            name: "no page-token key".to_string(),
            values: None,
        },
        &["--set", "authzen.pageTokenKey.create=false"],
    );
    assert!(none.of_kind("Secret").is_empty());
    assert_eq!(none.arg("--page-token-key-file"), None);
}

#[test]
fn the_rendered_configuration_loads_with_check_config() {
    let known = serve_help();
    let mut checked = BTreeSet::new();
    for render in renders() {
        let dir = tempfile::tempdir().unwrap();
        let Some(args) = localized_args(render, dir.path(), &known) else {
            continue;
        };
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("serve")
            .args(&args)
            .arg("--check-config")
            .env_clear()
            .output()
            .unwrap();
        assert!(
            out.status.success() && text(&out.stdout).contains("configuration ok"),
            "{}: portcullis serve {args:?} --check-config:\n{}{}",
            render.case.name,
            text(&out.stdout),
            text(&out.stderr)
        );
        checked.insert(render.case.name.as_str());
    }
    for must in [
        "default",
        "ci/inline-values",
        "ci/existing-configmap-values",
        "examples/sidecar-nginx",
    ] {
        assert!(
            checked.contains(must),
            "{must} was not checked (checked: {checked:?})"
        );
    }
}

/// A process killed when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The NOTES.txt helm prints after an install. `helm install --dry-run` needs a
/// cluster, so a copy of the chart renders the notes as the value of a ConfigMap-like
/// document that `helm template` can show.
fn install_notes(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("portcullis");
    copy_dir(&chart(), &copy);
    let notes = std::fs::read_to_string(copy.join("templates/NOTES.txt")).unwrap();
    std::fs::write(
        copy.join("templates/zz-notes.yaml"),
        format!("{{{{- define \"notes.check\" }}}}{notes}{{{{- end }}}}\nnotes: {{{{ include \"notes.check\" . | quote }}}}\n"),
    )
    .unwrap();
    let mut cmd = tool("helm");
    cmd.args(["template", "portal-authz"]).arg(&copy).args([
        "--namespace",
        "portal",
        "--show-only",
        "templates/zz-notes.yaml",
    ]);
    if let Some(v) = &case.values {
        cmd.arg("--values").arg(v);
    }
    let out = run(cmd, "helm");
    assert!(out.status.success(), "{}: {}", case.name, text(&out.stderr));
    let doc: Value = serde_yaml_ng::from_str(&text(&out.stdout)).unwrap();
    doc["notes"].as_str().unwrap().to_string()
}

#[test]
fn the_install_notes_render_for_every_values_file() {
    for render in renders() {
        let notes = install_notes(&render.case);
        let name = render.deployment()["metadata"]["name"].as_str().unwrap();
        assert!(
            notes.contains(&format!("svc/{name} ")),
            "{}:\n{notes}",
            render.case.name
        );
        let demo_data = render.portcullis()["env"].is_null() && render.arg("--entities").is_none();
        assert_eq!(
            notes.contains("serves the demo\nentity data"),
            demo_data,
            "{}: the demo data warning\n{notes}",
            render.case.name
        );
    }
}

#[test]
fn a_pod_started_with_the_rendered_arguments_answers_its_probes() {
    let known = serve_help();
    for case in ["default", "ci/inline-values"] {
        let render = render_named(case);
        let dir = tempfile::tempdir().unwrap();
        let args = localized_args(render, dir.path(), &known).unwrap();
        // Loopback instead of the pod IP; the ports are checked against the probes above.
        let port = common::free_port();
        let admin_port = common::free_port();
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                if a.starts_with("--listen=") {
                    format!("--listen=127.0.0.1:{port}")
                } else if a.starts_with("--admin-listen=") {
                    format!("--admin-listen=127.0.0.1:{admin_port}")
                } else {
                    a
                }
            })
            .collect();
        let _server = Running(
            Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .arg("serve")
                .args(&args)
                .env_clear()
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let get = |path: &str| {
            common::send_blocking(loopback(port), http::Method::GET, path, &[], Vec::new())
        };
        let admin_get = |path: &str| {
            common::send_blocking(
                loopback(admin_port),
                http::Method::GET,
                path,
                &[],
                Vec::new(),
            )
        };
        // The probes' endpoints on the admin port; health also on the decision port.
        common::wait_until(
            &format!("{case}: /healthz answers 200"),
            Duration::from_secs(60),
            || admin_get("/healthz").filter(|r| r.status == 200),
        );
        for path in ["/readyz", "/metrics", "/v1/policies"] {
            let reply = admin_get(path).unwrap();
            assert_eq!(reply.status, 200, "{case}: admin {path}: {}", reply.text);
        }
        assert_eq!(get("/healthz").unwrap().status, 200, "{case}");
        assert_eq!(get("/metrics").unwrap().status, 404, "{case}");
        if case == "default" {
            // The request NOTES.txt suggests is one the service decides: the bookkeeper
            // bea may pay acme's invoice in the demo data.
            let notes = install_notes(&render.case);
            let body = notes
                .split("-d '")
                .nth(1)
                .unwrap()
                .split('\'')
                .next()
                .unwrap();
            let reply = common::send_blocking(
                loopback(port),
                http::Method::POST,
                "/v1/is_authorized",
                &[("content-type", "application/json")],
                body.as_bytes().to_vec(),
            )
            .unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text);
            assert_eq!(reply.json["decision"], "Allow", "{}", reply.text);
        }
    }
}

#[test]
fn the_policy_config_map_is_mounted_as_a_directory_and_edits_to_it_do_not_restart_pods() {
    for render in renders() {
        let c = render.portcullis();
        let model = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "model")
            .unwrap();
        // The kubelet never updates a subPath mount, which would defeat hot reload.
        assert!(model["subPath"].is_null(), "{}", render.case.name);
        assert_eq!(
            render.arg("--policies").as_deref(),
            model["mountPath"].as_str()
        );
        let annotations = &render.pod_template_annotations();
        for key in annotations
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(
                !key.contains("model") && !key.contains("polic"),
                "{}: {key}",
                render.case.name
            );
        }
    }
    // Two different policy texts leave the pod template unchanged; two different
    // entity files (read at start only) change it.
    let case = &render_named("ci/inline-values").case;
    let a = render_case(
        case,
        &[
            "--set-string",
            "policies.inline.policies.extra\\.cedar=// a",
        ],
    );
    let b = render_case(
        case,
        &[
            "--set-string",
            "policies.inline.policies.extra\\.cedar=// b",
        ],
    );
    assert_ne!(a.config_map("authz-model"), b.config_map("authz-model"));
    assert_eq!(
        a.deployment()["spec"]["template"],
        b.deployment()["spec"]["template"]
    );
    let c = render_case(case, &["--set-string", "entities.inline=[]"]);
    assert!(!a.pod_template_annotations()["checksum/entities"].is_null());
    assert_ne!(
        a.pod_template_annotations()["checksum/entities"],
        c.pod_template_annotations()["checksum/entities"]
    );
}

impl Render {
    fn pod_template_annotations(&self) -> Value {
        self.deployment()["spec"]["template"]["metadata"]["annotations"].clone()
    }
}

/// Whether `helm lint` rejects a bad value too. Lint renders `required` and `fail`
/// leniently, so only the schema's checks fail it; template and install fail on both.
#[derive(Clone, Copy, PartialEq)]
enum Caught {
    BySchema,
    ByTemplate,
}

#[test]
fn bad_values_fail_at_template_and_lint_time() {
    use Caught::{BySchema, ByTemplate};
    let table: &[(&str, &str, Caught)] = &[
        ("a replica count that is not a number", "replicaCount: two", BySchema),
        ("an unknown top-level key", "replicas: 3", BySchema),
        ("a misspelt nested key", "service:\n  prot: 80", BySchema),
        ("a misspelt policy source", "policies:\n  source: configmap", BySchema),
        ("an existing ConfigMap source without its name", "policies:\n  source: existingConfigMap", BySchema),
        ("a policy file without the .cedar suffix", "policies:\n  source: values\n  inline:\n    schema: x\n    policies:\n      a.txt: x", BySchema),
        ("privilege escalation", "securityContext:\n  allowPrivilegeEscalation: true\n  readOnlyRootFilesystem: true\n  capabilities:\n    drop: [ALL]", BySchema),
        ("a writable root filesystem", "securityContext:\n  allowPrivilegeEscalation: false\n  readOnlyRootFilesystem: false\n  capabilities:\n    drop: [ALL]", BySchema),
        ("a pod that may run as root", "podSecurityContext:\n  runAsNonRoot: false\n  seccompProfile:\n    type: RuntimeDefault", BySchema),
        ("a decision log setting that is neither off, on nor a rate", "server:\n  decisionLog: sometimes", BySchema),
        ("a log format the binary does not know", "server:\n  logFormat: xml", BySchema),
        ("a port out of range", "containerPort: 70000", BySchema),
        ("an image digest that is not one", "image:\n  digest: latest", BySchema),
        ("Redis without a URL or an address", "redis:\n  enabled: true", BySchema),
        ("a Redis port given as text", "redis:\n  port: \"6379\"", BySchema),
        ("TLS without its Secret", "tls:\n  enabled: true", BySchema),
        ("a ServiceMonitor interval without a unit", "serviceMonitor:\n  enabled: true\n  interval: 30", BySchema),
        ("an autoscaler whose minimum exceeds its maximum", "autoscaling:\n  enabled: true\n  minReplicas: 5\n  maxReplicas: 2", ByTemplate),
        ("inline policies without any policy", "policies:\n  source: values\n  inline:\n    schema: x", ByTemplate),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, values, caught) in table {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, values).unwrap();
        let out = helm_template(Some(&file), &[]);
        assert!(!out.status.success(), "helm template accepted {what}");
        let mut lint = tool("helm");
        lint.args(["lint", "--strict"])
            .arg(chart())
            .arg("--values")
            .arg(&file);
        let out = run(lint, "helm");
        if *caught == BySchema {
            assert!(!out.status.success(), "helm lint accepted {what}");
        }
    }
}

/// The files of `dir` and their contents.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_chart_ships_the_same_schema_and_policies_as_the_repository() {
    for dir in ["schema", "policies"] {
        let shipped = files_of(&repo().join(dir));
        let in_chart = files_of(&chart().join("files").join(dir));
        assert!(!shipped.is_empty());
        assert!(
            shipped == in_chart,
            "helm/portcullis/files/{dir} differs from {dir}/: run `rm -r helm/portcullis/files/{dir} && cp -r {dir} helm/portcullis/files/{dir}`"
        );
    }
}

#[test]
fn the_dockerfile_builds_with_the_release_script_and_runs_as_non_root() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    // One instruction per entry, continuation lines joined.
    let mut instructions: Vec<String> = Vec::new();
    let mut continued = false;
    for line in dockerfile.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(body) => (body.trim_end(), true),
            None => (line, false),
        };
        match instructions.last_mut() {
            Some(last) if continued => {
                last.push(' ');
                last.push_str(body);
            }
            _ => instructions.push(body.to_string()),
        }
        continued = continues;
    }
    let froms = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(froms >= 2, "the Dockerfile is not multi-stage");
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("RUN ") && l.contains(" bash scripts/build-release.sh ")),
        "the builder stage must run scripts/build-release.sh, the build the tests exercise"
    );
    let user = instructions
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets no USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("USER is not numeric");
    assert_ne!(uid, 0);
    let chart_uid = render_named("default").pod()["securityContext"]["runAsUser"].as_u64();
    assert_eq!(
        chart_uid,
        Some(u64::from(uid)),
        "the chart's runAsUser differs from the image's USER"
    );
    for shipped in ["COPY schema/", "COPY policies/"] {
        assert!(
            instructions.iter().any(|l| l.starts_with(shipped)),
            "{shipped}"
        );
    }
    // The image's defaults are variables `serve` reads.
    let known = serve_help();
    let vars: Vec<&str> = dockerfile
        .split(|c: char| c.is_whitespace() || c == '=')
        .filter(|w| w.starts_with("PORTCULLIS_"))
        .collect();
    assert!(vars.len() >= 3);
    for var in vars {
        assert!(
            known.contains(var),
            "the Dockerfile sets {var}, which serve does not read"
        );
    }
}
