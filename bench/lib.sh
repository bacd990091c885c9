# Shell helpers shared by bench/run.sh and bench/scale.sh: processes pinned
# to a core and stopped on exit, bounded waits, tools, the cacheow binary,
# templates and the control API. Sourced, not run. The sourcing script sets
# ROOT, SERVER_CPU, CLIENT_CPU and P_MAIN (the cacheow main port), sets WORK
# (its run directory) before starting anything, and traps EXIT to `cleanup`.

WORK=""
declare -A PID_OF=()

say() { printf 'bench: %s\n' "$*"; }

fail() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
    local stat
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# start_bg NAME CPU COMMAND...: run COMMAND pinned to CPU, output to NAME.out.
start_bg() {
    local name=$1 cpu=$2
    shift 2
    # Internal: emptied here, not by the background redirect, which may
    # run after a wait_line that would then read the previous run's lines.
    : >"$WORK/$name.out"
    taskset -c "$cpu" "$@" </dev/null >>"$WORK/$name.out" 2>&1 &
    PID_OF[$name]=$!
}

# stop NAME [SECONDS]: TERM, up to SECONDS (5) to exit, then KILL (with its
# children).
stop() {
    local name=$1 pid=${PID_OF[$1]:-} children i
    [[ -n $pid ]] || return 0
    unset 'PID_OF[$name]'
    children=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < ${2:-5} * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    # shellcheck disable=SC2086 # word splitting of the pid list is intended
    kill -KILL "$pid" $children 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? name
    for name in "${!PID_OF[@]}"; do
        stop "$name"
    done
    [[ -n $WORK ]] || return 0
    if ((rc == 0)) && [[ -z ${BENCH_KEEP:-} ]]; then
        rm -rf "$WORK"
    else
        printf 'bench: run directory kept: %s\n' "$WORK" >&2
    fi
}

# died NAME: fail with the tail of NAME's output.
died() {
    fail "$1 exited early; last lines of $WORK/$1.out:
$(tail -n 20 "$WORK/$1.out" 2>/dev/null)"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT NAME: bounded wait (10 s) for NAME to accept on PORT.
wait_port() {
    local i
    for ((i = 0; i < 200; i++)); do
        port_open "$1" && return 0
        alive "${PID_OF[$2]}" || died "$2"
        sleep 0.05
    done
    fail "$2 does not accept connections on 127.0.0.1:$1 after 10 s"
}

# wait_line NAME TEXT: bounded wait (20 s) for TEXT in NAME's output.
wait_line() {
    local i
    for ((i = 0; i < 400; i++)); do
        grep -qF -- "$2" "$WORK/$1.out" && return 0
        alive "${PID_OF[$1]}" || died "$1"
        sleep 0.05
    done
    fail "$1 did not print '$2' within 20 s; see $WORK/$1.out"
}

ensure_tools() {
    local -A package_of=([wrk]=wrk [nginx]=nginx [jq]=jq [curl]=curl [openssl]=openssl
        [taskset]=util-linux [pgrep]=procps)
    local tool missing=()
    for tool in "${!package_of[@]}"; do
        command -v "$tool" >/dev/null || missing+=("${package_of[$tool]}")
    done
    ((${#missing[@]} == 0)) && return 0
    ((EUID == 0)) || fail "missing packages: ${missing[*]} (install them, or run as root)"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

check_cpus() {
    [[ $SERVER_CPU != "$CLIENT_CPU" ]] || fail "BENCH_SERVER_CPU and BENCH_CLIENT_CPU must differ"
    taskset -c "$SERVER_CPU" true 2>/dev/null || fail "cannot pin to CPU $SERVER_CPU"
    taskset -c "$CLIENT_CPU" true 2>/dev/null || fail "cannot pin to CPU $CLIENT_CPU"
}

build_cacheow() {
    if [[ -n ${CACHEOW_BIN:-} ]]; then
        BIN=$CACHEOW_BIN
    else
        say "building: cargo build --release -p cacheow-proxy"
        (cd "$ROOT" && cargo build --release -p cacheow-proxy)
        BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cacheow
    fi
    [[ -x $BIN ]] || fail "no cacheow binary at $BIN"
}

# test_bin NAME OVERRIDE: prints the path of cacheow-tests' load tool NAME,
# built in release unless OVERRIDE names a binary.
test_bin() {
    local path=$2
    if [[ -z $path ]]; then
        say "building: cargo build --release -p cacheow-tests --bin $1" >&2
        (cd "$ROOT" && cargo build --release -p cacheow-tests --bin "$1") >&2
        path=${CARGO_TARGET_DIR:-$ROOT/target}/release/$1
    fi
    [[ -x $path ]] || fail "no $1 binary at $path"
    echo "$path"
}

# render TEMPLATE OUT KEY=VALUE...: replace each @KEY@, drop comment lines,
# and refuse to leave a placeholder unreplaced.
render() {
    local template=$1 out=$2 pair
    local -a args=(-e '/^[[:space:]]*#/d')
    shift 2
    for pair in "$@"; do
        args+=(-e "s|@${pair%%=*}@|${pair#*=}|g")
    done
    sed "${args[@]}" "$template" >"$out"
    ! grep -n '@[A-Z_]*@' "$out" || fail "unreplaced placeholder in $out"
}

# api METHOD PATH [JSON]: one control API call on the main listener.
api() {
    local -a body=()
    [[ -z ${3:-} ]] || body=(-H 'content-type: application/json' --data "$3")
    curl -fsS --noproxy '*' --max-time 10 -X "$1" "${body[@]}" "http://127.0.0.1:$P_MAIN$2"
}

# proc_ticks PID...: user+system clock ticks of the processes (all threads).
proc_ticks() {
    local pid stat total=0
    local -a f
    for pid in "$@"; do
        read -r stat <"/proc/$pid/stat"
        read -ra f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# core_ticks CPU: "busy total" clock ticks of one core from /proc/stat.
core_ticks() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

# settle: bounded wait (20 s) until the server core is idle, so a row does not
# start while cacheow's background writer or anything else still works there.
settle() {
    local i b0 t0 b1 t1
    for ((i = 0; i < 40; i++)); do
        read -r b0 t0 < <(core_ticks "$SERVER_CPU")
        sleep 0.5
        read -r b1 t1 < <(core_ticks "$SERVER_CPU")
        (((b1 - b0) * 100 <= 5 * (t1 - t0))) && return 0
    done
    say "warning: core $SERVER_CPU still busy after 20 s; measuring anyway"
}
