#!/usr/bin/env bash
# Installs the real clients of the client matrix (tests/tests/clients.rs)
# under the cargo target dir: a Python venv from requirements.txt (the
# clients and httpbin) and node/'s npm packages from the committed lockfile.
# Each part is skipped when its stamp, a copy of the pinned file it was
# installed from, still matches. The JDK and curl come from the machine
# (as root with apt, a missing JDK is installed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
clients="$root/tests/clients"
target="${CARGO_TARGET_DIR:-$root/target}"
[[ $target = /* ]] || target="$root/$target"

if ! command -v javac >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "client matrix: installing a JDK (default-jdk-headless)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless >/dev/null
fi
missing=()
for tool in python3 node npm java javac keytool curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "error: the client matrix needs ${missing[*]} on PATH" >&2
    exit 1
fi
mkdir -p "$target"

venv="$target/clients-venv"
if cmp -s "$clients/requirements.txt" "$venv/.installed-from" &&
    "$venv/bin/python" -c 'import httpbin, openai' 2>/dev/null; then
    echo "client matrix: Python venv is current ($venv)"
else
    echo "client matrix: creating the Python venv ($venv)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --no-input -r "$clients/requirements.txt"
    cp "$clients/requirements.txt" "$venv/.installed-from"
fi

node="$target/clients-node"
if cmp -s "$clients/node/package-lock.json" "$node/.installed-from" && [[ -d $node/node_modules ]]; then
    echo "client matrix: npm packages are current ($node)"
else
    echo "client matrix: installing the npm packages ($node)"
    rm -rf "$node"
    mkdir -p "$node"
    cp "$clients/node/package.json" "$clients/node/package-lock.json" "$node/"
    (cd "$node" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    cp "$clients/node/package-lock.json" "$node/.installed-from"
fi
