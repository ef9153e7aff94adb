//! The gateway route table (`--routes`, `policies/routes.yaml`): YAML compiled
//! against the shipped schema by the model's own compiler.
//!
//! Holds: no panic; every problem names the file; every route of a table that
//! compiles is matched by a path built from it (the table read backwards), and that
//! path builds its resource.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::model::routes::compile;
use portcullis::model::SourceFile;
use portcullis_fuzz::snapshot;

const NAME: &str = "routes.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let table = match compile(&SourceFile::new(NAME, text), &snapshot().schema) {
        Ok(t) => t,
        Err(problems) => {
            for p in &problems.0 {
                assert_eq!(p.file, NAME, "{p}");
            }
            return;
        }
    };
    for route in table.routes() {
        let path = route.path_with(|var| format!("{var}-1"));
        let found = table.find(route.method(), &path).unwrap_or_else(|| {
            panic!("`{path}`, built from `{}`, matches nothing", route.template)
        });
        assert!(
            found.resource().is_some(),
            "`{path}` matched `{}` but builds no resource",
            found.route.template
        );
    }
});
