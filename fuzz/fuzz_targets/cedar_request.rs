//! The Cedar-native request body (`/v1/is_authorized`, mode `0`; and
//! `/v1/batch_is_authorized`, mode `1`): decoded by the listener's JSON decoder, checked
//! against the shipped schema, decided on the demo data.
//!
//! Holds: no panic; a body that does not decode is a 400; a request that does not
//! check is the caller's mistake (a 400 naming the field); the file source never
//! answers "unavailable"; every outcome serializes; the uids read from the body's
//! JSON text are the ones its unescaped strings give; the index's decision (compiled
//! conditions, or Cedar over the candidates) equals Cedar's authorizer over the whole
//! policy set: decision, determining policies and error messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::decision::{self, Call, Outcome, RawRequest};
use portcullis::entities::FileSource;
use portcullis::http::cedar::{BatchRequest, IsAuthorizedRequest, IsAuthorizedResponse};
use portcullis::http::decode_json;
use portcullis::http::error::ApiError;
use portcullis_fuzz::{block_on, mode, snapshot};

fn requests(mode: u8, body: &[u8]) -> Result<Vec<IsAuthorizedRequest<'_>>, ApiError> {
    if mode == 0 {
        return decode_json::<IsAuthorizedRequest>(body).map(|r| vec![r]);
    }
    let batch: BatchRequest = decode_json(body)?;
    // Each item is decoded as the batch handler decodes it; an item that does not
    // decode fails the batch, as it does there.
    batch
        .requests
        .into_iter()
        .map(|item| {
            serde_json::from_str::<IsAuthorizedRequest>(item.get())
                .map_err(|e| portcullis::http::error::json_error(&e))
        })
        .collect()
}

/// The request as the handler read it before uids were read from the JSON text:
/// strings unescaped by serde_json, then `decision::check`.
fn checked_from_strings(
    snapshot: &portcullis::model::Snapshot,
    r: &IsAuthorizedRequest<'_>,
) -> Option<Result<decision::CheckedRequest, decision::RequestError>> {
    let text = |raw: &serde_json::value::RawValue| serde_json::from_str::<String>(raw.get()).ok();
    let raw = RawRequest {
        principal: text(r.principal)?,
        action: text(r.action)?,
        resource: text(r.resource)?,
        context: r.context.clone(),
    };
    Some(decision::check(snapshot, &raw))
}

fuzz_target!(|data: &[u8]| {
    let (mode, body) = mode(data, 2);
    let snapshot = snapshot();
    let requests = match requests(mode, body) {
        Ok(r) => r,
        Err(e) => {
            assert_eq!(e.status, 400, "{e:?}");
            assert!(!e.message.is_empty());
            return;
        }
    };
    for r in requests {
        let before = checked_from_strings(snapshot, &r);
        let checked = match r.check(snapshot) {
            Ok(c) => c,
            Err(api) => {
                assert_eq!(api.status, 400, "{api:?}");
                assert!(api.message.starts_with('`'), "{api:?}");
                // Refused as before: a field that is no string, or the same check.
                if let Some(Ok(c)) = before {
                    panic!("refused now ({api:?}), accepted before: {c:?}");
                }
                continue;
            }
        };
        // Read from the JSON text, the uids are the ones the strings gave.
        match before {
            Some(Ok(c)) => {
                assert_eq!(c.principal(), checked.principal());
                assert_eq!(c.action(), checked.action());
                assert_eq!(c.resource(), checked.resource());
            }
            other => panic!("accepted now ({checked:?}), before: {other:?}"),
        }
        let entities = snapshot
            .entities
            .as_ref()
            .and_then(|d| d.served_whole())
            .expect("the demo data is served whole");
        let full = cedar_policy::Authorizer::new().is_authorized(
            &checked.request,
            &snapshot.policies,
            &entities,
        );
        // Through the table the file source hands out with the data, as decisions do.
        let table = snapshot.entities.as_ref().and_then(|d| d.served_table());
        let data = portcullis::model::entity_table::Lookup::new(&entities, table.as_deref());
        let indexed = snapshot.index.is_authorized(&checked.request, data);
        let reasons = |r: &cedar_policy::Response| {
            let mut ids: Vec<String> = r.diagnostics().reason().map(ToString::to_string).collect();
            ids.sort();
            ids
        };
        let errors = |r: &cedar_policy::Response| {
            r.diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(full.decision(), indexed.decision(), "{:?}", checked.request);
        assert_eq!(reasons(&full), reasons(&indexed), "{:?}", checked.request);
        assert_eq!(errors(&full), errors(&indexed), "{:?}", checked.request);
        let outcome = block_on(decision::decide(
            snapshot,
            &FileSource,
            &Call::unrecorded(),
            &checked,
            &[],
        ));
        assert!(
            !matches!(outcome, Outcome::StoreUnavailable(_)),
            "the file source answered unavailable: {outcome:?}"
        );
        serde_json::to_string(&IsAuthorizedResponse::from(&outcome))
            .expect("an outcome serializes");
    }
});
