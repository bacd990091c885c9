//! The `cacheow` binary: parse flags, validate config, run.
//!
//! Exit codes: 0 success; 1 runtime failure (or rebuild-index skipped some
//! files); 2 bad flags or config; 3 the data dir is in use by another cacheow.

use std::process::ExitCode;

use cacheow_proxy::cli::{CaArgs, Cli, Command, DataDirArgs, RedactArgs, ServeArgs};
use cacheow_proxy::config::Config;
use cacheow_proxy::{Ca, CaPaths, run, telemetry};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args),
        Command::RebuildIndex(args) => rebuild_index(args),
        Command::Redact(args) => redact(args),
        Command::Ca(args) => ca(args),
    }
}

/// Reads (or creates) only the CA files, never the store, so it works next
/// to a running `cacheow serve`.
fn ca(args: CaArgs) -> ExitCode {
    match Ca::load_or_create(&args.data_dir) {
        Ok(ca) if args.pem => {
            print!("{}", ca.cert_pem());
            ExitCode::SUCCESS
        }
        Ok(ca) => {
            print!("{}", ca.how_to_trust());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::from_cli(args, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, |addr, reverse, engine| {
        let count = engine.functions().len();
        println!(
            "cacheow {} listening on http://{addr}",
            env!("CARGO_PKG_VERSION")
        );
        println!(
            "  data dir: {} ({count} functions)",
            engine.data_dir().display()
        );
        println!("  panel:    http://{addr}/");
        // curl reads only the lowercase names; most SDKs read either.
        println!("  use it:   export http_proxy=http://{addr} https_proxy=http://{addr} HTTP_PROXY=http://{addr} HTTPS_PROXY=http://{addr}");
        println!(
            "  https:    trust {} (`cacheow ca` says how)",
            CaPaths::new(&engine.data_dir()).cert.display()
        );
        for (listen, url) in reverse {
            println!("  reverse http://{listen} -> {url}");
        }
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_data_dir_locked() => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn redact(args: RedactArgs) -> ExitCode {
    match cacheow_proxy::redact_store(&args.data_dir, args.config.as_deref()) {
        Ok(changed) => {
            println!("redacted {changed} outcomes");
            ExitCode::SUCCESS
        }
        Err(cacheow_proxy::RedactError::Open(e)) if e.is_locked() => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
        Err(cacheow_proxy::RedactError::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn rebuild_index(args: DataDirArgs) -> ExitCode {
    let result =
        cacheow_engine::Engine::open(&args.data_dir, cacheow_engine::EngineOptions::default())
            .map_err(anyhow::Error::from)
            .and_then(|engine| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(runtime.block_on(engine.rebuild_index(None))?)
            });
    match result {
        Ok(report) => {
            println!(
                "indexed {} outcomes of {} functions",
                report.indexed, report.functions
            );
            for failure in &report.failures {
                eprintln!("skipped {}: {}", failure.path.display(), failure.reason);
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            let locked = e.downcast_ref::<cacheow_engine::EngineError>().is_some_and(
                |e| matches!(e, cacheow_engine::EngineError::Open(o) if o.is_locked()),
            );
            if locked {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Raises the soft open-files limit to the hard one: the common soft
/// default of 1,024 is a few hundred idle clients away from refusing
/// everyone.
fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        // Internal: `None` is unlimited, which macOS refuses as a soft
        // limit; its per-process ceiling (OPEN_MAX) is the fallback.
        for target in [limit.maximum, Some(10_240)].into_iter().flatten() {
            if limit.current.is_some_and(|current| current >= target) {
                return;
            }
            let raised = Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                tracing::debug!(before = ?limit.current, after = target, "raised the open-files limit");
                return;
            }
        }
        tracing::warn!(current = ?limit.current, "cannot raise the open-files limit");
    }
}
