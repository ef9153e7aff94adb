//! What a policy reload costs once the watcher has fired: reading the portal model's
//! files, compiling and strictly validating them, and swapping the snapshot in.
//! Together with the debounce interval this is the time from an edit to its effect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::config::{ModelArgs, ServeArgs};
use portcullis::entities::SourceGate;
use portcullis::http::App;
use portcullis::model::{load, EntityFile, ReloadOutcome, Trigger};

/// The shipped model copied into a temporary directory, as `serve` would read it.
fn model_in(dir: &Path) -> ModelArgs {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(
        root.join("schema/portal.cedarschema"),
        dir.join("portal.cedarschema"),
    )
    .unwrap();
    for entry in std::fs::read_dir(root.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
    }
    ModelArgs {
        schema: Some(dir.join("portal.cedarschema")),
        template_links: Some(policies.join("links.json")),
        policies: Some(policies),
        ..ModelArgs::default()
    }
}

fn bench_reload(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let model = model_in(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = Arc::new(
        App::build(&ServeArgs {
            model: model.clone(),
            ..ServeArgs::default()
        })
        .unwrap(),
    );
    let extra = model.policies.clone().unwrap().join("extra.cedar");

    c.bench_function("read_and_compile_portal_model", |b| {
        b.iter(|| load(&model, &EntityFile::Shipped).unwrap())
    });

    // Each iteration edits one policy file, so every reload applies a new snapshot.
    let gate = SourceGate(app.entities.clone());
    let mut n = 0u64;
    c.bench_function("reload_applies_an_edit", |b| {
        b.iter(|| {
            n += 1;
            std::fs::write(
                &extra,
                format!(
                    "@id(\"extra-{n}\")\nforbid (principal, action, resource) when {{ false }};\n"
                ),
            )
            .unwrap();
            let outcome = runtime.block_on(app.model.reload(Trigger::Manual, &gate));
            assert!(
                matches!(outcome, ReloadOutcome::Applied { .. }),
                "{outcome:?}"
            );
        })
    });
}

criterion_group!(benches, bench_reload);
criterion_main!(benches);
