#!/usr/bin/env bash
# What #[cacheow] costs per call (cacheow/benches/overhead.rs), against the
# same function unwrapped in the same run: once with cacheow off (no
# CACHEOW_ENABLE) and once on, in cache mode (a replay of a small value).
# Prints the medians and their ratio; criterion's full report is in
# target/criterion/.
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=$(mktemp -d)
trap 'rm -rf "$data_dir"' EXIT

run() {
    cargo bench -p cacheow --bench overhead -- --noplot "$@"
}

(unset CACHEOW_ENABLE; run)
CACHEOW_ENABLE=1 CACHEOW_DATA_DIR="$data_dir" CACHEOW_START_SERVER=0 run

median_ns() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' \
        "target/criterion/$1/$2/new/estimates.json"
}

printf '\n%-18s %7s %12s %12s %8s\n' group rounds plain_ns wrapped_ns ratio
for group in disabled enabled_cache_hit; do
    for rounds in 8 2000; do
        plain=$(median_ns "$group" "plain_$rounds")
        wrapped=$(median_ns "$group" "wrapped_$rounds")
        python3 -c 'import sys; g,r=sys.argv[1:3]; p,w=map(float,sys.argv[3:]); print(f"{g:<18} {r:>7} {p:12.2f} {w:12.2f} {w/p:7.2f}x")' \
            "$group" "$rounds" "$plain" "$wrapped"
    done
done
