//! The two listeners and the life of a connection: accepting within a budget, and
//! closing a connection that holds resources without using them.
//!
//! - The decision listener serves at most `--max-connections` at once and the admin
//!   listener its own small budget, so probes and scrapes answer while the decision
//!   listener is full. At the limit the accept loop stops accepting: new connections
//!   wait in the kernel's queue and open ones keep being served.
//! - Every connection is watched by [`Activity`]: its request head must arrive within
//!   the header timeout, and with nothing in flight it may stay idle for the idle
//!   timeout. hyper's own header timer restarts the moment a response is written, so it
//!   cannot tell a slow head from a kept-alive connection waiting for its next request;
//!   the watchdog tells them apart from the bytes and the requests the connection saw.
//!   The body timeout is enforced where bodies are read ([`super::read_json`]); HTTP/2
//!   keep-alive pings are hyper's, on the timer given to the builder.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::App;
use crate::config::ListenerArgs;

/// The decision listener and the admin listener, bound by the caller (so tests can bind
/// `127.0.0.1:0`).
pub struct Listeners {
    pub decision: TcpListener,
    pub admin: TcpListener,
}

/// Which listener a connection came in on; it picks the routing table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Decision,
    Admin,
}

impl Role {
    /// The `listener` label of the connection metrics.
    pub fn label(self) -> &'static str {
        match self {
            Role::Decision => "decision",
            Role::Admin => "admin",
        }
    }
}

/// The connection budgets and timeouts, from `ListenerArgs`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    pub max_connections: u32,
    pub admin_max_connections: u32,
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
}

impl From<&ListenerArgs> for ConnectionSettings {
    fn from(a: &ListenerArgs) -> Self {
        Self {
            max_connections: a.max_connections,
            admin_max_connections: a.admin_max_connections,
            header_read: Duration::from_secs(a.header_read_timeout_secs),
            body_read: Duration::from_secs(a.body_read_timeout_secs),
            idle: Duration::from_secs(a.idle_timeout_secs),
            http2_keepalive_interval: Duration::from_secs(a.http2_keepalive_interval_secs),
            http2_keepalive_timeout: Duration::from_secs(a.http2_keepalive_timeout_secs),
            http2_max_concurrent_streams: a.http2_max_concurrent_streams,
        }
    }
}

/// Why a connection was closed; set by a handler on its response (a response
/// extension, never sent) when the connection must not be reused.
#[derive(Debug, Clone, Copy)]
pub struct CloseReason(pub &'static str);

/// Serves both listeners until `shutdown` completes, then stops accepting and gives
/// open connections `grace` to finish before returning.
pub async fn serve(
    listeners: Listeners,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let settings = app.connections;
    // `None` while serving; the drain's deadline once shutdown began. Every connection
    // task watches it.
    let (stop_tx, stop_rx) = watch::channel(None::<Instant>);
    let decision = Arc::new(Semaphore::new(settings.max_connections as usize));
    let admin = Arc::new(Semaphore::new(settings.admin_max_connections as usize));
    let builder = builder(&settings);
    let accepting = Accepting {
        app: &app,
        builder: &builder,
        stop: &stop_rx,
    };
    tokio::select! {
        () = accepting.run(listeners.decision, Role::Decision, decision.clone()) => {}
        () = accepting.run(listeners.admin, Role::Admin, admin.clone()) => {}
        () = shutdown => {}
    }
    // The listeners were moved into the accept loops, dropped with them: no new
    // connection is accepted from here on.
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining connections"
    );
    let _ = stop_tx.send(Some(Instant::now() + grace));
    // Every open connection holds a permit, so holding them all means all are closed.
    let drained = async {
        let _d = decision.acquire_many(settings.max_connections).await;
        let _a = admin.acquire_many(settings.admin_max_connections).await;
    };
    // The connections close themselves at the deadline; the margin covers the last
    // one's task noticing it.
    match tokio::time::timeout(grace + Duration::from_secs(1), drained).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    Ok(())
}

/// The HTTP/1 and HTTP/2 connection settings shared by every connection.
fn builder(s: &ConnectionSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The watchdog below reads request heads against the header timeout; hyper's own
    // header timer (on by default once a timer is set) would also close kept-alive
    // connections between requests, so it is off.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(s.http2_keepalive_interval))
        .keep_alive_timeout(s.http2_keepalive_timeout)
        .max_concurrent_streams(s.http2_max_concurrent_streams);
    builder
}

/// What the accept loops share.
struct Accepting<'a> {
    app: &'a Arc<App>,
    builder: &'a auto::Builder<TokioExecutor>,
    stop: &'a watch::Receiver<Option<Instant>>,
}

