//! Search page tokens, through the searches' public entry points (the token's own
//! encoding is private, and may change: whatever it becomes, a token is only ever read
//! here). Each search is a fixed, valid request of the demo data; only `page.token`
//! varies. Mode `0`: the input is the token. Mode `1`: the input edits a token the PDP
//! issued (its first byte picks where, the rest overwrites). Mode `2`: the input is
//! appended to an issued token. The search is subject (even second byte) or action
//! search (odd).
//!
//! Holds: no panic; a token is either accepted or refused as `invalid_page_token`,
//! never another error; an issued token is accepted unchanged.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::authzen::search;
use portcullis::authzen::wire::{self, SearchKind, SearchOut};
use portcullis::authzen::AuthzenError;
use portcullis_fuzz::{block_on, mode, with_scope};
use serde_json::{json, Value};

/// A subject search (who may view invoice inv-1001?) and an action search (what may
/// bea do on it?), one result a page so that the demo data has a second page.
fn request(kind: SearchKind, token: Option<&str>) -> Value {
    let mut body = match kind {
        SearchKind::Action => json!({
            "subject": {"type": "user", "id": "bea"},
            "resource": {"type": "invoice", "id": "inv-1001"},
            "page": {"limit": 1}
        }),
        _ => json!({
            "subject": {"type": "user"},
            "action": {"name": "ViewInvoice"},
            "resource": {"type": "invoice", "id": "inv-1001"},
            "page": {"limit": 1}
        }),
    };
    if let Some(t) = token {
        body["page"]["token"] = Value::String(t.to_string());
    }
    body
}

fn run(kind: SearchKind, token: Option<&str>) -> Result<SearchOut, AuthzenError> {
    let body = request(kind, token);
    let s = wire::search(&body, kind).expect("the fixed search request reads");
    with_scope(|scope| {
        block_on(async {
            match kind {
                SearchKind::Action => search::actions(scope, &s, &body).await,
                _ => search::entities(scope, &s, kind, &body).await,
            }
        })
    })
}

/// The token the PDP answers the first page with.
fn issued(kind: SearchKind) -> &'static str {
    static SUBJECT: OnceLock<String> = OnceLock::new();
    static ACTION: OnceLock<String> = OnceLock::new();
    let cell = if kind == SearchKind::Action {
        &ACTION
    } else {
        &SUBJECT
    };
    cell.get_or_init(|| {
        let first = run(kind, None).expect("the first page is answered");
        let page = first.page.expect("a partial answer carries its page");
        assert!(
            !page.next_token.is_empty(),
            "the demo data has a second page"
        );
        page.next_token
    })
}

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = mode(data, 3);
    let (kind, rest) = match rest.split_first() {
        Some((b, r)) if b % 2 == 1 => (SearchKind::Action, r),
        Some((_, r)) => (SearchKind::Subject, r),
        None => (SearchKind::Subject, rest),
    };
    let input = String::from_utf8_lossy(rest);
    let token = match mode {
        0 => input.into_owned(),
        1 => {
            let issued = issued(kind);
            let at = rest.first().map_or(0, |b| usize::from(*b)) % issued.len().max(1);
            let edit = String::from_utf8_lossy(rest.get(1..).unwrap_or_default());
            let mut t: String = issued.chars().take(at).collect();
            t.push_str(&edit);
            t.extend(issued.chars().skip(at + edit.chars().count()));
            t
        }
        _ => format!("{}{input}", issued(kind)),
    };
    match run(kind, Some(&token)) {
        // A request with a token always gets a page back.
        Ok(out) => assert_eq!(
            out.page.expect("a page").count,
            out.results.len()
        ),
        Err(AuthzenError::InvalidPageToken { .. }) => {
            assert_ne!(token, issued(kind), "an issued token was refused");
        }
        Err(e) => panic!("token `{token}` gave {e:?}, not `invalid_page_token`"),
    }
});
