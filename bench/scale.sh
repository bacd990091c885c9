#!/usr/bin/env bash
# cacheow scale benchmark (issue 13, item 6). Not a test: for each N it
# records N distinct outcomes of one function through the proxy, restarts
# cacheow on that data dir, and reports side by side in one run:
#
#   start        seconds from exec until the control API answers
#   RSS start    resident memory once it answers
#   record/s     distinct outcomes recorded per second through a reverse
#                listener (default mode, upstream: an nginx answering a
#                JSON body of SCALE_BODY_BYTES per path), sent by record-load
#                (wrk cannot stop after N requests)
#   hot/s        cache-mode replay over the first SCALE_HOT keys
#   uniform/s    cache-mode replay over all N keys, uniformly at random
#   mock/s       mock mode, calls that were recorded (a choice among that
#                call's outcomes)
#   unseen/s     mock mode, calls never recorded (a choice among all N)
#   RSS replay   resident memory after those rows (and its peak)
#   disk/outcome bytes of the data dir per outcome after a clean stop: the
#                bytes of its files (du -sb) and the disk blocks they take
#                (du -sB1)
#
# Then one row of many functions (SCALE_FUNCTIONS, "FxP": F functions of P
# outcomes, `GET /f<j>/item/<k>`): start time, RSS after start, and the
# best of three times `GET /api/functions` takes to answer all F.
#
# The upstream's bodies are text of pseudo-random lowercase words (letters
# drawn by their frequency in English), which compresses about 1.8x: less
# than real JSON or prose, so disk figures are not flattered.
#
# Ratios are against the first N. cacheow runs on one core
# (BENCH_SERVER_CPU, default 0); wrk and the upstream nginx on the other
# (BENCH_CLIENT_CPU, default 1). Only 127.0.0.1 is used; every process
# started here is stopped on exit, and every wrk run is bounded in time.
#
# Usage: bench/scale.sh [--help]
# Environment (defaults in brackets):
#   SCALE_COUNTS ["1000 100000 1000000"]  the Ns, smallest first
#   SCALE_BODY_BYTES [4096]  SCALE_HOT [100]  SCALE_CONNECTIONS [16]
#   SCALE_SECONDS [8]  seconds per replay or mock row (after a 2 s warm-up)
#   SCALE_FUNCTIONS [10000x100]  the many-functions row; "" skips it
#   SCALE_PORT_BASE [39300]  three ports from here on
#   CACHEOW_BIN  use this binary instead of building
#                `cargo build --release -p cacheow-proxy`
#   RECORD_LOAD_BIN  use this record-load (tests/src/bin/record-load.rs)
#                instead of building it
#   BENCH_SERVER_CPU [0]  BENCH_CLIENT_CPU [1]
#   BENCH_OUT [bench/out]  where scale.md goes
#   BENCH_KEEP   keep the run directory (logs, configs, data dirs)
#   RUST_LOG [warn]
# Needs free disk of about 12 KiB per outcome for the largest N (and for
# the functions row).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

COUNTS=${SCALE_COUNTS:-1000 100000 1000000}
FUNCTIONS=${SCALE_FUNCTIONS-10000x100}
BODY_BYTES=${SCALE_BODY_BYTES:-4096}
HOT=${SCALE_HOT:-100}
CONNECTIONS=${SCALE_CONNECTIONS:-16}
SECONDS_PER_ROW=${SCALE_SECONDS:-8}
PORT_BASE=${SCALE_PORT_BASE:-39300}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
OUT_DIR=${BENCH_OUT:-$ROOT/bench/out}
export RUST_LOG=${RUST_LOG:-warn}

P_UPSTREAM=$PORT_BASE
P_MAIN=$((PORT_BASE + 1))
P_REVERSE=$((PORT_BASE + 2))

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

case "${1:-}" in
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) fail "unknown argument '$1' (try --help)" ;;
esac

