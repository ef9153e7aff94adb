//! What the fuzz targets share: the shipped portal model compiled once, a runtime to
//! drive the library's async entry points, the service parts a call needs, and a
//! helper that splits one input into the parts a target feeds.
//!
//! Nothing here parses what a caller or a file sends: each target hands its input to
//! the library's own entry point, so a fuzzer finding is a finding in Portcullis.
#![allow(clippy::expect_used)] // A harness that cannot set up must stop loudly.

use std::future::Future;
use std::sync::OnceLock;

use portcullis::authzen::{Authzen, Scope};
use portcullis::config::ServeArgs;
use portcullis::decision::Call;
use portcullis::entities::FileSource;
use portcullis::model::{compile, Snapshot, Sources};

/// The shipped portal model with its demo data: schema, policies, links, route table,
/// AuthZEN mapping and entities, as the service serves them by default.
pub fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| compile(&Sources::embedded()).expect("the shipped model compiles"))
}

/// Runs an entry point to its end on a current-thread runtime (the file source never
/// waits, so nothing here blocks on I/O).
pub fn block_on<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime starts");
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

/// The AuthZEN service with its metrics in a registry of its own.
pub fn authzen() -> &'static Authzen {
    static AUTHZEN: OnceLock<Authzen> = OnceLock::new();
    AUTHZEN.get_or_init(|| {
        // A key of this process, as a server without `--page-token-key-file` has: the
        // tokens a target feeds back were issued by this same service.
        let key = portcullis::authzen::token::PageTokenKey::random().expect("a random key");
        Authzen::new(None, key, &prometheus::Registry::new()).expect("AuthZEN metrics register")
    })
}

/// Runs `f` with the AuthZEN scope of one request over the shipped model and its file
/// source, with the service's default batch limit.
pub fn with_scope<R>(f: impl FnOnce(&Scope<'_>) -> R) -> R {
    static BATCH_LIMIT: OnceLock<usize> = OnceLock::new();
    let batch_limit = *BATCH_LIMIT.get_or_init(|| ServeArgs::default().batch_limit);
    let call = Call::unrecorded();
    let scope = Scope {
        az: authzen(),
        snapshot: snapshot(),
        source: &FileSource,
        call: &call,
        batch_limit,
    };
    f(&scope)
}

/// Splits an input into at most `n` parts at each `\n--\n` line (a separator that
/// keeps seeds readable). Missing parts are empty.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(4).position(|w| w == b"\n--\n") {
            Some(at) => {
                out.push(&rest[..at]);
                rest = &rest[at + 4..];
            }
            None => break,
        }
    }
    out.push(rest);
    out.resize(n, &[]);
    out
}

/// The first byte of an input as a choice among `n` modes, and the rest. Seeds start
/// with a digit (`0`, `1`, ...) so that they stay readable.
pub fn mode(data: &[u8], n: u8) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (first.wrapping_sub(b'0') % n, rest),
        None => (0, data),
    }
}
