//! The load of `scripts/soak.sh`: Cedar-native decisions at a fixed rate over
//! keep-alive connections, with, every sampling interval, the latency percentiles of
//! that interval and the server's resident memory and open file descriptors (read
//! from `/proc/PID`). At the end it compares the first minute with the last.
//!
//! ```text
//! cargo run --release --example soak_load -- ADDR PID RATE SECONDS [INTERVAL_SECS] [CONNECTIONS]
//! ```
//!
//! Latency is measured from the moment a request was due, not from when it was sent,
//! so a server that falls behind shows it (no coordinated omission).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The questions asked in turn: allows and denies of the portal demo, across accounts.
const BODIES: &[&str] = &[
    r#"{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\""}"#,
    r#"{"principal":"Portal::User::\"walt\"","action":"Portal::Action::\"ViewInvoice\"","resource":"Portal::Invoice::\"inv-1001\""}"#,
    r#"{"principal":"Portal::User::\"olivia\"","action":"Portal::Action::\"ManageUsers\"","resource":"Portal::Account::\"acme\""}"#,
    r#"{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"ViewInvoice\"","resource":"Portal::Invoice::\"inv-9001\""}"#,
    r#"{"principal":"Portal::User::\"dev\"","action":"Portal::Action::\"ManageDomain\"","resource":"Portal::Domain::\"globex.example\""}"#,
];

struct Shared {
    latencies_us: Mutex<Vec<u32>>,
    errors: AtomicU64,
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: Option<T>) -> T {
    match args.get(i) {
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("soak_load: argument {}: cannot read `{v}`", i + 1);
            std::process::exit(2)
        }),
        None => default.unwrap_or_else(|| {
            eprintln!("usage: soak_load ADDR PID RATE SECONDS [INTERVAL_SECS] [CONNECTIONS]");
            std::process::exit(2)
        }),
    }
}

/// Resident memory in KiB and open file descriptors of `pid`.
fn process(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn connection(addr: String, per_second: f64, until: Instant, shared: Arc<Shared>, k: usize) {
    let stream = TcpStream::connect(&addr).await.expect("the server accepts");
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = k;
    loop {
        let due = ticks.tick().await;
        if Instant::now() >= until {
            break;
        }
        let body = BODIES[i % BODIES.len()];
        i += 1;
        let req = Request::post("/v1/is_authorized")
            .header("host", addr.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                status.is_success()
            }
            Err(_) => false,
        };
        let took = due.elapsed().as_micros();
        shared
            .latencies_us
            .lock()
            .unwrap()
            .push(u32::try_from(took).unwrap_or(u32::MAX));
        if !ok {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: String = arg(&args, 0, None);
    let pid: u32 = arg(&args, 1, None);
    let rate: f64 = arg(&args, 2, None);
    let seconds: u64 = arg(&args, 3, None);
    let interval: u64 = arg(&args, 4, Some(10));
    let connections: usize = arg(&args, 5, Some(16));

    let shared = Arc::new(Shared {
        latencies_us: Mutex::new(Vec::new()),
        errors: AtomicU64::new(0),
    });
    let until = Instant::now() + Duration::from_secs(seconds);
    let per_connection = rate / connections as f64;
    let tasks: Vec<_> = (0..connections)
        .map(|k| {
            tokio::spawn(connection(
                addr.clone(),
                per_connection,
                until,
                shared.clone(),
                k,
            ))
        })
        .collect();

    println!("t_s\trequests\tp50_us\tp99_us\tmax_us\trss_kib\tfds\terrors");
    let windows_per_minute = (60 / interval.max(1)).max(1) as usize;
    let mut minutes: Vec<(Vec<u32>, u64, usize)> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let start = Instant::now();
    let mut window = 0usize;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        window += 1;
        let mut lat = std::mem::take(&mut *shared.latencies_us.lock().unwrap());
        lat.sort_unstable();
        let (rss, fds) = process(pid);
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            start.elapsed().as_secs(),
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0),
            rss,
            fds,
            shared.errors.load(Ordering::Relaxed)
        );
        current.extend_from_slice(&lat);
        if window.is_multiple_of(windows_per_minute) {
            current.sort_unstable();
            minutes.push((std::mem::take(&mut current), rss, fds));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let (Some(first), Some(last)) = (minutes.first(), minutes.last()) else {
        println!("summary: the run was shorter than a minute");
        return;
    };
    let growth = |a: u64, b: u64| (b as f64 - a as f64) / a.max(1) as f64 * 100.0;
    println!(
        "summary: minute 1 -> minute {}: rss {} -> {} KiB ({:+.1}%), fds {} -> {}, p99 {} -> {} us ({:.2}x), errors {}",
        minutes.len(),
        first.1,
        last.1,
        growth(first.1, last.1),
        first.2,
        last.2,
        percentile(&first.0, 0.99),
        percentile(&last.0, 0.99),
        f64::from(percentile(&last.0, 0.99)) / f64::from(percentile(&first.0, 0.99).max(1)),
        shared.errors.load(Ordering::Relaxed)
    );
}