/// Accept errors (too many open files, a connection reset before it was accepted) are
/// transient: the loop backs off, doubling up to this, instead of spinning on them.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

impl Accepting<'_> {
    /// Accepts connections while the budget allows, forever.
    async fn run(&self, listener: TcpListener, role: Role, budget: Arc<Semaphore>) {
        let mut backoff = Duration::from_millis(5);
        loop {
            // At the limit, wait here: the kernel queues new connections meanwhile.
            let Ok(permit) = budget.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    backoff = Duration::from_millis(5);
                    self.accepted(stream, role, permit);
                }
                Err(e) => {
                    tracing::warn!(error = %e, listener = role.label(), "accept failed");
                    drop(permit);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }

    fn accepted(&self, stream: TcpStream, role: Role, permit: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let open = Open::new(self.app, role, permit);
        let app = self.app.clone();
        let stop = self.stop.clone();
        // The admin listener is plain HTTP: the kubelet's probes carry no client
        // certificate, and its address is meant for the pod's network only.
        let tls = match role {
            Role::Decision => app.tls.clone(),
            Role::Admin => None,
        };
        match tls {
            None => spawn_connection(self.builder, open, stream, app, stop),
            Some(tls) => {
                let builder = self.builder.clone();
                let handshake = app.connections.header_read;
                // The handshake runs in its own task so that a slow or silent client
                // cannot hold up the accept loop; it counts against the header timeout.
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake, tls.acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => spawn_connection(&builder, open, stream, app, stop),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            open.closed("error");
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            open.closed("header_timeout");
                        }
                    }
                });
            }
        }
    }
}

/// An open connection: its place in the budget and in the metrics, given back when it
/// is dropped.
struct Open {
    app: Arc<App>,
    role: Role,
    accepted: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Open {
    fn new(app: &Arc<App>, role: Role, permit: OwnedSemaphorePermit) -> Self {
        app.metrics
            .connections_open
            .with_label_values(&[role.label()])
            .inc();
        Self {
            app: app.clone(),
            role,
            accepted: Instant::now(),
            _permit: permit,
        }
    }

    fn closed(self, reason: &'static str) {
        self.app
            .metrics
            .connections_closed
            .with_label_values(&[self.role.label(), reason])
            .inc();
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.app
            .metrics
            .connections_open
            .with_label_values(&[self.role.label()])
            .dec();
    }
}

/// Serves one accepted connection (plain or TLS) in its own task, under the
/// watchdog, until it ends or is closed.
fn spawn_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    open: Open,
    io: I,
    app: Arc<App>,
    stop: watch::Receiver<Option<Instant>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(open.accepted));
    let role = open.role;
    let io = Watched {
        inner: io,
        activity: activity.clone(),
    };
    let seen = activity.clone();
    let service = service_fn(move |req| {
        let request = seen.begin(&req);
        let app = app.clone();
        let seen = seen.clone();
        async move {
            let response = super::dispatch(app, role, req).await;
            if let Ok(r) = &response {
                if let Some(CloseReason(reason)) = r.extensions().get::<CloseReason>() {
                    let _ = seen.close_reason.set(reason);
                }
            }
            // The request stays in flight until its body was written: a gRPC stream's
            // body (a health `Watch`) lasts as long as the stream, and an HTTP/2
            // connection with a stream open is not idle.
            response.map(|r| {
                r.map(|body| Tracked {
                    inner: body,
                    _request: request,
                })
            })
        }
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    let timeouts = open.app.connections;
    tokio::spawn(async move {
        let reason = watch_connection(conn, &activity, &timeouts, stop).await;
        open.closed(reason);
    });
}

/// Drives `conn` to its end, closing it when a timeout or the drain says so. Returns
/// why it ended, for the metrics.
async fn watch_connection<C>(
    conn: C,
    activity: &Activity,
    t: &ConnectionSettings,
    mut stop: watch::Receiver<Option<Instant>>,
) -> &'static str
where
    C: GracefulConnection<Error = Box<dyn StdError + Send + Sync>>,
{
    tokio::pin!(conn);
    // Once a graceful close began: why, and when to give up waiting for it.
    let mut closing: Option<(&'static str, Instant)> = None;
    let mut stopping = stop.borrow().is_some();
    if let Some(deadline) = *stop.borrow() {
        conn.as_mut().graceful_shutdown();
        closing = Some(("shutdown", deadline));
    }
    loop {
        let now = Instant::now();
        let mut wake = activity.next_check(t, now, closing.is_none());
        if let Some((_, deadline)) = closing {
            wake = wake.min(deadline);
        }
        tokio::select! {
            result = conn.as_mut() => {
                if let Some((reason, _)) = closing {
                    return reason;
                }
                return match result {
                    Ok(()) => activity.close_reason.get().copied().unwrap_or("closed"),
                    Err(e) => {
                        let chain = crate::error_chain(e.as_ref());
                        tracing::debug!(error = %chain, "connection closed with error");
                        // hyper's ping timeout has no type of its own to match on.
                        if chain.contains("keep-alive timed out") {
                            "keepalive_timeout"
                        } else {
                            "error"
                        }
                    }
                };
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                let deadline = match changed {
                    Ok(()) => *stop.borrow(),
                    // The server is gone: close at once.
                    Err(_) => Some(Instant::now()),
                };
                if let Some(deadline) = deadline {
                    if closing.is_none() {
                        conn.as_mut().graceful_shutdown();
                    }
                    let reason = closing.map_or("shutdown", |(r, _)| r);
                    closing = Some((reason, closing.map_or(deadline, |(_, d)| d.min(deadline))));
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if let Some((reason, deadline)) = closing {
                    if now >= deadline {
                        // The graceful close did not finish in time: drop it.
                        return reason;
                    }
                }
                match activity.expired(t, now) {
                    // A half-read head has no graceful end (hyper would keep reading
                    // it), so the connection is dropped.
                    Some(Expired::Header) => return "header_timeout",
                    Some(Expired::Idle) if closing.is_none() => {
                        conn.as_mut().graceful_shutdown();
                        // A peer that does not let go (an HTTP/2 client ignoring
                        // GOAWAY) is dropped after another header timeout.
                        closing = Some(("idle_timeout", now + t.header_read));
                    }
                    Some(Expired::Idle) | None => {}
                }
            }
        }
    }
}

/// Milliseconds since the connection was accepted; `NONE` for "not now".
const NONE: u64 = u64::MAX;

/// What a connection is doing, from its bytes and its requests: written by the IO
/// wrapper and the service, read by the watchdog. Atomics, so the request path takes
/// no lock.
struct Activity {
    accepted: Instant,
    /// Requests being handled.
    in_flight: AtomicU32,
    /// Since when a request head has been arriving (the accept for the first request,
    /// the first byte after an idle period for later ones); `NONE` when no head is.
    head_since: AtomicU64,
    /// Since when nothing has been in flight.
    idle_since: AtomicU64,
    /// Set by the first HTTP/2 request: HTTP/2 frames (pings, window updates) arrive
    /// between requests, so bytes no longer mean a head is arriving.
    http2: AtomicBool,
    /// Why a handler asked to close the connection, if one did.
    close_reason: OnceLock<&'static str>,
}

enum Expired {
    Header,
    Idle,
}

/// Marks one request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle_since.store(a.now_ms(), Ordering::Release);
        }
    }
}

