//! The file source's entity data (`--entities`): JSON read and validated against the
//! shipped schema by the model's own reader.
//!
//! Holds: no panic; a problem names the file; data that loads loads again, unchanged,
//! from its own Cedar JSON.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use portcullis::model::{entity_data, EntityData, SourceFile};
use portcullis_fuzz::snapshot;

const NAME: &str = "entities.json";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let snapshot = snapshot();
    let (schema, types) = (&snapshot.schema, &snapshot.types);
    let entities = match entity_data(&SourceFile::new(NAME, text), schema, types) {
        Ok(e) => e,
        Err(problems) => {
            assert!(!problems.is_empty(), "a refusal names a problem");
            for problem in problems {
                assert_eq!(problem.file, NAME, "{problem}");
            }
            return;
        }
    };
    let uids = |e: &cedar_policy::Entities| -> BTreeSet<String> {
        e.iter().map(|x| x.uid().to_string()).collect()
    };
    let json = entities.to_json_value().expect("loaded data writes back");
    let again = entity_data(&SourceFile::new(NAME, json.to_string()), schema, types)
        .unwrap_or_else(|p| panic!("data that loaded does not load again: {p:?}"));
    assert_eq!(uids(&entities), uids(&again));
    // The index the file source lists from.
    drop(EntityData::new(entities));
});
