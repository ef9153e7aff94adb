//! The `portcullis verify` command: loads the model, the invariants and the old
//! policies, runs the checks and prints the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{ModelArgs, ReportFormat, VerifyArgs};
use crate::model::{self, EntityFile, Snapshot, SourceFile, Sources};

use super::invariants::{self, Invariant};
use super::report;

/// Runs the command; `Err` carries a message for a setup problem (exit status 2).
pub async fn run(args: &VerifyArgs) -> Result<ExitCode, String> {
    let snapshot = model::load(&args.model, &EntityFile::External).map_err(|e| e.to_string())?;
    let invariants = load_invariants(args, &snapshot)?;
    let old = match &args.against {
        Some(dir) => Some(load_old(&args.model, dir)?),
        None => None,
    };
    let against = args
        .against
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let outcome = super::run(
        &snapshot,
        &invariants,
        old.as_ref().map(|o| (o, against.as_str())),
    )
    .await
    .map_err(|e| e.to_string())?;
    if args.format == ReportFormat::Json {
        println!("{}", report::json(&outcome));
    } else {
        print!("{}", report::text(&outcome));
    }
    if outcome.all_hold() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// `--invariants DIR`, else `invariants/` beside a `--policies` directory, else the
/// shipped ones.
fn load_invariants(args: &VerifyArgs, snapshot: &Snapshot) -> Result<Vec<Invariant>, String> {
    let beside = args
        .model
        .policies
        .as_ref()
        .filter(|p| p.is_dir())
        .map(|p| p.join("invariants"))
        .filter(|p| p.is_dir());
    let loaded = match args.invariants.as_ref().or(beside.as_ref()) {
        Some(dir) => invariants::load_dir(dir, &snapshot.schema),
        None => invariants::embedded(&snapshot.schema),
    };
    loaded.map_err(|e| e.to_string())
}

/// The old policies of a change review, compiled against the schema of the policies
/// under check, so that both are asked about the same requests.
fn load_old(model: &ModelArgs, dir: &Path) -> Result<Snapshot, String> {
    let schema = match &model.schema {
        Some(path) => SourceFile::read(path).map_err(|e| e.to_string())?,
        None => {
            let embedded = Sources::embedded();
            embedded.schema
        }
    };
    let files: Vec<PathBuf> = model::policy_files(dir).map_err(|e| e.to_string())?;
    let policies = files
        .iter()
        .map(|p| SourceFile::read(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let old = model::compile(&Sources {
        schema,
        policies,
        links: None,
        routes: None,
        entities: None,
        ..Sources::embedded()
    })
    .map_err(|e| format!("the old policies (`--against {}`):\n{e}", dir.display()))?;
    Ok(old)
}
