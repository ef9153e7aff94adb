//! AuthZEN access evaluation (`/access/v1/evaluation`, mode `0`) and evaluations
//! (`/access/v1/evaluations`, mode `1`): the body read by the spec's wire readers,
//! mapped through the shipped mapping and decided on the demo data.
//!
//! Holds: no panic; every error is the caller's (a 400, never a 5xx: the file source
//! cannot be unavailable); a failed item of a batch names its place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::authzen::{self, wire, AuthzenError, Evaluations};
use portcullis::http::decode_json;
use portcullis::http::error::ApiError;
use portcullis_fuzz::{block_on, mode, with_scope};
use serde_json::Value;

fn callers_mistake(e: &AuthzenError) {
    let api = ApiError::from(e);
    assert_eq!(api.status, 400, "{e:?}");
    assert!(!api.message.is_empty(), "{e:?}");
}

fuzz_target!(|data: &[u8]| {
    let (mode, body) = mode(data, 2);
    let Ok(body) = decode_json::<Value>(body) else {
        return;
    };
    with_scope(|scope| {
        block_on(async {
            if mode == 0 {
                match wire::evaluation(&body) {
                    Err(e) => callers_mistake(&AuthzenError::from(e)),
                    Ok(e) => {
                        if let Err(e) = authzen::evaluate(scope, &e, false).await {
                            callers_mistake(&e);
                        }
                    }
                }
                return;
            }
            let request = match wire::evaluations(&body) {
                Err(e) => return callers_mistake(&AuthzenError::from(e)),
                Ok(r) => r,
            };
            match authzen::evaluations(scope, request, false).await {
                Err(e) => callers_mistake(&e),
                Ok(Evaluations::Single(_)) => {}
                Ok(Evaluations::Batch(items)) => {
                    for item in items {
                        if let Err((e, message)) = item.answer {
                            callers_mistake(&e);
                            assert!(message.contains("evaluations["), "{message}");
                        }
                    }
                }
            }
        })
    });
});
