//! The `herald` binary: parse the command line, start logging, load the
//! configuration, and hand off to `app` (serve) or `cli` (client commands).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use herald::app::Role;
use herald::cli::{Cli, Command};
use herald::config::Config;
use herald::{app, cli, telemetry};

/// mimalloc rather than the system allocator: a big batch's intake allocates on
/// one thread and frees on another millions of times, where glibc's malloc
/// contends and fragments (docs/BENCHMARKS.md). Built without transparent huge
/// pages, which would make each touched 2 MB of the heap resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Cli::parse();
    telemetry::init(args.log_format);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (role, serve) = match args.command {
        Command::Serve(serve) => (Role::All, serve),
        Command::Api(serve) => (Role::Api, serve),
        Command::Worker(serve) => (Role::Worker, serve),
        other => return runtime.block_on(cli::run(other)),
    };
    let mut config = Config::load(args.config.as_deref()).context("loading the configuration")?;
    if let Some(listen) = serve.listen {
        config.listen = listen;
    }
    if let Some(store) = serve.store {
        config.store = store;
    }
    runtime.block_on(app::serve(config, role))?;
    Ok(ExitCode::SUCCESS)
}
