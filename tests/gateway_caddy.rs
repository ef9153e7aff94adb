//! End to end with a real Caddy: `forward_auth` in front of a small upstream asks
//! Portcullis about each request, and the portal personas get 200, 403 or 401 as the
//! domain says. Caddy comes from Debian's package (`scripts/deps/caddy.sh`); the site
//! block it runs is the one docs/gateway.md shows, read from the doc.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::jwt::{TestKey, AUDIENCE, ISSUER};
use common::{free_port, TestServer};
use http::StatusCode;
use portcullis::config::{ClientIpFrom, GatewayArgs, ServeArgs};

fn caddy_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("caddy"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin/caddy")])
        .find(|p| p.is_file())
        .expect("caddy is installed (run `bash scripts/deps/caddy.sh`)")
}

/// The Caddy site block of docs/gateway.md: the fenced `caddy` block after the
/// `caddy-site` marker.
fn documented_site() -> String {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/gateway.md"))
            .unwrap();
    let after = doc
        .split_once("<!-- caddy-site")
        .expect("docs/gateway.md marks its Caddy site block")
        .1;
    let block = after
        .split_once("```caddy\n")
        .expect("the marked block is fenced as `caddy`")
        .1;
    block
        .split_once("```")
        .expect("the Caddy block is closed")
        .0
        .to_string()
}

/// A Caddy started by the test, killed when dropped.
struct Caddy {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Caddy {
    /// Starts Caddy with the documented site in front of an upstream (a second site)
    /// that echoes what it was given, on fresh ports again if another process took
    /// the free ports it was given before Caddy bound them.
    fn start(portcullis: SocketAddr) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(portcullis) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("caddy did not start: {last}");
    }

    fn try_start(portcullis: SocketAddr) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let upstream = free_port();
        let site = documented_site();
        for placeholder in ["portal.example", "127.0.0.1:8180", "127.0.0.1:8080"] {
            assert!(
                site.contains(placeholder),
                "the documented site names `{placeholder}`"
            );
        }
        let site = site
            .replace("portal.example", &format!("http://127.0.0.1:{port}"))
            .replace("127.0.0.1:8180", &portcullis.to_string())
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{upstream}"));
        // The upstream echoes the facts it was given, and any X-Portcullis-Route (which
        // Portcullis sends but the documented site does not copy) that got through.
        let echo = "upstream: {method} {uri} as {header.X-Portcullis-Principal} \
                    by {header.X-Portcullis-Policy}{header.X-Portcullis-Route}";
        let config = format!(
            "{{\n\tauto_https off\n\tadmin off\n}}\n\n{site}\n\
             http://127.0.0.1:{upstream} {{\n\trespond \"{echo}\n\" 200\n}}\n"
        );
        let config_path = dir.path().join("Caddyfile");
        std::fs::write(&config_path, &config).unwrap();
        let out = File::create(dir.path().join("caddy.log")).unwrap();
        let child = Command::new(caddy_binary())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--adapter")
            .arg("caddyfile")
            // Caddy keeps state under these; keep it in the test's directory.
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("caddy starts");
        let mut caddy = Caddy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        caddy.wait_until_listening(upstream)?;
        Ok(caddy)
    }

    /// What Caddy wrote to stdout and stderr.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }

    fn wait_until_listening(&mut self, upstream: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        loop {
            if TcpStream::connect(self.addr).is_ok() && TcpStream::connect(upstream).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("caddy exited with {status}:\n{}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "caddy did not listen on {} in time:\n{}",
                    self.addr,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn portal_personas_through_caddy_get_the_domains_answers() {
    let key = TestKey::ed25519("login");
    let keys = tempfile::tempdir().unwrap();
    let pem = keys.path().join("login.pem");
    std::fs::write(&pem, &key.public_pem).unwrap();
    let portcullis = TestServer::start(ServeArgs {
        gateway: GatewayArgs {
            jwt_key_file: Some(pem),
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            client_ip_from: ClientIpFrom::XForwardedFor,
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    let caddy = Caddy::start(portcullis.addr);

    let cases = common::proxy_cases::portal(&key);
    for (story, method, path, token, status, upstream_sees) in &cases {
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![
            // A client can neither name its own principal to the upstream nor slip
            // any other X-Portcullis-* header past Caddy.
            ("x-portcullis-principal", r#"Portal::User::"olivia""#),
            ("x-portcullis-route", " and a forged route"),
            // Nor can it have Portcullis judge another request than the one it makes.
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/accounts/acme/profile"),
        ];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let r = common::send(caddy.addr, method.clone(), path, &headers, Vec::new()).await;
        assert_eq!(
            r.status,
            *status,
            "{story}: {method} {path}: {}\n{}",
            r.text,
            caddy.log()
        );
        if *status == StatusCode::OK {
            let want = format!("upstream: {method} {path} as {upstream_sees}\n");
            assert_eq!(r.text, want, "{story}");
        } else {
            assert!(
                !r.text.starts_with("upstream:"),
                "{story}: the upstream answered: {}",
                r.text
            );
        }
    }
    drop(caddy);
    portcullis.stop().await;
}
