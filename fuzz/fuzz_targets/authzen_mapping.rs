//! The AuthZEN mapping (`--authzen-mapping`): YAML (mode `0`) or JSON (mode `1`)
//! compiled against the shipped schema, strictly as an operator's file; mode `2`
//! compiles it tolerantly, as the shipped mapping is.
//!
//! Holds: no panic; every problem names the file; the name action search answers
//! for an action is read back as that same action (a PEP may send it unchanged).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::model::source::Mapping as MappingSource;
use portcullis::model::{Mapping, SourceFile};
use portcullis_fuzz::{mode, snapshot};

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = mode(data, 3);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let name = if mode == 1 {
        "authzen.json"
    } else {
        "authzen.yaml"
    };
    let file = SourceFile::new(name, text);
    let source = if mode == 2 {
        MappingSource::Shipped(file)
    } else {
        MappingSource::File(file)
    };
    let schema = &snapshot().schema;
    let mapping = match Mapping::compile(&source, schema) {
        Ok(m) => m,
        Err(problems) => {
            for p in &problems.0 {
                assert_eq!(p.file, name, "{p}");
            }
            return;
        }
    };
    for action in schema.actions() {
        let answered = mapping.authzen_action(action);
        assert_eq!(
            mapping.cedar_action(&answered, schema).as_ref(),
            Some(action),
            "action search answers `{answered}` for `{action}`"
        );
    }
});
