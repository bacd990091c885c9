//! The crate graph DESIGN §1 draws, read from `cargo tree`: dependencies
//! point down (proxy → control → engine → storage, cacheow → control), and a
//! user of `#[cacheow]` compiles no proxy, TLS or command-line crate.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Every crate `package` depends on at run time (normal edges only), for
/// every target platform.
fn runtime_deps(package: &str) -> BTreeSet<String> {
    deps(package, &[])
}

/// The crates `package` names in its own manifest.
fn direct_deps(package: &str) -> BTreeSet<String> {
    deps(package, &["--depth", "1"])
}

fn deps(package: &str, extra: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args(["tree", "--locked", "-e", "normal", "--target", "all"])
        .args(["--prefix", "none", "--format", "{p}", "-p", package])
        .args(extra)
        .output()
        .expect("running cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deps: BTreeSet<String> = String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_owned)
        .collect();
    assert!(!deps.is_empty(), "cargo tree listed nothing for {package}");
    deps
}

fn assert_none_of(package: &str, forbidden: &[&str]) {
    let deps = runtime_deps(package);
    let found: Vec<&&str> = forbidden
        .iter()
        .filter(|name| deps.contains(**name))
        .collect();
    assert!(
        found.is_empty(),
        "{package} depends on {found:?}; DESIGN §1 says it must not"
    );
}

const PROXY_ONLY: [&str; 7] = [
    "cacheow-proxy",
    "rustls",
    "tokio-rustls",
    "hyper-rustls",
    "rcgen",
    "clap",
    "webpki-roots",
];

#[test]
fn the_library_compiles_no_proxy_tls_or_cli_crate() {
    assert_none_of("cacheow", &PROXY_ONLY);
    assert!(runtime_deps("cacheow").contains("cacheow-control"));
}

#[test]
fn the_control_crate_knows_the_engine_but_no_proxy() {
    assert_none_of("cacheow-control", &PROXY_ONLY);
    assert!(runtime_deps("cacheow-control").contains("cacheow-engine"));
}

#[test]
fn the_engine_and_the_store_know_no_http() {
    let http = [
        "hyper",
        "http",
        "hyper-util",
        "cacheow-control",
        "cacheow-proxy",
    ];
    assert_none_of("cacheow-engine", &http);
    assert_none_of("cacheow-storage", &http);
    assert_none_of("cacheow-storage", &["cacheow-engine"]);
}

#[test]
fn the_proxy_reaches_the_store_through_control_and_the_engine() {
    let deps = direct_deps("cacheow-proxy");
    for layer in ["cacheow-control", "cacheow-engine"] {
        assert!(deps.contains(layer), "cacheow-proxy should use {layer}");
    }
    assert!(!deps.contains("redb"), "cacheow-proxy must not know redb");
}

#[test]
fn the_panel_links_nothing_server_side() {
    assert_none_of(
        "cacheow-panel",
        &[
            "cacheow-storage",
            "cacheow-engine",
            "cacheow-control",
            "cacheow-proxy",
            "redb",
            "hyper",
        ],
    );
}
