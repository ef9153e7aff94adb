//! A TCP proxy for tests that makes a network path fail silently.
#![allow(clippy::indexing_slicing)] // `buf[..n]` with `n` from `read` into `buf`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A TCP proxy on loopback between Portcullis and Redis that can drop flows the way a
/// NAT or load balancer forgets them: both sockets stay open, and every byte in either
/// direction is thrown away. Connections opened afterwards are forwarded, as through a
/// NAT that has forgotten the old flows.
pub struct Blackhole {
    pub addr: SocketAddr,
    /// Each forwarded flow's port on the Redis side (as `CLIENT LIST` shows it).
    flows: Arc<Mutex<Vec<u16>>>,
    /// The Redis-side ports of the flows being dropped.
    dropped: Arc<Mutex<HashSet<u16>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flows = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(Mutex::new(HashSet::new()));
        let (known, cut) = (flows.clone(), dropped.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let port = server.local_addr().unwrap().port();
                known.lock().unwrap().push(port);
                let (from_client, to_client) = client.into_split();
                let (from_server, to_server) = server.into_split();
                tokio::spawn(Self::pump(from_client, to_server, port, cut.clone()));
                tokio::spawn(Self::pump(from_server, to_client, port, cut.clone()));
            }
        });
        Self {
            addr,
            flows,
            dropped,
            accept,
        }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        port: u16,
        dropped: Arc<Mutex<HashSet<u16>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if dropped.lock().unwrap().contains(&port) {
                continue;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    /// Drops every flow open now, except those whose Redis-side port is in `keep`.
    pub fn drop_open_flows_except(&self, keep: &[u16]) {
        let open = self.flows.lock().unwrap().clone();
        self.dropped
            .lock()
            .unwrap()
            .extend(open.into_iter().filter(|p| !keep.contains(p)));
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
