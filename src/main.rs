use std::process::ExitCode;

use clap::Parser;
use portcullis::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("choose one allocator: the `mimalloc` or the `jemalloc` feature");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if format == LogFormat::Text {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format);
            runtime.block_on(portcullis::cli::serve(args))
        }
        Command::Validate(args) => Ok(portcullis::cli::validate(&args)),
        Command::Authorize(args) => Ok(runtime.block_on(portcullis::cli::authorize(&args))),
        Command::Entities(args) => runtime.block_on(portcullis::cli::entities(args)),
        Command::Test(args) => Ok(runtime.block_on(portcullis::cli::test(&args))),
        Command::Fmt(args) => Ok(portcullis::cli::fmt(&args)),
        Command::Plan(args) => Ok(runtime.block_on(portcullis::cli::plan(&args))),
        Command::Verify(args) => Ok(runtime.block_on(portcullis::cli::verify(&args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
