//! The `cacheow` binary: parse flags, validate config, run.
//!
//! Exit codes: 0 success; 1 runtime failure (or rebuild-index skipped some
//! files); 2 bad flags or config; 3 the data dir is in use by another cacheow.

use std::process::ExitCode;

use cacheow_engine::policy;
use cacheow_engine::{CallKey, Engine, EngineError, EngineOptions, FunctionId, Invalidation};
use cacheow_proxy::cli::{
    CaArgs, Cli, Command, DataDirArgs, InvalidateArgs, RedactArgs, ServeArgs,
};
use cacheow_proxy::config::Config;
use cacheow_proxy::{Ca, CaPaths, run, telemetry};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    quiet_contained_panics();
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => serve(*args),
        Command::RebuildIndex(args) => rebuild_index(args),
        Command::Redact(args) => redact(args),
        Command::Ca(args) => ca(args),
        Command::Invalidate(args) => invalidate(args),
    }
}

/// `POST /api/invalidate` on a stopped cacheow's data dir.
fn invalidate(args: InvalidateArgs) -> ExitCode {
    let bad = |flag: &str, reason: String| {
        eprintln!("error: {flag}: {reason}");
        ExitCode::from(2)
    };
    let older_than = match args.older_than.as_deref().map(policy::parse_duration) {
        Some(Err(reason)) => return bad("--older-than", reason),
        parsed => parsed.and_then(Result::ok),
    };
    let function = match args.function.as_deref().map(str::parse::<FunctionId>) {
        Some(Err(e)) => return bad("--function", e.to_string()),
        parsed => parsed.and_then(Result::ok),
    };
    let call_key = match args.call_key.as_deref().map(str::parse::<CallKey>) {
        Some(Err(e)) => return bad("--call-key", e.to_string()),
        parsed => parsed.and_then(Result::ok),
    };
    let what = Invalidation {
        tag: args.tag,
        function,
        older_than,
        call_key,
        delete: args.delete,
    };
    let engine = match Engine::open(&args.data_dir, EngineOptions::default()) {
        Ok(engine) => engine,
        Err(EngineError::Open(e)) if e.is_locked() => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match engine.invalidate(&what) {
        Ok(report) => {
            engine.flush();
            let done = if what.delete {
                format!("deleted {} outcomes", report.deleted)
            } else {
                "marked the matching outcomes stale".to_owned()
            };
            println!("{done} of {} functions", report.functions);
            ExitCode::SUCCESS
        }
        Err(e @ EngineError::Invalid { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
    let runtime = match runtime_builder().enable_all().build() {
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

/// Works on a store redb cannot open: a damaged index is moved aside and
/// built afresh from the JSON files.
fn rebuild_index(args: DataDirArgs) -> ExitCode {
    match cacheow_storage::Store::rebuild_offline(&args.data_dir) {
        Ok(report) => {
            if let Some(moved) = &report.moved_aside {
                println!("the index was damaged; moved it to {}", moved.display());
            }
            println!(
                "indexed {} outcomes of {} functions",
                report.indexed, report.functions
            );
            for path in &report.restored {
                println!("restored {} from the index", path.display());
            }
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
            eprintln!("error: {e}");
            if e.is_locked() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A panic inside redb on a damaged file is turned into a clear error by
/// the store; only other panics are printed as panics.
fn quiet_contained_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if cacheow_storage::panic_is_contained() {
            tracing::debug!(%info, "redb panicked on a damaged index; reported as an error");
        } else {
            default(info);
        }
    }));
}

/// The async runtime for the cores this process may use. Internal: on one
/// core (a pinned benchmark, a one-CPU container) a multi-thread scheduler
/// has a single worker and only adds hand-offs between threads; the
/// current-thread one serves 1.4–1.6× the recorded calls there
/// (docs/benchmarks.md). With more cores the multi-thread one spreads
/// connections over them.
fn runtime_builder() -> tokio::runtime::Builder {
    // Internal: when the count is unknown, the multi-thread runtime is the
    // one that cannot starve on a busy machine.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
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
