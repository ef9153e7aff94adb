#![allow(clippy::indexing_slicing)] // test code: a missing field is a failed test
//! The real `portcullis serve` binary in its own process, for tests that need what an
//! in-process server cannot give: a lowered open-files limit, or a tool (schemathesis)
//! that talks to it from outside.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A running `portcullis serve` on loopback ports, killed when dropped.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Every line the server logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// Starts `portcullis serve` with `args` on free loopback ports, run through
    /// `wrapper` (e.g. `prlimit --nofile=1024 --`) when one is given, and waits for
    /// its start-up line.
    pub fn start(wrapper: &[&str], args: &[&str]) -> Self {
        let bin = env!("CARGO_BIN_EXE_portcullis");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // The log is read on a thread for the whole run, so the server never blocks on
        // a full pipe; the start-up line is handed back.
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let logged = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                logged.lock().unwrap().push(line.clone());
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "portcullis serving" {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        let started = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("portcullis serve prints its start-up line");
        let addr = started["listen"].as_str().unwrap().parse().unwrap();
        let admin_addr = started["admin_listen"].as_str().unwrap().parse().unwrap();
        Self {
            child,
            addr,
            admin_addr,
            log,
        }
    }
}

impl Served {
    /// Whether a logged line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