# Internal: bash arithmetic and wrk's Lua need whole numbers in range.
for n in $COUNTS; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || fail "SCALE_COUNTS: '$n' is not a positive whole number"
done
((BODY_BYTES >= 64)) || fail "SCALE_BODY_BYTES must be at least 64"
if [[ -n $FUNCTIONS ]]; then
    [[ $FUNCTIONS =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] ||
        fail "SCALE_FUNCTIONS: '$FUNCTIONS' is not FxP (e.g. 10000x100)"
    F_COUNT=${BASH_REMATCH[1]} F_OUTCOMES=${BASH_REMATCH[2]}
fi

# rss_kib PID FIELD: VmRSS or VmHWM of the process, in KiB.
rss_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# wrk_row MODE COUNT SECONDS: one wrk run against the reverse listener;
# sets REQUESTS, DURATION_US and STATUS_ERRORS.
wrk_row() {
    local line
    line=$(SCALE_MODE=$1 SCALE_COUNT=$2 SCALE_HOT=$HOT \
        timeout "$(($3 + 60))" taskset -c "$CLIENT_CPU" \
        wrk -t 1 -c "$CONNECTIONS" -d "${3}s" --timeout 60s --latency -s "$HERE/routes.lua" \
        "http://127.0.0.1:$P_REVERSE" | grep '^bench-result') || fail "wrk ($1) failed"
    result_of "wrk ($1)" "$line"
}

# result_of LABEL LINE: sets REQUESTS, DURATION_US and STATUS_ERRORS from a
# bench-result line; fails on socket errors.
result_of() {
    local -A r=()
    local pair
    for pair in ${2#bench-result }; do r[${pair%%=*}]=${pair#*=}; done
    [[ -n ${r[requests]:-} ]] || fail "$1: no result line"
    ((r[socket_errors] == 0)) || fail "$1: ${r[socket_errors]} socket errors"
    REQUESTS=${r[requests]} DURATION_US=${r[duration_us]} STATUS_ERRORS=${r[status_errors]}
}

# record_row N [F]: records N distinct calls (over F functions); sets what
# result_of sets.
record_row() {
    local line
    line=$(timeout 36000 taskset -c "$CLIENT_CPU" "$RECORD_LOAD" --addr "127.0.0.1:$P_REVERSE" \
        --count "$1" --functions "${2:-1}" --connections "$CONNECTIONS" | grep '^bench-result') ||
        fail "record-load failed"
    result_of record-load "$line"
    ((STATUS_ERRORS == 0)) || fail "recording: $STATUS_ERRORS replies were not 200"
}

# per_second REQUESTS DURATION_US
per_second() { awk -v n="$1" -v us="$2" 'BEGIN { printf "%.0f", n * 1000000 / us }'; }

start_cacheow() {
    start_bg cacheow "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$P_MAIN" \
        --data-dir "$1" --reverse "127.0.0.1:$P_REVERSE=http://127.0.0.1:$P_UPSTREAM" \
        --default-mode default
}

# api_ready: bounded wait (15 min) for the control API; sets READY_SECONDS,
# the time it took since START_NS.
api_ready() {
    local i
    for ((i = 0; i < 45000; i++)); do
        if curl -fsS --noproxy '*' --max-time 1 -o /dev/null "http://127.0.0.1:$P_MAIN/api/info" 2>/dev/null; then
            READY_SECONDS=$(awk -v a="$START_NS" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
            return 0
        fi
        alive "${PID_OF[cacheow]}" || died cacheow
        sleep 0.02
    done
    fail "cacheow's API did not answer within 15 minutes"
}

# the_function: the id and outcome count of the one recorded function.
the_function() {
    api GET /api/functions | jq -r '.[] | select(.name | endswith("/item/{id}")) | "\(.id) \(.outcome_count)"'
}

# set_mode ID MODE
set_mode() {
    api POST "/api/functions/$1/mode" "{\"mode\":\"$2\"}" | jq -e --arg m "$2" '.mode == $m' >/dev/null ||
        fail "could not set function $1 to $2"
}

# check_source SOURCE: a sample of keys answers 200 from SOURCE.
check_source() {
    local key headers
    for key in 0 $(($1 - 1)); do
        headers=$(curl -sS --noproxy '*' --max-time 10 -o /dev/null -D - "http://127.0.0.1:$P_REVERSE/item/$key" | tr -d '\r') ||
            fail "GET /item/$key failed"
        grep -q '^HTTP/1.1 200' <<<"$headers" || fail "GET /item/$key: $(head -1 <<<"$headers")"
        grep -qix "x-cacheow-source: $2" <<<"$headers" || fail "GET /item/$key is not from $2: $headers"
    done
}

# measure_n N: appends one line of the table to ROWS, as "N start
# rss_start record hot uniform mock unseen rss_replay hwm_replay
# disk_per_outcome".
measure_n() {
    local n=$1 data=$WORK/data-$1 id count start rss0 rec hot uniform mock unseen rss1 hwm1 disk blocks function
    start_cacheow "$data"
    wait_line cacheow "reverse http://127.0.0.1:$P_REVERSE -> "
    say "N=$n: recording $n outcomes"
    record_row "$n"
    rec=$(per_second "$n" "$DURATION_US")
    function=$(the_function)
    read -r id count <<<"$function"
    [[ $count == "$n" ]] || fail "recorded ${count:-no} outcomes, expected $n ($REQUESTS requests)"
    say "N=$n: stopping (flushes the writer), then measuring the data dir"
    stop cacheow 600
    disk=$(du -sb "$data" | awk -v n="$n" '{ printf "%.0f", $1 / n }')
    blocks=$(du -sB1 "$data" | awk -v n="$n" '{ printf "%.0f", $1 / n }')

    START_NS=$(date +%s%N)
    start_cacheow "$data"
    api_ready
    start=$READY_SECONDS
    rss0=$(rss_kib "${PID_OF[cacheow]}" VmRSS)
    say "N=$n: API answered after ${start} s; replaying"
    set_mode "$id" cache
    check_source "$n" cache
    wrk_row hot "$n" 2
    wrk_row hot "$n" "$SECONDS_PER_ROW"
    hot=$(per_second "$REQUESTS" "$DURATION_US")
    wrk_row uniform "$n" "$SECONDS_PER_ROW"
    uniform=$(per_second "$REQUESTS" "$DURATION_US")
    set_mode "$id" mock
    check_source "$n" mock
    wrk_row hot "$n" "$SECONDS_PER_ROW"
    mock=$(per_second "$REQUESTS" "$DURATION_US")
    wrk_row unseen "$n" "$SECONDS_PER_ROW"
    unseen=$(per_second "$REQUESTS" "$DURATION_US")
    rss1=$(rss_kib "${PID_OF[cacheow]}" VmRSS)
    hwm1=$(rss_kib "${PID_OF[cacheow]}" VmHWM)
    stop cacheow 600
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$data"
    ROWS+=("$n $start $rss0 $rec $hot $uniform $mock $unseen $rss1 $hwm1 $disk $blocks")
}

# list_ms: the time GET /api/functions takes, in ms (best of three), and
# how many functions it listed; sets LIST_MS and LISTED.
list_ms() {
    local i t best=
    for i in 1 2 3; do
        t=$(curl -sS --noproxy '*' --max-time 60 -o "$WORK/functions.json" -w '%{time_total}' \
            "http://127.0.0.1:$P_MAIN/api/functions") || fail "GET /api/functions failed"
        best=$(awk -v a="${best:-$t}" -v b="$t" 'BEGIN { print (b < a ? b : a) }')
    done
    LIST_MS=$(awk -v s="$best" 'BEGIN { printf "%.1f", s * 1000 }')
    LISTED=$(jq length "$WORK/functions.json")
}

# measure_functions: the many-functions row, as "F P start rss_start
# list_ms".
measure_functions() {
    local data=$WORK/data-functions total=$((F_COUNT * F_OUTCOMES)) start rss0
    start_cacheow "$data"
    wait_line cacheow "reverse http://127.0.0.1:$P_REVERSE -> "
    say "$F_COUNT functions x $F_OUTCOMES outcomes: recording $total outcomes"
    record_row "$total" "$F_COUNT"
    stop cacheow 600
    START_NS=$(date +%s%N)
    start_cacheow "$data"
    api_ready
    start=$READY_SECONDS
    rss0=$(rss_kib "${PID_OF[cacheow]}" VmRSS)
    list_ms
    ((LISTED >= F_COUNT)) || fail "the API listed $LISTED functions, expected $F_COUNT"
    stop cacheow 600
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$data"
    FUNCTIONS_ROW="$F_COUNT $F_OUTCOMES $start $rss0 $LIST_MS"
}

ensure_tools
check_cpus
for port in "$P_UPSTREAM" "$P_MAIN" "$P_REVERSE"; do
    ! port_open "$port" || fail "127.0.0.1:$port is in use; set SCALE_PORT_BASE"
done
build_cacheow
RECORD_LOAD=$(test_bin record-load "${RECORD_LOAD_BIN:-}")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cacheow-scale.XXXXXX")
mkdir -p "$WORK/upstream-tmp" "$OUT_DIR"

# pad_text BYTES: pseudo-random lowercase words, letters by their English
# frequency, from a fixed seed (so every run serves the same bytes).
pad_text() {
    awk -v n="$1" 'BEGIN {
        srand(13)
        letters = "eeeeeeeeeeeetttttttttaaaaaaaaooooooooiiiiiiinnnnnnnsssssshhhhhhrrrrrrddddllllcccuuummwwffggyyppbbvk"
        while (length(text) < n) {
            word = ""
            for (len = 2 + int(rand() * 7); len > 0; len--) word = word substr(letters, 1 + int(rand() * length(letters)), 1)
            text = text word " "
        }
        printf "%s", substr(text, 1, n)
    }'
}
render "$HERE/site-items.conf.in" "$WORK/upstream-site.conf" PORT="$P_UPSTREAM" \
    BODY_BYTES="$BODY_BYTES" PAD="$(pad_text "$((BODY_BYTES - 40))")"
render "$HERE/nginx.conf.in" "$WORK/upstream.conf" RUN="$WORK" NAME=upstream SITE="$WORK/upstream-site.conf"
start_bg upstream "$CLIENT_CPU" nginx -p "$WORK/" -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log"
wait_port "$P_UPSTREAM" upstream

ROWS=()
for n in $COUNTS; do
    measure_n "$n"
done
FUNCTIONS_ROW=
[[ -z $FUNCTIONS ]] || measure_functions

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", (b > 0 ? a / b : 0) }'; }
report=$OUT_DIR/scale.md
{
    echo "# cacheow scale benchmark"
    echo
    echo "- command: $(env | grep -E '^(SCALE_|BENCH_|CACHEOW_BIN)' | sort | tr '\n' ' ')bench/scale.sh"
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem:/ { print $2 }') GiB"
    echo "- one function, \`GET /item/<i>\`, bodies of $BODY_BYTES bytes; wrk, $CONNECTIONS connections, $SECONDS_PER_ROW s per replay row; hot set $HOT keys"
    echo
    echo "| outcomes | start s | RSS start MiB | record/s | hot replay/s | uniform replay/s | mock/s | mock unseen/s | RSS after MiB | peak MiB | disk B/outcome (files) | disk B/outcome (blocks) |"
    echo "| --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |"
    for row in "${ROWS[@]}"; do
        read -r n start rss0 rec hot uniform mock unseen rss1 hwm1 disk blocks <<<"$row"
        echo "| $n | $start | $(mib "$rss0") | $rec | $hot | $uniform | $mock | $unseen | $(mib "$rss1") | $(mib "$hwm1") | $disk | $blocks |"
    done
    echo
    read -r _ _ _ rec0 hot0 uniform0 mock0 unseen0 _ <<<"${ROWS[0]}"
    echo "| outcomes | record / first | hot / first | uniform / first | mock / first | mock unseen / first |"
    echo "| --: | --: | --: | --: | --: | --: |"
    for row in "${ROWS[@]}"; do
        read -r n _ _ rec hot uniform mock unseen _ <<<"$row"
        echo "| $n | $(ratio "$rec" "$rec0") | $(ratio "$hot" "$hot0") | $(ratio "$uniform" "$uniform0") | $(ratio "$mock" "$mock0") | $(ratio "$unseen" "$unseen0") |"
    done
    if [[ -n $FUNCTIONS_ROW ]]; then
        read -r fc fo start rss0 list <<<"$FUNCTIONS_ROW"
        echo
        echo "| functions | outcomes each | start s | RSS start MiB | GET /api/functions ms |"
        echo "| --: | --: | --: | --: | --: |"
        echo "| $fc | $fo | $start | $(mib "$rss0") | $list |"
    fi
} >"$report"
cat "$report"
say "results written to $report"
