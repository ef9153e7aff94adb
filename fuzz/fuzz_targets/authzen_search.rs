//! AuthZEN subject (mode `0`), resource (mode `1`) and action (mode `2`) search: the
//! body read by the spec's wire reader and searched on the demo data.
//!
//! Holds: no panic; every error is the caller's (a 400); a page's `count` is its
//! number of results; a `next_token` the PDP issued is accepted when sent back with
//! the same request (the spec's paging contract).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::authzen::search;
use portcullis::authzen::wire::{self, Search, SearchKind, SearchOut};
use portcullis::authzen::{AuthzenError, Scope};
use portcullis::http::decode_json;
use portcullis::http::error::ApiError;
use portcullis_fuzz::{block_on, mode, with_scope};
use serde_json::Value;

async fn run(
    scope: &Scope<'_>,
    s: &Search,
    kind: SearchKind,
    body: &Value,
) -> Result<SearchOut, AuthzenError> {
    match kind {
        SearchKind::Action => search::actions(scope, s, body).await,
        _ => search::entities(scope, s, kind, body).await,
    }
}

/// `body` with `page.token` set to `token`, as a PEP asks for the next page.
fn next_page(body: &Value, token: &str) -> Value {
    let mut next = body.clone();
    if let Some(o) = next.as_object_mut() {
        let page = o
            .entry("page")
            .or_insert_with(|| Value::Object(Default::default()));
        if page.is_null() {
            *page = Value::Object(Default::default());
        }
        if let Some(p) = page.as_object_mut() {
            p.insert("token".into(), Value::String(token.to_string()));
        }
    }
    next
}

fuzz_target!(|data: &[u8]| {
    let (mode, body) = mode(data, 3);
    let kind = [
        SearchKind::Subject,
        SearchKind::Resource,
        SearchKind::Action,
    ][usize::from(mode)];
    let Ok(body) = decode_json::<Value>(body) else {
        return;
    };
    with_scope(|scope| {
        block_on(async {
            let s = match wire::search(&body, kind) {
                Ok(s) => s,
                Err(e) => {
                    let api = ApiError::from(AuthzenError::from(e));
                    assert_eq!(api.status, 400, "{api:?}");
                    return;
                }
            };
            let out = match run(scope, &s, kind, &body).await {
                Ok(out) => out,
                Err(e) => {
                    let api = ApiError::from(&e);
                    assert_eq!(api.status, 400, "{e:?}");
                    return;
                }
            };
            // `page` is left out when the answer is the whole result set.
            let Some(page) = &out.page else {
                return;
            };
            assert_eq!(page.count, out.results.len());
            if page.next_token.is_empty() {
                return;
            }
            let next = next_page(&body, &page.next_token);
            let s = wire::search(&next, kind).expect("the next page's request reads");
            if let Err(e) = run(scope, &s, kind, &next).await {
                panic!("the PDP's own next_token was refused: {e:?} ({next})");
            }
        })
    });
});