impl Activity {
    fn new(accepted: Instant) -> Self {
        Self {
            accepted,
            in_flight: AtomicU32::new(0),
            // A new connection owes its first head from the moment it was accepted.
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            close_reason: OnceLock::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    /// Bytes arrived: with nothing in flight on HTTP/1, a request head has begun.
    fn read(&self) {
        if !self.http2.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_since.compare_exchange(
                NONE,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// A request's head was read: it is in flight until the returned guard drops.
    fn begin<B>(self: &Arc<Self>, req: &http::Request<B>) -> InFlight {
        if req.version() == http::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Release);
        InFlight(self.clone())
    }

    /// Which timeout has run out at `now`, if any.
    fn expired(&self, t: &ConnectionSettings, now: Instant) -> Option<Expired> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head != NONE && !self.http2.load(Ordering::Relaxed) {
            return (now >= self.at(head) + t.header_read).then_some(Expired::Header);
        }
        let idle = self.idle_since.load(Ordering::Acquire);
        (now >= self.at(idle) + t.idle).then_some(Expired::Idle)
    }

    /// When the watchdog looks again. Never later than one header timeout from `now`,
    /// so a head that starts while it sleeps is still caught on time.
    fn next_check(&self, t: &ConnectionSettings, now: Instant, idle: bool) -> Instant {
        let soon = now + t.header_read;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return soon;
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head != NONE && !self.http2.load(Ordering::Relaxed) {
            return self.at(head) + t.header_read;
        }
        if idle {
            let idle_at = self.at(self.idle_since.load(Ordering::Acquire)) + t.idle;
            return idle_at.min(soon);
        }
        soon
    }
}

/// A response body that holds its request in flight until it is dropped.
struct Tracked<B> {
    inner: B,
    _request: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's IO, telling [`Activity`] when bytes arrive.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
