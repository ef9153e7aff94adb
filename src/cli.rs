//! The subcommands, called by `main` after it parses the command line.

use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{
    AuthorizeArgs, EntitiesArgs, FmtArgs, PlanArgs, ServeArgs, TestArgs, ValidateArgs, VerifyArgs,
};
use crate::decision::{self, Call, RawRequest};
use crate::entities::SourceGate;
use crate::http::app::{entity_file, open_entities};
use crate::http::{App, Listeners};
use crate::model::{reload, EntityFile, ReloadOptions};

/// `portcullis serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let app = match App::build(&args) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let snap = app.model.load();
    if args.check_config {
        let (_, _, links) = snap.counts();
        println!(
            "configuration ok: {} policies ({} active, {links} template links), entity source `{}`, listen {} ({}), admin {}, authzen mapping `{}`",
            snap.info.len(),
            snap.active_policy_count(),
            app.entities.kind(),
            args.listen,
            match &app.tls {
                None => "http",
                Some(t) if t.client_auth => "https, client certificates required",
                Some(_) => "https",
            },
            args.listener.admin_listen,
            snap.mapping.source,
        );
        println!(
            "gateway: {} routes, identity `{}`",
            snap.routes.as_ref().map_or(0, |t| t.routes().len()),
            app.gateway.settings.authenticator.kind()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let listeners = Listeners {
        decision: bind(args.listen, "--listen").await?,
        admin: bind(args.listener.admin_listen, "--admin-listen").await?,
    };
    let app = Arc::new(app);
    // The reload task lives exactly as long as the listener: it stops after the drain.
    // It starts before the start-up line, so a SIGHUP sent after that line reloads.
    let reloader = reload::spawn(
        app.model.clone(),
        Arc::new(SourceGate(app.entities.clone())),
        ReloadOptions::from(&args.reload),
    );
    tracing::info!(
        listen = %listeners.decision.local_addr()?,
        admin_listen = %listeners.admin.local_addr()?,
        entity_source = app.entities.kind(),
        policies = snap.active_policy_count(),
        model = %App::model_origin(&args.model, &entity_file(&args.entity)),
        "portcullis serving"
    );
    drop(snap);
    let served = crate::http::serve(listeners, app, shutdown_signal(), args.shutdown_grace()).await;
    reloader.shutdown().await;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Binds one listener; the error names the flag, since two addresses are bound.
async fn bind(addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({flag}): {e}"))
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// `portcullis validate`: prints every problem as `file:line:col: message`.
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let entities = args
        .entities
        .clone()
        .map_or(EntityFile::External, EntityFile::Path);
    match crate::model::load(&args.model, &entities) {
        Ok(snap) => {
            let (statics, templates, links) = snap.counts();
            println!(
                "ok: {} policies and templates, {links} template links, schema valid",
                statics + templates,
            );
            if let (Some(path), Some(data)) = (&args.entities, &snap.entities) {
                println!(
                    "ok: {} entities in `{}` conform to the schema",
                    data.len(),
                    path.display()
                );
            }
            println!("ok: AuthZEN mapping `{}`", snap.mapping.source);
            if let Some(routes) = &snap.routes {
                println!(
                    "ok: {} gateway routes in `{}`",
                    routes.routes().len(),
                    routes.file
                );
            }
            for warning in crate::model::lint::forbids_skipped_on_missing_data(&snap) {
                println!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{} problem(s) found", e.0.len());
            ExitCode::from(1)
        }
    }
}

/// What `authorize` and `plan` ask about: the model, its entity source and the
/// `--context` JSON; on a problem it is printed and the exit status (2) returned.
#[allow(clippy::type_complexity)]
fn one_request_setup(
    model: &crate::config::ModelArgs,
    entity: &crate::config::EntityArgs,
    context: Option<&str>,
) -> Result<
    (
        crate::model::Snapshot,
        std::sync::Arc<dyn crate::entities::EntitySource>,
        Option<serde_json::Value>,
    ),
    ExitCode,
> {
    let fail = |message: String| {
        eprintln!("{message}");
        ExitCode::from(2)
    };
    let snapshot =
        crate::model::load(model, &entity_file(entity)).map_err(|e| fail(e.to_string()))?;
    let source = open_entities(entity, None).map_err(|e| fail(e.to_string()))?;
    let context = context
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| fail(format!("`--context` is not valid JSON: {e}")))?;
    Ok((snapshot, source, context))
}

/// `portcullis plan`: prints the plan as JSON; exit 0 with a plan (of any kind), 2 on
/// a usage error.
pub async fn plan(args: &PlanArgs) -> ExitCode {
    let (snapshot, source, context) =
        match one_request_setup(&args.model, &args.entity, args.context.as_deref()) {
            Ok(set) => set,
            Err(code) => return code,
        };
    let answer = match crate::plan::PlanRequest::parse(
        &args.principal,
        &args.action,
        &args.resource_type,
        context,
    ) {
        Ok(request) => crate::plan::plan_from_source(&snapshot, source.as_ref(), &request).await,
        Err(e) => Err(e),
    };
    match answer.map(|p| serde_json::to_string_pretty(&p)) {
        Ok(Ok(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `portcullis authorize`: one decision through the same pipeline as the server,
/// printed with its determining policies. Exit status 0 on Allow, 1 on Deny, 2 on a
/// bad request or configuration.
pub async fn authorize(args: &AuthorizeArgs) -> ExitCode {
    let (snapshot, source, context) =
        match one_request_setup(&args.model, &args.entity, args.context.as_deref()) {
            Ok(set) => set,
            Err(code) => return code,
        };
    let raw = RawRequest {
        principal: args.principal.clone(),
        action: args.action.clone(),
        resource: args.resource.clone(),
        context,
    };
    let checked = match decision::check(&snapshot, &raw) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = decision::decide(
        &snapshot,
        source.as_ref(),
        &Call::unrecorded(),
        &checked,
        &[],
    )
    .await;
    let d = outcome.decision();
    println!("{}", if d.allowed { "ALLOW" } else { "DENY" });
    for id in &d.reasons {
        let file = snapshot
            .info
            .iter()
            .find(|p| &p.id == id)
            .map(|p| match p.line {
                Some(l) => format!(" ({}:{l})", p.file),
                None => format!(" ({})", p.file),
            })
            .unwrap_or_default();
        println!("  determined by: {id}{file}");
    }
    for e in &d.errors {
        println!("  error: {e}");
    }
    if d.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `portcullis entities`.
pub async fn entities(args: EntitiesArgs) -> anyhow::Result<ExitCode> {
    crate::entities::redis::cli::run(args).await
}

/// `portcullis test`: runs policy test suites. Exit status 0 when every case passes
/// (and coverage meets `--min-coverage`), 1 otherwise, 2 when the model does not load
/// or there is nothing to run.
pub async fn test(args: &TestArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    ExitCode::from(crate::policytest::run(args, &mut out).await)
}

/// `portcullis fmt`: formats `.cedar` files in place, or with `--check` lists the ones
/// that are not formatted. Exit status 1 when `--check` finds any, 2 on a file that
/// cannot be read or parsed.
pub fn fmt(args: &FmtArgs) -> ExitCode {
    use crate::fmt::{cedar_files, format_file, FileOutcome};
    let files = match cedar_files(&args.paths) {
        Ok(f) if f.is_empty() => {
            eprintln!("no `.cedar` files found");
            return ExitCode::from(2);
        }
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (mut changed, mut broken) = (0usize, 0usize);
    for file in &files {
        match format_file(file, args.check) {
            Ok(FileOutcome::Unchanged) => {}
            Ok(FileOutcome::Changed) => {
                changed += 1;
                if args.check {
                    println!("not formatted: {}", file.display());
                } else {
                    println!("formatted: {}", file.display());
                }
            }
            Err(e) => {
                broken += 1;
                eprintln!("{e}");
            }
        }
    }
    if broken > 0 {
        return ExitCode::from(2);
    }
    if args.check && changed > 0 {
        eprintln!(
            "{changed} of {} file(s) not formatted; run `portcullis fmt` to fix",
            files.len()
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// `portcullis verify`: exit status 0 when every invariant holds, 1 when one is
/// violated (or could not be decided), 2 on a bad model, invariant file or solver.
pub async fn verify(args: &VerifyArgs) -> ExitCode {
    match crate::verify::cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
