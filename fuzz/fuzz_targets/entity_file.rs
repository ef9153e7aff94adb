//! The file source's entity data (`--entities`): JSON read and validated against the
//! shipped schema by the model's own reader.
//!
//! Holds: no panic; a problem names the file; data that loads loads again, unchanged,
//! from its own Cedar JSON; the lean reader the file source uses accepts exactly what
//! the whole-set reader accepts.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use portcullis::model::{entity_data, lean_entity_data, EntityData, SourceFile};
use portcullis_fuzz::snapshot;

const NAME: &str = "entities.json";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let snapshot = snapshot();
    let (schema, types) = (&snapshot.schema, &snapshot.types);
    let lean = lean_entity_data(&SourceFile::new(NAME, text), schema, types);
    let entities = match entity_data(&SourceFile::new(NAME, text), schema, types) {
        Ok(e) => e,
        Err(problems) => {
            assert!(lean.is_err(), "the lean reader accepts what Cedar refuses");
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
    let lean = lean.unwrap_or_else(|p| panic!("the lean reader refuses what Cedar accepts: {p:?}"));
    let held = entities
        .iter()
        .filter(|e| e.uid().type_name().basename() != "Action")
        .count();
    assert_eq!(
        lean.len(),
        held,
        "the lean reader holds every entity but actions"
    );
    // The lean data built from parsed entities (the reader's fallback).
    drop(EntityData::new(entities).expect("loaded data writes back"));
});
