//! Real Redis servers for tests: one server, or a three-master cluster, on free
//! loopback ports, each in its own temporary directory, killed on drop.
//! `scripts/deps/redis.sh` installs `redis-server` and `redis-cli`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

/// A free port whose cluster bus port (+10000) is free too.
fn free_port_with_bus() -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

/// Runs `redis-cli -p PORT args...` and returns its stdout.
pub fn cli(port: u16, args: &[&str]) -> String {
    cli_with(port, &[], args)
}

/// `redis-cli` with connection options (TLS, password) before the command.
pub fn cli_with(port: u16, options: &[String], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(options)
        .args(args)
        .output()
        .expect("redis-cli runs (scripts/deps/redis.sh installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// `redis-cli` options to reach this server (TLS and password), if any.
    cli_options: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a standalone server.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a standalone server with extra `--option value` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(free_port(), extra)
    }

    fn launch(port: u16, extra: &[&str]) -> Self {
        let mut s = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|e| e.to_string()).collect(),
            cli_options: Vec::new(),
            child: None,
        };
        s.spawn();
        s
    }

    /// Starts a server that speaks only TLS, with a certificate signed by a CA made
    /// for it (`openssl` makes both), and requires `password`. Returns the server and
    /// the CA's PEM file.
    pub fn start_tls(password: &str) -> (Self, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(d)
                .args(args)
                .output()
                .expect("openssl runs (scripts/deps/redis.sh installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=portcullis-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let port = free_port();
        let path = |f: &str| d.join(f).display().to_string();
        let extra = [
            "--port".to_string(),
            "0".to_string(),
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".to_string(),
            path("server.pem"),
            "--tls-key-file".to_string(),
            path("server.key"),
            "--tls-ca-cert-file".to_string(),
            path("ca.pem"),
            "--tls-auth-clients".to_string(),
            "no".to_string(),
            "--requirepass".to_string(),
            password.to_string(),
        ];
        let ca = d.join("ca.pem");
        let mut s = Self {
            port,
            dir,
            extra: extra.to_vec(),
            cli_options: vec![
                "--tls".to_string(),
                "--cacert".to_string(),
                ca.display().to_string(),
                "--no-auth-warning".to_string(),
                "-a".to_string(),
                password.to_string(),
            ],
            child: None,
        };
        s.spawn();
        (s, ca)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if self.cli_options.is_empty() {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/deps/redis.sh installs it)");
        self.child = Some(child);
        let (port, options) = (self.port, self.cli_options.clone());
        wait_until("redis-server to answer", Duration::from_secs(10), || {
            (cli_with(port, &options, &["PING"]) == "PONG").then_some(())
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server without closing its connections (SIGSTOP): a hung server, or a
    /// network that silently drops packets.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server runs");
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: `kill` has no memory effects; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Starts a stopped server again on the same port, empty.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli_with(self.port, &self.cli_options, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters and no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::launch(
                    free_port_with_bus(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            wait_until("the cluster to settle", Duration::from_secs(20), || {
                n.cli(&["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
                    .then_some(())
            });
        }
        Self { nodes }
    }

    /// Seed list for `--redis-cluster`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }
}
