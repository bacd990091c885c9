#!/usr/bin/env bash
# cacheow benchmark (issue 2, item 8; DESIGN §8). Not a test: it measures and
# reports, side by side in one run, cacheow against nginx doing the same job:
#
#   pass-through  cacheow in default mode (recording) behind a reverse listener
#                 vs nginx proxy_pass with upstream keep-alive, both in front of
#                 the same upstream (an nginx serving the route files);
#   replay        cacheow in cache mode (reverse listener and forward proxy,
#                 upstream stopped) vs nginx serving the same bytes from files.
#   replay-tls    the same over TLS: cacheow replaying behind CONNECT with its
#                 own CA (the HTTPS_PROXY path) vs nginx serving the files over
#                 TLS. wrk cannot send CONNECT, so both rows of this group use
#                 tls-load (tests/src/bin/tls-load.rs: rustls on ring, HTTP/1.1
#                 keep-alive, the same connections and result line as wrk).
#
# Every server under test is pinned to one core (BENCH_SERVER_CPU, default 0);
# wrk runs on the other (BENCH_CLIENT_CPU, default 1), and so does the upstream
# during the pass-through rows, so it never takes the server's core. Only
# 127.0.0.1 is used; every process started here is stopped on exit.
#
# Usage: bench/run.sh [--reference-only] [--help]
#   --reference-only   run only the nginx rows (no cacheow build or rows)
# Environment (defaults in brackets):
#   CACHEOW_BIN        use this binary instead of building
#                      `cargo build --release -p cacheow-proxy`
#   TLS_LOAD_BIN       use this tls-load instead of building
#                      `cargo build --release -p cacheow-tests --bin tls-load`
#   BENCH_SECONDS [10] measured seconds per row   BENCH_WARMUP [2] unmeasured
#   BENCH_ROUNDS [1]   rounds; the table shows the median of each figure
#   BENCH_CONNECTIONS [64]  BENCH_THREADS [1] (wrk threads, all on one core)
#   BENCH_ROUTE_COUNT [10]  BENCH_BODY_BYTES [1024]
#   BENCH_PORT_BASE [39100] seven ports from here on
#   BENCH_SERVER_CPU [0]    BENCH_CLIENT_CPU [1]
#   BENCH_OUT [bench/out]   where results.md goes
#   BENCH_KEEP              keep the run directory (logs, configs, data dir)
#   RUST_LOG [warn]         cacheow's log filter (nginx runs with access_log off)
# Results: printed, and written as markdown to $BENCH_OUT/results.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

SECONDS_PER_ROW=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
ROUTE_COUNT=${BENCH_ROUTE_COUNT:-10}
BODY_BYTES=${BENCH_BODY_BYTES:-1024}
PORT_BASE=${BENCH_PORT_BASE:-39100}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
OUT_DIR=${BENCH_OUT:-$ROOT/bench/out}
export RUST_LOG=${RUST_LOG:-warn}

# Targets from issue 2: cacheow / nginx ratios per group. The first row
# measured in a group is that group's reference.
MIN_RPS_REPLAY=0.95
MAX_P99_REPLAY=1.5
MIN_RPS_PASS=1.0

P_UPSTREAM=$PORT_BASE
P_STATIC=$((PORT_BASE + 1))
P_PROXY=$((PORT_BASE + 2))
P_MAIN=$((PORT_BASE + 3))
P_REVERSE=$((PORT_BASE + 4))
P_TLS_STATIC=$((PORT_BASE + 5))
P_TLS_UPSTREAM=$((PORT_BASE + 6))
UPSTREAM="http://127.0.0.1:$P_UPSTREAM"

WITH_CACHEOW=true
ROUND=0
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

case "${1:-}" in
    "") ;;
    --reference-only) WITH_CACHEOW=false ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) fail "unknown argument '$1' (try --help)" ;;
esac

trap cleanup EXIT
trap 'exit 130' INT TERM

# === set-up ===

check_ports() {
    local port
    for port in "$P_UPSTREAM" "$P_STATIC" "$P_PROXY" "$P_MAIN" "$P_REVERSE" "$P_TLS_STATIC" "$P_TLS_UPSTREAM"; do
        ! port_open "$port" || fail "127.0.0.1:$port is in use; set BENCH_PORT_BASE"
    done
}


