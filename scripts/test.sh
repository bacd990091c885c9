#!/usr/bin/env bash
# Runs every check and every test of cacheow: formatting, lints (host and
# wasm), unit, integration, end-to-end and browser tests. On a fresh machine
# it first installs what the tests need: the wasm32 target for the panel,
# Chromium + ChromeDriver for the browser tests and the system tools of the
# safety tests (as root, through apt; those tests need root), and
# for the real-client matrix a Python venv and npm packages under target/
# from pinned files (tests/clients/install.sh; a JDK through apt if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*"; }

step "toolchain: wasm32 target for the panel (no-op when present)"
rustup target add wasm32-unknown-unknown

# Tool -> Debian package. Besides the browser: network namespaces (ip),
# a small tmpfs to fill (mount), a low open-files limit (prlimit), one core
# (taskset), FIFOs and gzip bombs for the safety tests.
declare -A package_of=(
    [chromium]=chromium [chromedriver]=chromium-driver [curl]=curl
    [ip]=iproute2 [mount]=mount [prlimit]=util-linux [taskset]=util-linux
    [mkfifo]=coreutils [gzip]=gzip
)
missing=()
for tool in "${!package_of[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "error: the tests need these packages: ${missing[*]}" >&2
        echo "       install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    # Never binaryen: Debian's wasm-opt corrupts wasm-bindgen output.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "client matrix: Python venv and npm packages under target/ (skipped when current)"
bash tests/clients/install.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (host crates)"
cargo clippy --all-targets -- -D warnings

step "examples/complete (its own workspace): fmt and clippy"
cargo fmt --manifest-path examples/complete/Cargo.toml --check
CARGO_TARGET_DIR=target cargo clippy --manifest-path examples/complete/Cargo.toml --locked -- -D warnings

step "cargo clippy (panel, wasm32)"
cargo clippy -p cacheow-panel --target wasm32-unknown-unknown --target-dir target/panel-wasm -- -D warnings

step "cargo test"
cargo test

step "cargo test (panel unit tests, native)"
cargo test -p cacheow-panel --target-dir target/panel-wasm
