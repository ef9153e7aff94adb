#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
//! The service stays reachable under hostile connection load, through the real binary
//! under a lowered open-files limit (`prlimit`, util-linux). The bounds are generous
//! (the machine is shared); the measured times are printed. Timings themselves belong
//! in benchmarks: these tests are about answering at all.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::binary::Served;
use common::{eventually, metric, try_send, DEADLINE};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const DECISION: &str = r#"{"principal":"Portal::User::\"bea\"","action":"Portal::Action::\"PayInvoice\"","resource":"Portal::Invoice::\"inv-1001\""}"#;

/// How a client's connection ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The server closed it, after this long.
    ByServer(Duration),
    /// The client ran out of things to send first.
    ByClient,
}

/// Connects and sends a request head one byte every 200 ms, never finishing it.
async fn trickle(addr: SocketAddr) -> Ended {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Ended::ByServer(started.elapsed());
    };
    let (mut reader, mut writer) = stream.split();
    let send = async {
        let _ = writer
            .write_all(b"POST /v1/is_authorized HTTP/1.1\r\nx-slow: ")
            .await;
        for _ in 0..300 {
            if writer.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = closed => Ended::ByServer(started.elapsed()),
        () = send => Ended::ByClient,
    }
}

/// Connects and sends nothing.
async fn idle(addr: SocketAddr) -> Ended {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Ended::ByServer(started.elapsed());
    };
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
        Ok(_) => Ended::ByServer(started.elapsed()),
        Err(_) => Ended::ByClient,
    }
}

async fn metrics(server: &Served) -> String {
    try_send(server.admin_addr, Method::GET, "/metrics", &[], Vec::new())
        .await
        .map(|r| r.text)
        .unwrap_or_default()
}

/// One decision on a new connection, and how long it took.
async fn decide(addr: SocketAddr) -> (Option<common::Reply>, Duration) {
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        try_send(
            addr,
            Method::POST,
            "/v1/is_authorized",
            &[("content-type", "application/json")],
            DECISION.as_bytes().to_vec(),
        ),
    )
    .await
    .ok()
    .flatten();
    (reply, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_and_trickled_heads_are_cut_off_with_more_connections_than_the_budget() {
    let server = Served::start(
        &["prlimit", "--nofile=1024:1024"],
        &[
            "--max-connections",
            "256",
            "--header-read-timeout-secs",
            "2",
        ],
    );
    let started = Instant::now();
    let mut tricklers = JoinSet::new();
    let mut idlers = JoinSet::new();
    for _ in 0..300 {
        tricklers.spawn(trickle(server.addr));
        idlers.spawn(idle(server.addr));
    }
    eventually(
        "the decision listener is at its budget",
        DEADLINE,
        || async {
            let text = metrics(&server).await;
            (metric(&text, "portcullis_connections_open{listener=\"decision\"}") == Some(256.0))
                .then_some(())
        },
    )
    .await;

    // While the decision listener is full, the admin listener answers within a second.
    for _ in 0..5 {
        let asked = Instant::now();
        let ready = tokio::time::timeout(
            Duration::from_secs(1),
            try_send(server.admin_addr, Method::GET, "/readyz", &[], Vec::new()),
        )
        .await;
        eprintln!(
            "admin /readyz under load: {} ms",
            asked.elapsed().as_millis()
        );
        let ready = ready
            .expect("/readyz answers within a second")
            .expect("the admin listener accepts");
        assert_eq!(ready.status, 200, "{}", ready.text);
    }

    // Every trickling connection is closed by the server, none outlasts its trickle.
    let mut slowest = Duration::ZERO;
    while let Some(ended) = tricklers.join_next().await {
        match ended.unwrap() {
            Ended::ByServer(after) => slowest = slowest.max(after),
            Ended::ByClient => panic!("a trickling connection was never closed"),
        }
    }
    let tricklers_gone = started.elapsed();
    eprintln!(
        "300 trickling connections closed by the server within {} ms (slowest {} ms)",
        tricklers_gone.as_millis(),
        slowest.as_millis()
    );
    assert!(
        tricklers_gone < Duration::from_secs(45),
        "{tricklers_gone:?}"
    );

    // Once they are gone, a decision answers at once.
    let (reply, took) = decide(server.addr).await;
    eprintln!("decision after the trickle: {} ms", took.as_millis());
    let reply = reply.expect("a decision is answered");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["decision"], "Allow", "{}", reply.text);
    assert!(took < Duration::from_secs(2), "{took:?}");

    let text = metrics(&server).await;
    let cut = metric(
        &text,
        "portcullis_connections_closed_total{listener=\"decision\",reason=\"header_timeout\"}",
    )
    .unwrap_or(0.0);
    eprintln!("closed by the header timeout: {cut}");
    assert!(cut >= 300.0, "{cut}");
    // The idle ones never sent a head either and go the same way; they are not waited
    // for: on a loaded machine a few never leave the kernel's handshake queue within
    // the test, which is not the service's doing.
    idlers.abort_all();
}

/// CPU time (user and system) of a process so far, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    // 64 descriptors and a budget far above them: accepting fails with "too many open
    // files" once the held connections use them up.
    let server = Served::start(
        &["prlimit", "--nofile=64:64"],
        &["--header-read-timeout-secs", "3"],
    );
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    eventually(
        "accepting fails for want of descriptors",
        DEADLINE,
        || async { server.logged("Too many open files").then_some(()) },
    )
    .await;
    let before = cpu_time(server.child.id());
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let burnt = cpu_time(server.child.id()) - before;
    eprintln!(
        "CPU used in {} ms out of descriptors: {} ms",
        measured.elapsed().as_millis(),
        burnt.as_millis()
    );
    assert!(
        burnt < Duration::from_millis(500),
        "the accept loop spins: {burnt:?}"
    );
    // The header timeout frees the descriptors; the service answers again by itself.
    drop(held);
    let recovered = Instant::now();
    let reply = eventually("a decision is answered again", DEADLINE, || async {
        decide(server.addr).await.0.filter(|r| r.status == 200)
    })
    .await;
    eprintln!(
        "answering again {} ms after the clients left",
        recovered.elapsed().as_millis()
    );
    assert_eq!(reply.json["decision"], "Allow", "{}", reply.text);
}