# make_certs: a throwaway CA and an ECDSA P-256 leaf for 127.0.0.1 (the key
# type cacheow mints), for the TLS nginx instances; cacheow trusts the CA
# upstream with --upstream-ca.
make_certs() {
    local dir=$WORK/tls
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=cacheow-bench-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null ||
        fail "openssl could not make the bench CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
        -keyout "$dir/leaf.key" -out "$dir/leaf.csr" 2>/dev/null || fail "openssl could not make the leaf key"
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$dir/leaf.ext"
    openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -extfile "$dir/leaf.ext" -out "$dir/leaf.pem" 2>/dev/null || fail "openssl could not sign the leaf"
    chmod -R a+rX "$dir"
}

# make_body INDEX: a compact JSON document of exactly BODY_BYTES bytes.
make_body() {
    local i=$1 k json pad
    json=$(printf '{"route":"/bench/route-%02d","index":%d,"items":[' "$i" "$i")
    for ((k = 1; k <= 6; k++)); do
        if ((k > 1)); then json+=","; fi
        json+=$(printf '{"id":%d,"sku":"R%02d-%04d","name":"item %d of route %d","price":%d.%02d,"in_stock":%s}' \
            "$((i * 100 + k))" "$i" "$k" "$k" "$i" "$((k * 3 + i))" "$((k * 7 % 100))" \
            "$([[ $((k % 3)) == 0 ]] && echo false || echo true)")
    done
    json+='],"padding":"'
    pad=$((BODY_BYTES - ${#json} - 2))
    ((pad >= 0)) || fail "BENCH_BODY_BYTES=$BODY_BYTES is smaller than the JSON skeleton"
    printf '%s%s"}' "$json" "$(head -c "$pad" /dev/zero | tr '\0' x)"
}

make_routes() {
    local i path
    DOCROOT=$WORK/docroot
    mkdir -p "$DOCROOT/bench"
    ROUTE_PATHS=""
    for ((i = 0; i < ROUTE_COUNT; i++)); do
        path=$(printf '/bench/route-%02d' "$i")
        make_body "$i" >"$DOCROOT$path"
        [[ $(wc -c <"$DOCROOT$path") == "$BODY_BYTES" ]] || fail "$path is not $BODY_BYTES bytes"
        jq -e . "$DOCROOT$path" >/dev/null || fail "$path is not valid JSON"
        ROUTE_PATHS+="$path "
    done
    chmod -R a+rX "$WORK"
}

# start_nginx NAME CPU SITE_TEMPLATE PORT: a foreground nginx with one worker.
start_nginx() {
    local name=$1 cpu=$2 site=$3 port=$4
    mkdir -p "$WORK/$name-tmp"
    render "$HERE/$site" "$WORK/$name-site.conf" \
        PORT="$port" DOCROOT="$DOCROOT" UPSTREAM_PORT="$P_UPSTREAM" \
        CERT="$WORK/tls/leaf.pem" KEY="$WORK/tls/leaf.key"
    render "$HERE/nginx.conf.in" "$WORK/$name.conf" \
        RUN="$WORK" NAME="$name" SITE="$WORK/$name-site.conf"
    start_bg "$name" "$cpu" nginx -p "$WORK/" -c "$WORK/$name.conf" -e "$WORK/$name-error.log"
    wait_port "$port" "$name"
}

start_cacheow() {
    start_bg cacheow "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$P_MAIN" \
        --data-dir "$WORK/data" --reverse "127.0.0.1:$P_REVERSE=$UPSTREAM" --default-mode default \
        --upstream-ca "$WORK/tls/ca.pem"
    wait_line cacheow "listening on http://127.0.0.1:$P_MAIN"
    wait_line cacheow "reverse http://127.0.0.1:$P_REVERSE -> "
}

# === cacheow control ===

# set_modes MODE [HOST]: put every function of the upstream (or of HOST,
# host:port) in MODE.
set_modes() {
    local mode=$1 host=${2:-127.0.0.1:$P_UPSTREAM} ids id n=0
    ids=$(api GET /api/functions |
        jq -r --arg host "$host" '.[] | select(.http.host == $host) | .id')
    for id in $ids; do
        api POST "/api/functions/$id/mode" "{\"mode\":\"$mode\"}" | jq -e --arg m "$mode" '.mode == $m' >/dev/null ||
            fail "could not set function $id to $mode"
        n=$((n + 1))
    done
    [[ $mode == default || $n -gt 0 ]] || fail "no functions recorded for $host"
    say "set $n functions to $mode"
}

# check_routes LABEL SOURCE URL_BASE [CURL_ARGS...]: every route answers 200
# with the exact bytes of its file and, when SOURCE is set, with
# x-cacheow-source: SOURCE. In default mode this also records (primes) them.
check_routes() {
    local label=$1 source=$2 base=$3 path code
    shift 3
    for path in $ROUTE_PATHS; do
        code=$(curl -sS --max-time 5 "$@" -o "$WORK/check.body" -D "$WORK/check.headers" \
            -w '%{http_code}' "$base$path") || fail "$label $path: request failed"
        [[ $code == 200 ]] || fail "$label $path: HTTP $code"
        cmp -s "$WORK/check.body" "$DOCROOT$path" || fail "$label $path: body differs from $DOCROOT$path"
        [[ -z $source ]] || tr -d '\r' <"$WORK/check.headers" | grep -qix "x-cacheow-source: $source" ||
            fail "$label $path: expected x-cacheow-source: $source; headers: $(tr -d '\r' <"$WORK/check.headers")"
    done
}

check_reverse() { check_routes cacheow-reverse "$1" "http://127.0.0.1:$P_REVERSE" --noproxy '*'; }
check_forward() { check_routes cacheow-forward "$1" "$UPSTREAM" --noproxy '' -x "http://127.0.0.1:$P_MAIN"; }
check_connect() {
    check_routes cacheow-connect "$1" "https://127.0.0.1:$P_TLS_UPSTREAM" --noproxy '' \
        -x "http://127.0.0.1:$P_MAIN" --cacert "$WORK/data/ca/cacheow-ca.pem"
}

# === measuring ===

# run_wrk SECONDS URL PREFIX HOST: wrk on the client core, bounded by timeout.
# An https:// URL runs tls-load instead (see the replay-tls group), with
# PREFIX, when set, as the target it asks the proxy at URL to CONNECT to.
run_wrk() {
    if [[ $2 == https://* ]]; then
        local addr=${2#https://} ca=$WORK/tls/ca.pem
        local -a connect=()
        if [[ -n $3 ]]; then
            connect=(--connect "$3")
            ca=$WORK/data/ca/cacheow-ca.pem
        fi
        # shellcheck disable=SC2086 # the route list is meant to split
        timeout "$(($1 + 30))" taskset -c "$CLIENT_CPU" "$TLS_LOAD" --addr "${addr%/}" "${connect[@]}" \
            --name 127.0.0.1 --ca "$ca" --host "${4:-${addr%/}}" --connections "$CONNECTIONS" \
            --seconds "$1" $ROUTE_PATHS
        return
    fi
    BENCH_ROUTES=$ROUTE_PATHS BENCH_PREFIX=$3 BENCH_HOST=$4 \
        timeout "$(($1 + 30))" taskset -c "$CLIENT_CPU" \
        wrk -t "$THREADS" -c "$CONNECTIONS" -d "${1}s" --latency -s "$HERE/routes.lua" "$2"
}

# measure GROUP ROW URL PREFIX HOST SERVER: one row. wrk connects to URL and
# sends PREFIX+path (PREFIX non-empty = absolute-form, for a forward proxy)
# with Host HOST (empty = URL's). SERVER names the process under test, whose
# CPU use (with its children) is reported. Adding a row is one call of this.
measure() {
    local group=$1 row=$2 url=$3 prefix=$4 host=$5 server=$6
    local log="$WORK/wrk-$row-$ROUND.log" line pair ns0 ns1 p0 p1 s0 s1 t0 t1 c0 c1 u0 u1 pids
    local -A r=()
    settle
    run_wrk "$WARMUP" "$url" "$prefix" "$host" >"$WORK/wrk-$row-$ROUND-warmup.log"
    pids="${PID_OF[$server]} $(pgrep -P "${PID_OF[$server]}" | tr "\n" " " || true)"
    # shellcheck disable=SC2086 # the pid list is meant to split
    p0=$(proc_ticks $pids)
    read -r s0 t0 < <(core_ticks "$SERVER_CPU")
    read -r c0 u0 < <(core_ticks "$CLIENT_CPU")
    ns0=$(date +%s%N)
    run_wrk "$SECONDS_PER_ROW" "$url" "$prefix" "$host" >"$log"
    ns1=$(date +%s%N)
    # shellcheck disable=SC2086
    p1=$(proc_ticks $pids)
    read -r s1 t1 < <(core_ticks "$SERVER_CPU")
    read -r c1 u1 < <(core_ticks "$CLIENT_CPU")
    line=$(grep '^bench-result ' "$log") || fail "no result from wrk for $row; see $log"
    for pair in ${line#bench-result }; do
        r[${pair%%=*}]=${pair#*=}
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$group" "$row" \
        "${r[requests]}" "${r[duration_us]}" "${r[p50_us]}" "${r[p99_us]}" \
        "$((r[socket_errors] + r[status_errors]))" \
        "$(awk -v d="$((p1 - p0))" -v hz="$CLK_TCK" -v ns="$((ns1 - ns0))" 'BEGIN { printf "%.0f", d / hz / (ns / 1e9) * 100 }')" \
        "$(((s1 - s0) * 100 / (t1 - t0)))" "$(((c1 - c0) * 100 / (u1 - u0)))" >>"$WORK/rows.tsv"
    say "round $ROUND $group $row: $(awk -v n="${r[requests]}" -v d="${r[duration_us]}" 'BEGIN { printf "%.0f", n / (d / 1e6) }') req/s, p50 ${r[p50_us]} us, p99 ${r[p99_us]} us, errors $((r[socket_errors] + r[status_errors]))"
}

# === report ===

facts() {
    printf 'command: %s\n' "$COMMAND"
    printf 'date: %s; commit: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    printf 'machine: %s, %s cores, Linux %s; load average at start %s\n' \
        "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$(nproc --all)" "$(uname -r)" "$LOAD_AT_START"
    printf 'tools: %s; %s; %s\n' "$(nginx -v 2>&1)" "$({ wrk -v 2>&1 || true; } | head -n1 | cut -d' ' -f1-2)" \
        "$($WITH_CACHEOW && "$BIN" --version 2>/dev/null || echo "cacheow not run")"
    printf 'load: wrk, %s thread(s), %s keep-alive connections, %s s per row after %s s warm-up, %s round(s) (medians shown); %s routes of %s-byte JSON, cycled\n' \
        "$THREADS" "$CONNECTIONS" "$SECONDS_PER_ROW" "$WARMUP" "$ROUNDS" "$ROUTE_COUNT" "$BODY_BYTES"
    printf 'replay-tls rows: tls-load (rustls, ring) on core %s instead of wrk, which cannot CONNECT; TLS 1.3, ECDSA P-256 leaves on both servers, HTTP/1.1 keep-alive\n' "$CLIENT_CPU"
    printf 'pinning: server under test on core %s (alone); wrk on core %s, shared during pass-through rows with the upstream nginx (stopped during replay rows)\n' \
        "$SERVER_CPU" "$CLIENT_CPU"
    printf 'setup: nginx 1 worker, access_log off, open_file_cache, keepalive_requests 1000000; cacheow RUST_LOG=%s, fresh data dir\n' "$RUST_LOG"
    if $WITH_CACHEOW; then
        printf 'cacheow memory: peak RSS (VmHWM) %s, RSS at end %s; data dir %s after the run\n' \
            "$CACHEOW_HWM" "$CACHEOW_RSS" "$CACHEOW_DISK"
    fi
}

# summarize MD_FILE: print the tables and write them, with the facts, as markdown.
summarize() {
    local md=$1
    {
        printf '# cacheow benchmark results\n\n'
        facts | sed 's/^/- /'
        printf '\n## Rows\n\n'
    } >"$md"
    printf '\n'
    facts | sed 's/^/  /'
    printf '\n'
    awk -F'\t' -v md="$md" -v s="$SERVER_CPU" -v c="$CLIENT_CPU" \
        -v min_replay="$MIN_RPS_REPLAY" -v max_p99_replay="$MAX_P99_REPLAY" -v min_pass="$MIN_RPS_PASS" '
        function median(name, key, n,   i, j, v, a) {
            for (i = 1; i <= n; i++) {
                v = val[name, key, i]
                for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
                a[j + 1] = v
            }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        # out and cmp print one row to the terminal and to the markdown file;
        # a row starting with "---" is the markdown header separator only.
        function out(t1, t2, t3, t4, t5, t6, t7, t8, t9, t10) {
            if (t1 != "---")
                printf "%-13s %-17s %9s %8s %8s %8s %8s %7s %7s %6s\n", t1, t2, t3, t4, t5, t6, t7, t8, t9, t10
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t1, t2, t3, t4, t5, t6, t7, t8, t9, t10 >> md
        }
        function cmp(t1, t2, t3, t4, t5, t6, t7) {
            if (t1 != "---")
                printf "  %-34s %-8s %-9s %-7s %-9s %-11s %s\n", t1, t2, t3, t4, t5, t6, t7
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", t1, t2, t3, t4, t5, t6, t7 >> md
        }
        function note(text) {
            print text
            printf "\n%s\n", text >> md
        }
        {
            key = $1 SUBSEP $2
            if (!(key in count)) { order[++rows] = key; group[rows] = $1; name[rows] = $2 }
            if (!($1 in ref)) ref[$1] = key
            k = ++count[key]
            val["rps", key, k] = $3 / ($4 / 1e6)
            val["p50", key, k] = $5 / 1000
            val["p99", key, k] = $6 / 1000
            val["srv", key, k] = $8; val["c0", key, k] = $9; val["c1", key, k] = $10
            val["cost", key, k] = $8 / 100 * $4 / $3
            errors[key] += $7
        }
        END {
            min_rps["replay"] = min_replay; max_p99["replay"] = max_p99_replay
            min_rps["pass-through"] = min_pass
            out("group", "row", "req/s", "p50 ms", "p99 ms", "srv CPU", "CPU us/req", "core " s, "core " c, "errors")
            out("---", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:")
            for (i = 1; i <= rows; i++) {
                key = order[i]
                rps[key] = median("rps", key, count[key]); p99[key] = median("p99", key, count[key])
                cost[key] = median("cost", key, count[key])
                out(group[i], name[i], sprintf("%.0f", rps[key]), sprintf("%.3f", median("p50", key, count[key])),
                    sprintf("%.3f", p99[key]), sprintf("%.0f%%", median("srv", key, count[key])),
                    sprintf("%.2f", cost[key]),
                    sprintf("%.0f%%", median("c0", key, count[key])), sprintf("%.0f%%", median("c1", key, count[key])), errors[key])
                if (median("c1", key, count[key]) >= 95) saturated = saturated " " name[i]
                if (median("c0", key, count[key]) - median("srv", key, count[key]) > 5) crowded = crowded " " name[i]
            }
            if (saturated != "")
                note("note: core " c " (load generator) was >= 95% busy for:" saturated \
                    "; req/s there may be bounded by the client side as much as by the server;" \
                    " CPU us/req (server CPU time per request) compares the servers regardless")
            if (crowded != "")
                note("note: core " s " was > 5 points busier than the server under test for:" crowded \
                    "; something else ran on the server core, so treat those rows with care")
            compared = 0
            for (i = 1; i <= rows; i++) {
                key = order[i]; g = group[i]; r = ref[g]
                if (key == r) continue
                if (!compared++) {
                    print "\nratios (row / reference of its group) and targets from issue 2:"
                    printf "\n## Ratios (row / reference of its group), targets from issue 2\n\n" >> md
                    cmp("comparison", "req/s", "target", "p99", "target", "CPU us/req", "verdict")
                    cmp("---", "--:", "---", "--:", "---", "--:", "---")
                }
                ratio = rps[key] / rps[r]; p99r = p99[key] / p99[r]
                verdict = ""
                if (errors[key] + errors[r] > 0) verdict = "INVALID: errors during the run"
                else if (!(g in min_rps) && !(g in max_p99)) verdict = "no target (ratio reported)"
                else {
                    if (g in min_rps && ratio < min_rps[g])
                        verdict = sprintf("MISSED req/s by %.1f%%", (min_rps[g] - ratio) / min_rps[g] * 100)
                    if (g in max_p99 && p99r > max_p99[g])
                        verdict = verdict (verdict == "" ? "" : "; ") sprintf("MISSED p99 by %.1f%%", (p99r - max_p99[g]) / max_p99[g] * 100)
                    if (verdict == "") verdict = "met"
                }
                split(r, rn, SUBSEP)
                cmp(name[i] " / " rn[2], sprintf("%.3fx", ratio), (g in min_rps) ? sprintf(">= %.2fx", min_rps[g]) : "-",
                    sprintf("%.2fx", p99r), (g in max_p99) ? sprintf("<= %.2fx", max_p99[g]) : "-",
                    sprintf("%.2fx", cost[key] / cost[r]), verdict)
            }
            if (!compared) note("no rows to compare with a reference")
        }' "$WORK/rows.tsv"
    printf '\nresults written to %s\n' "$md"
}

# === main ===

COMMAND="$(env | { grep -E '^(BENCH_[A-Z_]+|CACHEOW_BIN|TLS_LOAD_BIN)=' || true; } | sort | tr '\n' ' ')bench/run.sh${1:+ $1}"
LOAD_AT_START=$(cut -d' ' -f1 /proc/loadavg)
CLK_TCK=$(getconf CLK_TCK)
ensure_tools
check_cpus
check_ports
if $WITH_CACHEOW; then build_cacheow; fi
TLS_LOAD=$(test_bin tls-load "${TLS_LOAD_BIN:-}")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cacheow-bench.XXXXXX")
make_routes
make_certs
say "run directory $WORK; $ROUTE_COUNT routes of $BODY_BYTES bytes"

start_nginx nginx-static "$SERVER_CPU" site-static.conf.in "$P_STATIC"
start_nginx nginx-proxy "$SERVER_CPU" site-proxy.conf.in "$P_PROXY"
start_nginx nginx-tls "$SERVER_CPU" site-tls.conf.in "$P_TLS_STATIC"
check_routes nginx-static "" "http://127.0.0.1:$P_STATIC" --noproxy '*'
check_routes nginx-tls "" "https://127.0.0.1:$P_TLS_STATIC" --noproxy '*' --cacert "$WORK/tls/ca.pem"
if $WITH_CACHEOW; then start_cacheow; fi

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    # (b) recording pass-through; the upstream shares the client core.
    start_nginx upstream "$CLIENT_CPU" site-static.conf.in "$P_UPSTREAM"
    check_routes nginx-proxy_pass "" "http://127.0.0.1:$P_PROXY" --noproxy '*'
    measure pass-through nginx-proxy_pass "http://127.0.0.1:$P_PROXY" "" "" nginx-proxy
    if $WITH_CACHEOW; then
        set_modes default
        check_reverse upstream # records every route (primes the store) ...
        check_forward upstream # ... through both listeners
        measure pass-through cacheow-default "http://127.0.0.1:$P_REVERSE" "" "" cacheow
    fi
    # (a) replay, with the upstream stopped so nothing can reach it.
    stop upstream
    if $WITH_CACHEOW; then
        set_modes cache
        check_reverse cache
        check_forward cache
    fi
    measure replay nginx-static "http://127.0.0.1:$P_STATIC" "" "" nginx-static
    if $WITH_CACHEOW; then
        measure replay cacheow-reverse "http://127.0.0.1:$P_REVERSE" "" "" cacheow
        measure replay cacheow-forward "http://127.0.0.1:$P_MAIN" "$UPSTREAM" "127.0.0.1:$P_UPSTREAM" cacheow
    fi
    # (c) replay over TLS. The TLS upstream runs once, only to record.
    if $WITH_CACHEOW && ((ROUND == 1)); then
        start_nginx upstream-tls "$CLIENT_CPU" site-tls.conf.in "$P_TLS_UPSTREAM"
        check_connect upstream
        set_modes cache "127.0.0.1:$P_TLS_UPSTREAM"
        stop upstream-tls
        check_connect cache
    fi
    measure replay-tls nginx-tls "https://127.0.0.1:$P_TLS_STATIC" "" "" nginx-tls
    if $WITH_CACHEOW; then
        measure replay-tls cacheow-connect "https://127.0.0.1:$P_MAIN" "127.0.0.1:$P_TLS_UPSTREAM" \
            "127.0.0.1:$P_TLS_UPSTREAM" cacheow
    fi
done

if $WITH_CACHEOW; then
    CACHEOW_HWM=$(awk '/^VmHWM:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/${PID_OF[cacheow]}/status")
    CACHEOW_RSS=$(awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/${PID_OF[cacheow]}/status")
    CACHEOW_DISK=$({ du -sh "$WORK/data" 2>/dev/null || echo missing; } | cut -f1)
fi
mkdir -p "$OUT_DIR"
summarize "$OUT_DIR/results.md"
