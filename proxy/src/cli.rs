//! Command-line flags: raw values only, validated later by `Config`.

use std::path::PathBuf;

use cacheow_control::ConnectionTimeouts;
use clap::{Args, Parser, Subcommand};

/// cacheow: record, replay and mock expensive upstream calls.
///
/// Point HTTP_PROXY at it (or use --reverse), and every upstream route
/// becomes a function with a mode: default (call and record), cache (replay
/// on matching call, else call and record) or mock (never call upstream).
#[derive(Debug, Parser)]
#[command(name = "cacheow", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, usable without the subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy, the control API and the panel (the default).
    Serve(Box<ServeArgs>),
    /// Rebuild the index from the JSON files of a data dir (cacheow must not
    /// be running on it).
    RebuildIndex(DataDirArgs),
    /// Apply today's redaction rules (built in, and the config file's) to
    /// every stored outcome, e.g. after adding a rule (cacheow must not be
    /// running on the data dir).
    Redact(RedactArgs),
    /// Print where the local HTTPS CA certificate is and how to trust it
    /// (creating it if needed; works while cacheow is running).
    Ca(CaArgs),
    /// Mark stored outcomes stale (kept for history and mock mode) or
    /// delete them, by tag, function, age or call key; every given filter
    /// must match (cacheow must not be running on the data dir; while it
    /// runs, use POST /api/invalidate).
    Invalidate(InvalidateArgs),
}

/// Flags of `invalidate`.
#[derive(Debug, Args)]
pub struct InvalidateArgs {
    /// Where functions and outcomes are stored.
    #[arg(long, env = "CACHEOW_DATA_DIR", default_value = ".cacheow")]
    pub data_dir: PathBuf,
    /// Functions with this tag (the `tags` setting).
    #[arg(long)]
    pub tag: Option<String>,
    /// This function (its 16-hex-digit id).
    #[arg(long)]
    pub function: Option<String>,
    /// Outcomes last recorded longer ago than this, like "7d".
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Outcomes of this call (its 64-hex-digit key).
    #[arg(long)]
    pub call_key: Option<String>,
    /// Delete the outcomes and their files instead of marking them stale.
    #[arg(long)]
    pub delete: bool,
}

/// Flags of `redact`.
#[derive(Debug, Args)]
pub struct RedactArgs {
    /// Where functions and outcomes are stored.
    #[arg(long, env = "CACHEOW_DATA_DIR", default_value = ".cacheow")]
    pub data_dir: PathBuf,
    /// Config file with extra rules [default: ./cacheow.toml when present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Flags of `ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Where functions, outcomes and the CA are stored.
    #[arg(long, env = "CACHEOW_DATA_DIR", default_value = ".cacheow")]
    pub data_dir: PathBuf,
    /// Print the certificate itself (PEM) instead of how to trust it.
    #[arg(long)]
    pub pem: bool,
}

/// The data dir flag alone.
#[derive(Debug, Args)]
pub struct DataDirArgs {
    /// Where functions and outcomes are stored.
    #[arg(long, env = "CACHEOW_DATA_DIR", default_value = ".cacheow")]
    pub data_dir: PathBuf,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the proxy, API and panel [default: CACHEOW_SERVER_HOST:CACHEOW_SERVER_PORT, else 127.0.0.1:8765].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Where functions and outcomes are stored.
    #[arg(long, env = "CACHEOW_DATA_DIR", default_value = ".cacheow")]
    pub data_dir: PathBuf,
    /// Open a reverse-proxy listener for one upstream, e.g.
    /// 127.0.0.1:9000=https://api.example.com (repeatable).
    #[arg(long, value_name = "LISTEN=URL")]
    pub reverse: Vec<String>,
    /// Mode of functions seen for the first time: default, cache or mock.
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub default_mode: String,
    /// Commit every recorded outcome to disk before replying.
    #[arg(long)]
    pub durable: bool,
    /// Never connect to an upstream (no DNS, TCP or TLS) and record nothing
    /// new: calls replay, or get 504 `offline_miss` naming what to record.
    #[arg(long, env = "CACHEOW_OFFLINE")]
    pub offline: bool,
    /// Memory for outcomes kept ready to replay, in bytes; every other
    /// outcome stays on disk until a call needs it.
    #[arg(long, value_name = "BYTES", env = "CACHEOW_MEMORY_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub memory_cache_bytes: u64,
    /// A cost guard over every function together, like "500/1h": past it, a
    /// call that would go upstream gets 429 `budget_exceeded` [default:
    /// `max_upstream_calls` of the config file; none].
    #[arg(long, value_name = "CALLS/WINDOW", env = "CACHEOW_MAX_UPSTREAM_CALLS")]
    pub max_upstream_calls: Option<String>,
    /// Config file with route patterns and call-key rules [default: ./cacheow.toml when present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Request and response bodies larger than this pass through unrecorded
    /// (in mock mode such a request never goes upstream).
    #[arg(long, env = "CACHEOW_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Seconds to wait for an upstream's response headers before a `timeout` outcome.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub upstream_timeout: f64,
    /// Seconds to wait for an upstream TCP connection before a `connect_timeout` outcome.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Seconds a new connection may wait before sending its first byte.
    #[arg(long, value_name = "SECS", default_value_t = ConnectionTimeouts::DEFAULT.idle.as_secs_f64())]
    pub idle_timeout: f64,
    /// Seconds a client has to send a complete request head, counted from
    /// its connection (or its previous reply on a kept-alive HTTP/1.1
    /// connection, which also ends idle kept-alive connections).
    #[arg(long, value_name = "SECS", default_value_t = ConnectionTimeouts::DEFAULT.header.as_secs_f64())]
    pub header_timeout: f64,
    /// Seconds a request body may pause between two chunks before the call
    /// is refused with a 408.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub body_timeout: f64,
    /// Also trust this CA certificate (PEM) for upstream TLS, besides the
    /// built-in web roots: for private or test CAs (repeatable).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Vec<PathBuf>,
    /// Tunnel CONNECTs to hosts matching this glob blind, without
    /// interception or recording, e.g. '*.pinned.example' or 'host:8443'
    /// (repeatable; for certificate-pinned clients).
    #[arg(long, value_name = "PATTERN")]
    pub no_intercept: Vec<String>,
    /// Token the control API requires; off loopback it is mandatory and
    /// proxying wants it too (as the password of `Proxy-Authorization`).
    #[arg(long, env = "CACHEOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}
