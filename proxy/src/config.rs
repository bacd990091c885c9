//! Validated configuration, built from the flags, the environment and the
//! config file before any port is bound.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cacheow_control::ConnectionTimeouts;
use cacheow_engine::policy::{self, Budget};
use cacheow_engine::{Mode, Policy};
use serde::Deserialize;

use crate::call_key::KeyRules;
use crate::cli::ServeArgs;
use crate::host_pattern::HostPattern;
use crate::redact::Redaction;
use crate::route::{RoutePattern, RouteRule, RouteTable};

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 8765;
const DEFAULT_CONFIG_FILE: &str = "cacheow.toml";
/// Longest timeout a flag accepts: a day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// A configuration problem, worded for the person who wrote it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// Where a reverse listener sends requests.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// `host[:port]`, lowercase.
    pub(crate) authority: String,
    /// Path prefix without a trailing slash ("" for none).
    pub(crate) base_path: String,
}

impl Upstream {
    fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("`{url}` has no scheme; write http://… or https://…"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{url}`: scheme must be http or https"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!("`{url}`: an upstream URL cannot carry a query"));
        }
        Ok(Self {
            scheme: if scheme == "http" { "http" } else { "https" },
            authority: authority.as_str().to_ascii_lowercase(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The URL as given (normalised).
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// One `--reverse LISTEN=URL`.
#[derive(Debug, Clone)]
pub struct Reverse {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where to send.
    pub upstream: Upstream,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Main listener: proxy, API, panel.
    pub listen: SocketAddr,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Reverse listeners.
    pub reverse: Vec<Reverse>,
    /// Mode of new functions.
    pub default_mode: Mode,
    /// Commit before replying.
    pub durable: bool,
    /// Never connect to an upstream; replay or answer `offline_miss`.
    pub offline: bool,
    /// Memory for hot outcomes, in bytes.
    pub memory_cache_bytes: u64,
    /// The cost guard over every function together.
    pub max_upstream_calls: Option<Budget>,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) redaction: Arc<Redaction>,
    /// Record cap.
    pub max_body_bytes: usize,
    /// Wait for response headers.
    pub upstream_timeout: Duration,
    /// Wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Wait for a new connection's first byte.
    pub idle_timeout: Duration,
    /// Wait for a complete request head.
    pub header_timeout: Duration,
    /// Longest pause inside a request body.
    pub body_timeout: Duration,
    /// The token the API, and off loopback every listener, requires.
    pub token: Option<String>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Roots upstream certificates are verified against: the web roots plus
    /// every `--upstream-ca`.
    pub(crate) upstream_roots: Arc<rustls::RootCertStore>,
    /// CONNECT hosts tunnelled blind.
    pub(crate) no_intercept: Vec<HostPattern>,
}

impl Config {
    /// What every accepted connection must send, and by when.
    pub(crate) fn connection_timeouts(&self) -> ConnectionTimeouts {
        ConnectionTimeouts {
            idle: self.idle_timeout,
            header: self.header_timeout,
        }
    }

    /// Validates flags and environment and reads the config file.
    /// `env` looks up an environment variable (a parameter so tests need not
    /// touch the process environment).
    pub fn from_cli(
        args: ServeArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let listen = match &args.listen {
            Some(text) => resolve(text, "--listen")?,
            None => {
                let host = env("CACHEOW_SERVER_HOST").unwrap_or_else(|| DEFAULT_HOST.into());
                let port = match env("CACHEOW_SERVER_PORT") {
                    Some(p) => p.parse::<u16>().map_err(|_| {
                        ConfigError(format!(
                            "CACHEOW_SERVER_PORT `{p}` is not a port number (0–65535)"
                        ))
                    })?,
                    None => DEFAULT_PORT,
                };
                resolve(
                    &join_host_port(&host, port),
                    "CACHEOW_SERVER_HOST/CACHEOW_SERVER_PORT",
                )?
            }
        };
        if !is_loopback(listen.ip()) && args.token.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError(format!(
                "listening on {listen}, off loopback, lets other machines control cacheow; set a token with --token or CACHEOW_TOKEN"
            )));
        }
        let default_mode: Mode = args
            .default_mode
            .parse()
            .map_err(|e| ConfigError(format!("--default-mode: {e}")))?;
        let mut reverse = Vec::new();
        for spec in &args.reverse {
            let (listen_text, url) = spec.split_once('=').ok_or_else(|| {
                ConfigError(format!("--reverse `{spec}`: expected LISTEN=URL, e.g. 127.0.0.1:9000=https://api.example.com"))
            })?;
            let upstream = Upstream::parse(url)
                .map_err(|e| ConfigError(format!("--reverse `{spec}`: {e}")))?;
            let listen = resolve(listen_text, &format!("--reverse `{spec}`"))?;
            reverse.push(Reverse { listen, upstream });
        }
        let token = args.token.filter(|t| !t.is_empty());
        if let Some(open) = reverse.iter().find(|r| !is_loopback(r.listen.ip()))
            && token.is_none()
        {
            return Err(ConfigError(format!(
                "--reverse listener on {}, off loopback, would let other machines use it; set a token with --token or CACHEOW_TOKEN",
                open.listen
            )));
        }
        let seconds = |value: f64, flag: &str| {
            if value > 0.0 && value <= MAX_TIMEOUT_SECS {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(ConfigError(format!(
                    "{flag} must be a positive number of seconds, at most {MAX_TIMEOUT_SECS}, got {value}"
                )))
            }
        };
        let upstream_timeout = seconds(args.upstream_timeout, "--upstream-timeout")?;
        let connect_timeout = seconds(args.connect_timeout, "--connect-timeout")?;
        let idle_timeout = seconds(args.idle_timeout, "--idle-timeout")?;
        let header_timeout = seconds(args.header_timeout, "--header-timeout")?;
        let body_timeout = seconds(args.body_timeout, "--body-timeout")?;
        let upstream_roots = Arc::new(upstream_roots(&args.upstream_ca)?);
        let no_intercept = args
            .no_intercept
            .iter()
            .map(|p| HostPattern::parse(p).map_err(|e| ConfigError(format!("--no-intercept: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let config_file = match args.config {
            Some(path) => Some(path),
            None => Path::new(DEFAULT_CONFIG_FILE)
                .exists()
                .then(|| PathBuf::from(DEFAULT_CONFIG_FILE)),
        };
        let file = match &config_file {
            Some(path) => read_config_file(path)?,
            None => ConfigFile::default(),
        };
        let max_upstream_calls = match &args.max_upstream_calls {
            Some(text) => Some(
                Budget::parse(&text.as_str().into())
                    .map_err(|e| ConfigError(format!("--max-upstream-calls: {e}")))?,
            ),
            None => file.max_upstream_calls,
        };
        Ok(Config {
            listen,
            data_dir: args.data_dir,
            reverse,
            default_mode,
            durable: args.durable,
            offline: args.offline,
            memory_cache_bytes: args.memory_cache_bytes,
            max_upstream_calls,
            routes: Arc::new(RouteTable::new(file.rules, file.key_prefix)),
            redaction: Arc::new(file.redaction),
            max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
            upstream_timeout,
            connect_timeout,
            idle_timeout,
            header_timeout,
            body_timeout,
            token,
            config_file,
            upstream_roots,
            no_intercept,
        })
    }
}

/// The web roots plus the certificates of every `--upstream-ca` file.
fn upstream_roots(files: &[PathBuf]) -> Result<rustls::RootCertStore, ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for file in files {
        let what =
            |reason: String| ConfigError(format!("--upstream-ca `{}`: {reason}", file.display()));
        let bytes = std::fs::read(file).map_err(|e| what(format!("cannot read it: {e}")))?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| what(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| what(format!("not a usable CA certificate: {e}")))?;
            found += 1;
        }
        if found == 0 {
            return Err(what(
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
    }
    Ok(roots)
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn resolve(text: &str, what: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            ConfigError(format!(
                "{what}: `{text}` is not HOST:PORT (e.g. 127.0.0.1:8765)"
            ))
        })
}

pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// The redaction rules of a config file (`./cacheow.toml` when `path` is
/// `None` and it exists), for `cacheow redact`.
pub(crate) fn redaction_from(path: Option<&Path>) -> Result<Redaction, ConfigError> {
    let path = match path {
        Some(path) => Some(path.to_owned()),
        None => Path::new(DEFAULT_CONFIG_FILE)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG_FILE)),
    };
    match path {
        Some(path) => Ok(read_config_file(&path)?.redaction),
        None => Ok(Redaction::default()),
    }
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigFile {
    #[serde(default)]
    redact_headers: Vec<String>,
    #[serde(default)]
    redact_query: Vec<String>,
    #[serde(default)]
    redact_body_fields: Vec<String>,
    #[serde(default)]
    keep_set_cookie: bool,
    #[serde(default)]
    max_upstream_calls: Option<toml::Spanned<String>>,
    #[serde(default)]
    key_prefix: String,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    pattern: toml::Spanned<String>,
    #[serde(default)]
    mode: Option<toml::Spanned<String>>,
    #[serde(default)]
    ignore_query: Vec<String>,
    #[serde(default)]
    ignore_body_fields: Vec<String>,
    #[serde(default)]
    include_headers: Vec<String>,
    #[serde(default)]
    replay_speed: Option<toml::Spanned<f64>>,
    #[serde(default)]
    replay_duration: Option<bool>,
    #[serde(default)]
    ttl: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    stale_while_revalidate: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    stale_if_error: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    error_statuses: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    coalesce: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    cache_if: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    max_upstream_calls: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    circuit_breaker: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    tags: Option<toml::Spanned<toml::Value>>,
}

impl RawRoute {
    /// The cache-policy settings the route sets, by name.
    fn policy_settings(&self) -> [(&'static str, Option<&toml::Spanned<toml::Value>>); 9] {
        [
            (policy::TTL, self.ttl.as_ref()),
            (
                policy::STALE_WHILE_REVALIDATE,
                self.stale_while_revalidate.as_ref(),
            ),
            (policy::STALE_IF_ERROR, self.stale_if_error.as_ref()),
            (policy::ERROR_STATUSES, self.error_statuses.as_ref()),
            (policy::COALESCE, self.coalesce.as_ref()),
            (policy::CACHE_IF, self.cache_if.as_ref()),
            (policy::MAX_UPSTREAM_CALLS, self.max_upstream_calls.as_ref()),
            (policy::CIRCUIT_BREAKER, self.circuit_breaker.as_ref()),
            (policy::TAGS, self.tags.as_ref()),
        ]
    }
}

#[derive(Debug, Default)]
struct ConfigFile {
    rules: Vec<RouteRule>,
    redaction: Redaction,
    max_upstream_calls: Option<Budget>,
    key_prefix: String,
}

fn read_config_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file `{}`: {e}", path.display())))?;
    parse_config(&text, path)
}

fn parse_config(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
    let raw: RawConfigFile = toml::from_str(text)
        .map_err(|e| ConfigError(format!("config file `{}`: {e}", path.display())))?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut rules = Vec::new();
    for (i, mut route) in raw.route.into_iter().enumerate() {
        let pattern = RoutePattern::parse(route.pattern.get_ref()).map_err(|reason| {
            ConfigError(format!(
                "config file `{}`, line {}, key route[{i}].pattern: {reason}",
                path.display(),
                line_of(route.pattern.span().start)
            ))
        })?;
        let mode = match &route.mode {
            Some(mode) => Some(mode.get_ref().parse::<Mode>().map_err(|e| {
                ConfigError(format!(
                    "config file `{}`, line {}, key route[{i}].mode: {e}",
                    path.display(),
                    line_of(mode.span().start)
                ))
            })?),
            None => None,
        };
        let keys = KeyRules {
            ignore_query: std::mem::take(&mut route.ignore_query),
            ignore_body_fields: std::mem::take(&mut route.ignore_body_fields),
            include_headers: route
                .include_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            key_prefix: raw.key_prefix.clone(),
        };
        let mut initial_config = serde_json::Map::new();
        if let Some(speed) = &route.replay_speed {
            let value = *speed.get_ref();
            if !crate::replay::valid_speed(value) {
                return Err(ConfigError(format!(
                    "config file `{}`, line {}, key route[{i}].replay_speed: must be a number from 0 to 100 (1 = as recorded, 0 = at once)",
                    path.display(),
                    line_of(speed.span().start)
                )));
            }
            initial_config.insert(crate::replay::SPEED.into(), value.into());
        }
        if let Some(on) = route.replay_duration {
            initial_config.insert(crate::replay::DURATION.into(), on.into());
        }
        for (key, setting) in route.policy_settings() {
            let Some(setting) = setting else {
                continue;
            };
            let at = |reason: String| {
                ConfigError(format!(
                    "config file `{}`, line {}, key route[{i}].{key}: {reason}",
                    path.display(),
                    line_of(setting.span().start)
                ))
            };
            let value = serde_json::to_value(setting.get_ref())
                .map_err(|e| at(format!("cannot read it: {e}")))?;
            if let Some(Err(reason)) = Policy::check(key, &value) {
                return Err(at(reason));
            }
            initial_config.insert(key.into(), value);
        }
        rules.push(RouteRule::new(pattern, mode, keys, initial_config));
    }
    let max_upstream_calls = match &raw.max_upstream_calls {
        Some(text) => Some(
            Budget::parse(&text.get_ref().as_str().into()).map_err(|reason| {
                ConfigError(format!(
                    "config file `{}`, line {}, key max_upstream_calls: {reason}",
                    path.display(),
                    line_of(text.span().start)
                ))
            })?,
        ),
        None => None,
    };
    Ok(ConfigFile {
        max_upstream_calls,
        key_prefix: raw.key_prefix,
        rules,
        redaction: Redaction {
            headers: raw
                .redact_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            query: raw.redact_query,
            body_fields: raw.redact_body_fields,
            keep_set_cookie: raw.keep_set_cookie,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_file_line_and_key() {
        let text = "[[route]]\npattern = \"GET http://a/b\"\n\n[[route]]\npattern = \"http://a/c\"\nmode = \"cached\"\n";
        let err = parse_config(text, Path::new("my.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`my.toml`, line 6, key route[1].mode"),
            "{err}"
        );
        assert!(err.contains("unknown mode `cached`"), "{err}");

        let err = parse_config(
            "[[route]]\npattern = \"http://a/b\"\nignore_querry = []\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x.toml") && err.contains("line 3") && err.contains("ignore_querry"),
            "{err}"
        );
    }

    #[test]
    fn off_loopback_needs_a_token() {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from(["cacheow", "--listen", "0.0.0.0:0"]);
        let err = Config::from_cli(cli.serve, |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--token"), "{err}");
    }
}
