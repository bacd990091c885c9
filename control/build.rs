//! Builds the control panel (`panel/`, a Leptos app) for wasm32, runs
//! wasm-bindgen on it as a library, and leaves index.html, the CSS, the boot
//! script and `pkg/panel.js` + `pkg/panel_bg.wasm` in `$OUT_DIR/panel-dist/`,
//! which `src/panel.rs` embeds. So `cargo build` alone yields a binary with
//! the whole panel inside: no wasm-bindgen CLI, trunk or wasm-opt needed,
//! only the `wasm32-unknown-unknown` target.
//!
//! `CACHEOW_SKIP_PANEL=1` writes a placeholder page instead, for fast check
//! loops and editors that run build scripts.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Copied as they are next to the generated `pkg/`.
const STATIC_FILES: [&str; 3] = ["index.html", "style.css", "boot.js"];

const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: cannot build the cacheow panel: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("control/ has no parent directory")?
        .to_owned();
    let panel = workspace.join("panel");
    let dist = PathBuf::from(env_var("OUT_DIR")?).join("panel-dist");

    for input in ["src", "Cargo.toml"].iter().chain(&STATIC_FILES) {
        println!("cargo:rerun-if-changed={}", panel.join(input).display());
    }
    // The lock pins the panel's dependencies; the root manifest holds the
    // wasm-release profile.
    for input in ["Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CACHEOW_SKIP_PANEL");

    // Start empty: files from an earlier build (or a placeholder) must not
    // linger in the binary.
    if dist.exists() {
        fs::remove_dir_all(&dist).map_err(|e| format!("cannot clear {}: {e}", dist.display()))?;
    }
    fs::create_dir_all(&dist).map_err(|e| format!("cannot create {}: {e}", dist.display()))?;

    if env::var_os("CACHEOW_SKIP_PANEL").is_some_and(|v| !v.is_empty() && v != "0") {
        println!(
            "cargo:warning=CACHEOW_SKIP_PANEL is set: this cacheow serves a placeholder instead of the panel"
        );
        return write(&dist.join("index.html"), PLACEHOLDER.as_bytes());
    }

    let wasm = build_wasm(&workspace)?;
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen
        .input_path(&wasm)
        .web(true)
        .map_err(|e| format!("wasm-bindgen: {e}"))?
        .typescript(false)
        // Function names are half the module; panic messages already say
        // where they come from.
        .remove_name_section(true)
        .remove_producers_section(true)
        // The library, unlike the CLI, leaves out `init()`'s default of
        // `panel_bg.wasm` beside `panel.js`; boot.js relies on it.
        .omit_default_module_path(false)
        .out_name("panel")
        .generate(dist.join("pkg"))
        .map_err(|e| format!("wasm-bindgen on {}: {e:#}", wasm.display()))?;

    for name in STATIC_FILES {
        let from = panel.join(name);
        let bytes = fs::read(&from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        write(&dist.join(name), &bytes)?;
    }
    Ok(())
}

/// Runs a nested `cargo build` of the panel for wasm32 in its own target
/// directory and returns the path of the module it produced.
fn build_wasm(workspace: &Path) -> Result<PathBuf, String> {
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir))
        .join("panel-wasm");
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(workspace)
        .args(["build", "-p", "cacheow-panel", "--target", WASM_TARGET])
        .args(["--profile", "wasm-release", "--target-dir"])
        .arg(&target_dir)
        .args(parent_cargo_flags());
    // What cargo set up for this build script describes the host build, not
    // the panel's: flags for another target, the clippy wrapper, and this
    // package's features and cfgs.
    for (key, _) in env::vars_os() {
        let key_str = key.to_string_lossy();
        if matches!(
            key_str.as_ref(),
            "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTFLAGS"
                | "CARGO_BUILD_TARGET"
                | "CARGO_TARGET_DIR"
                | "RUSTC_WORKSPACE_WRAPPER"
        ) || key_str.starts_with("CARGO_FEATURE_")
            || key_str.starts_with("CARGO_CFG_")
        {
            cargo.env_remove(&key);
        }
    }
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build -p cacheow-panel --target {WASM_TARGET}` failed ({status}); see its output above.\n\
             If it says the target is missing (\"can't find crate for `core`\"), run:\n\
             \n    rustup target add {WASM_TARGET}\n\n\
             To build cacheow without the panel, set CACHEOW_SKIP_PANEL=1."
        ));
    }
    Ok(target_dir
        .join(WASM_TARGET)
        .join("wasm-release")
        .join("panel.wasm"))
}

/// `--locked`, `--offline` and `--frozen` given to the cargo that runs this
/// script, so the nested build honours them too. Cargo does not pass them to
/// build scripts, so they are read from its command line (Linux only;
/// elsewhere `CARGO_NET_OFFLINE` still reaches the nested cargo).
fn parent_cargo_flags() -> Vec<OsString> {
    let cmdline = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("PPid:"))
                .map(|ppid| ppid.trim().to_owned())
        })
        .and_then(|ppid| fs::read(format!("/proc/{ppid}/cmdline")).ok())
        .unwrap_or_default();
    cmdline
        .split(|&b| b == 0)
        .filter(|arg| matches!(*arg, b"--locked" | b"--offline" | b"--frozen"))
        .map(|arg| OsString::from(String::from_utf8_lossy(arg).into_owned()))
        .collect()
}

fn env_var(name: &str) -> Result<OsString, String> {
    env::var_os(name).ok_or_else(|| format!("cargo did not set {name}"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

const PLACEHOLDER: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>cacheow</title><link rel="icon" href="data:,"></head>
<body>
<h1>cacheow</h1>
<p>This cacheow was built with <code>CACHEOW_SKIP_PANEL=1</code>, so the control panel is not included.
Build again without it to get the panel.</p>
<p>The JSON API works as usual: <a href="/api/functions">/api/functions</a>, <a href="/api/info">/api/info</a>.</p>
</body>
</html>
"#;
