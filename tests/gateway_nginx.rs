//! End to end with a real nginx: `auth_request` in front of a small upstream asks
//! Portcullis about each request, and the portal personas get 200, 403 or 401 as the
//! domain says. nginx comes from Debian's package (`scripts/deps/nginx.sh`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::jwt::{claims, TestKey, AUDIENCE, ISSUER};
use common::{free_port, TestServer};
use http::StatusCode;
use portcullis::config::{GatewayArgs, ServeArgs};

fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .expect("nginx is installed (run `bash scripts/deps/nginx.sh`)")
}

/// An nginx started by the test, killed when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// Asks the master to stop (SIGTERM makes it stop its workers too; a SIGKILL would
    /// leave them running), then waits for it, killing it if it does not exit in time.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx with `auth_request` to Portcullis at `portcullis` in front of an
    /// upstream (a second server block) that echoes what it was given.
    /// Starts nginx, on fresh ports again if another process took the free ports it
    /// was given before nginx bound them.
    fn start(portcullis: SocketAddr) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(portcullis) {
                Ok(n) => return n,
                Err(e) => last = e,
            }
        }
        panic!("nginx did not start: {last}");
    }

    fn try_start(portcullis: SocketAddr) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        // Workers may run as an unprivileged user when the test runs as root; they
        // must be able to reach the prefix.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port = free_port();
        let upstream = free_port();
        let p = dir.path().display().to_string();
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let user = if is_root { "user nobody nogroup;" } else { "" };
        let conf = format!(
            r#"
{user}
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {p}/access.log;
  client_body_temp_path {p}/body;
  proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fastcgi;
  uwsgi_temp_path {p}/uwsgi;
  scgi_temp_path {p}/scgi;

  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_portcullis;
      # Pass the decision's facts upstream; replace anything the client sent.
      auth_request_set $pc_principal $upstream_http_x_portcullis_principal;
      auth_request_set $pc_policy $upstream_http_x_portcullis_policy;
      proxy_set_header X-Portcullis-Principal $pc_principal;
      proxy_set_header X-Portcullis-Policy $pc_policy;
      # Every other X-Portcullis-* header a client may send is cleared (an empty value
      # drops it): the upstream trusts this prefix.
      proxy_set_header X-Portcullis-Route "";
      proxy_pass http://127.0.0.1:{upstream};
    }}
    location = /_portcullis {{
      internal;
      proxy_pass http://{portcullis}/forward-auth/nginx;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Real-IP $remote_addr;
    }}
  }}

  server {{
    listen 127.0.0.1:{upstream};
    location / {{
      default_type text/plain;
      return 200 "upstream: $request_method $request_uri as $http_x_portcullis_principal by $http_x_portcullis_policy$http_x_portcullis_route\n";
    }}
  }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Nginx {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        nginx.wait_until_listening()?;
        Ok(nginx)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn wait_until_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nginx exited with {status}:\n{}", self.error_log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen on {} in time:\n{}",
                    self.addr,
                    self.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn portal_personas_through_nginx_get_the_domains_answers() {
    let key = TestKey::ed25519("login");
    let keys = tempfile::tempdir().unwrap();
    let pem = keys.path().join("login.pem");
    std::fs::write(&pem, &key.public_pem).unwrap();
    let portcullis = TestServer::start(ServeArgs {
        gateway: GatewayArgs {
            jwt_key_file: Some(pem),
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            client_ip_from: portcullis::config::ClientIpFrom::XRealIp,
            ..GatewayArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    let nginx = Nginx::start(portcullis.addr);

    let cases = common::proxy_cases::portal(&key);
    let olivia = key.sign(&claims("olivia"));
    for (story, method, path, token, status, upstream_sees) in &cases {
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = vec![
            // A client cannot name its own principal, policy or route to the upstream.
            ("x-portcullis-principal", r#"Portal::User::"olivia""#),
            ("x-portcullis-policy", "forged-policy"),
            ("x-portcullis-route", " via forged route"),
        ];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let r = common::send(nginx.addr, method.clone(), path, &headers, Vec::new()).await;
        assert_eq!(
            r.status,
            *status,
            "{story}: {method} {path}: {}\n{}",
            r.text,
            nginx.error_log()
        );
        if *status == StatusCode::OK {
            let want = format!("upstream: {method} {path} as {upstream_sees}\n");
            assert_eq!(r.text, want, "{story}");
        }
    }

    // A raw non-ASCII path reaches Portcullis as bytes that are not header text: it is
    // a path no route matches, so a 403 nginx passes on, not a 400 it turns into 500.
    let raw = raw_request(
        nginx.addr,
        format!(
            "GET /accounts/\u{e1}cme/profile HTTP/1.1\r\nHost: portal\r\nAuthorization: Bearer {olivia}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(
        raw.starts_with("HTTP/1.1 403"),
        "{raw}\n{}",
        nginx.error_log()
    );
    drop(nginx);
    portcullis.stop().await;
}

/// Sends bytes as they are (the test client refuses a non-ASCII path) and reads the
/// whole answer, without blocking the runtime the in-process server runs on.
async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(common::DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("nginx answers")
        .unwrap();
    String::from_utf8_lossy(&answer).to_string()
}
