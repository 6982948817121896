#!/usr/bin/env bash
# bench/baselines/run.sh: starts and stops the calibration baselines the benchmark
# measures next to perfcgi, all behind one minimal Nginx on 127.0.0.1:PORT:
#
#   /baseline/return-200          Nginx answering by itself
#   /baseline/libfcgi-loop        build/bench/fcgi-loop, 2·cores+1 processes (perfcgi's sync `auto`)
#   /baseline/nonblocking-fcgi    build/bench/fcgi-nonblocking, cores·4 processes (event `auto`),
#                                 with kept-alive FastCGI connections
#   /baseline/memory-reuse?mb=10  build/bench/fcgi-memory-reuse, 2·cores+1 processes: /memory-test
#                                 from one block per process kept and reused, never returned
#   /baseline/memory-fresh?mb=10  build/bench/fcgi-memory-fresh, 2·cores+1 processes: /memory-test
#                                 from a fresh block each time, returned (perfcgi's work)
#
# With BENCH_PERFCGI_SOCKET (perfcgi's FastCGI socket, unix:/abs/path.sock or HOST:PORT),
# the same Nginx also fronts that perfcgi, whole, on two more ports: BENCH_PERFCGI_PORT
# with a connection per request (as the stack fronts the sync and thread classes) and
# BENCH_PERFCGI_KEPT_PORT with kept-alive connections (as it fronts the event class).
#
# Usage: bench/baselines/run.sh start RUN_DIR PORT    (waits until all of them answer 200)
#        bench/baselines/run.sh stop RUN_DIR [PORT]   (waits until all have exited)
#
# It builds nothing: `make bench-bins` first. In RUN_DIR: fcgi-loop.{pid,sock,log},
# fcgi-nonblocking.{pid,sock,log}, fcgi-memory-{reuse,fresh}.{pid,sock,log},
# baseline-nginx.{conf,pid}, perfcgi-fronts.conf and baseline-nginx-error.log.
# Environment (optional): BENCH_LOOP_PROCESSES (fcgi-loop and both fcgi-memory-*),
# BENCH_NB_PROCESSES (defaults above), BENCH_PERFCGI_SOCKET and its two ports (above),
# BENCH_NGINX_WORKERS (Nginx worker_processes, default auto as the stack's Nginx).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN_DIR=$REPO/build/bench
START_TIMEOUT=10
STOP_TIMEOUT=10
# envsubst replaces only these, so Nginx's own $variables survive the rendering.
# shellcheck disable=SC2016 # the names themselves, not their values
NGINX_VARS='${BENCH_PORT} ${BENCH_RUN_DIR} ${BENCH_LOOP_SOCKET} ${BENCH_NB_SOCKET} ${BENCH_MEMORY_SOCKET} ${BENCH_MEMORY_FRESH_SOCKET} ${BENCH_NGINX_WORKERS} ${BENCH_NGINX_USER_DIRECTIVE}'
# shellcheck disable=SC2016 # the names themselves, not their values
FRONT_VARS='${BENCH_PERFCGI_SOCKET} ${BENCH_PERFCGI_PORT} ${BENCH_PERFCGI_KEPT_PORT}'
# The URL paths, each served by one of the processes above.
PATHS=(/baseline/return-200 /baseline/libfcgi-loop /baseline/nonblocking-fcgi '/baseline/memory-reuse?mb=10'
    '/baseline/memory-fresh?mb=10')
PROGRAMS=(fcgi-loop fcgi-nonblocking fcgi-memory-reuse fcgi-memory-fresh)

say() { printf 'baselines: %s\n' "$*"; }
die() {
    printf 'baselines: %s\n' "$*" >&2
    exit 1
}
usage() {
    printf 'usage: %s start RUN_DIR PORT | stop RUN_DIR [PORT]\n' "$0" >&2
    exit 2
}

# PIDFILE PROGRAM: the pid it holds, if that process runs PROGRAM (the kernel keeps
# 15 characters of a command name); fails otherwise.
running_pid() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$(head -n 1 "$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${2:0:15}" ]] || return 1
    printf '%s\n' "$pid"
}

# PIDFILE PROGRAM: TERM, then KILL of its whole session after STOP_TIMEOUT seconds.
stop_one() {
    local pid waited=0
    if ! pid=$(running_pid "$1" "$2"); then
        rm -f "$1"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited == STOP_TIMEOUT * 10)); then
            say "$2 (pid $pid) still runs ${STOP_TIMEOUT}s after TERM: sending KILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        ((waited > STOP_TIMEOUT * 10 + 50)) && die "$2 (pid $pid) survived KILL"
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$1"
    say "stopped $2 (pid $pid)"
}

stop_all() {
    stop_one "$RUN_DIR/baseline-nginx.pid" nginx
    local program
    for program in "${PROGRAMS[@]}"; do
        stop_one "$RUN_DIR/$program.pid" "$program"
        rm -f "$RUN_DIR/$program.sock"
    done
}

# [--log FILE] MESSAGE: the end of FILE, then MESSAGE; everything started so far is
# stopped again, so a failed start leaves nothing behind.
fail_start() {
    if [[ $1 == --log ]]; then
        tail -n 5 "$2" >&2 2>/dev/null || true
        shift 2
    fi
    stop_all >/dev/null
    die "$@"
}

# PROGRAM PROCESSES: started in its own session (no terminal signal reaches it; the
# caller stops it), its pid in RUN_DIR/PROGRAM.pid.
start_fcgi() {
    local program=$1 processes=$2 log=$RUN_DIR/$1.log
    [[ -x $BIN_DIR/$program ]] || fail_start "$BIN_DIR/$program is missing: run make bench-bins"
    [[ $processes =~ ^[1-9][0-9]*$ ]] || fail_start "$program: the process count must be a positive number, not '$processes'"
    setsid "$BIN_DIR/$program" "unix:$RUN_DIR/$program.sock" "$processes" </dev/null >>"$log" 2>&1 &
    printf '%s\n' "$!" >"$RUN_DIR/$program.pid"
    say "$program: $processes processes on unix:$RUN_DIR/$program.sock (pid $!, log $log)"
}

start_nginx() {
    local conf=$RUN_DIR/baseline-nginx.conf log=$RUN_DIR/baseline-nginx-error.log
    command -v nginx >/dev/null || fail_start "nginx is missing (apt-get install -y nginx)"
    export BENCH_PORT=$PORT BENCH_RUN_DIR=$RUN_DIR
    export BENCH_LOOP_SOCKET=unix:$RUN_DIR/fcgi-loop.sock BENCH_NB_SOCKET=unix:$RUN_DIR/fcgi-nonblocking.sock
    export BENCH_MEMORY_SOCKET=unix:$RUN_DIR/fcgi-memory-reuse.sock
    export BENCH_MEMORY_FRESH_SOCKET=unix:$RUN_DIR/fcgi-memory-fresh.sock
    export BENCH_NGINX_WORKERS=${BENCH_NGINX_WORKERS:-auto}
    # Started as root, Nginx would run its workers as nobody, who may not reach RUN_DIR's sockets.
    BENCH_NGINX_USER_DIRECTIVE='# not started as root: workers run as the invoking user'
    ((EUID != 0)) || BENCH_NGINX_USER_DIRECTIVE='user root;'
    export BENCH_NGINX_USER_DIRECTIVE
    mkdir -p "$RUN_DIR/baseline-nginx"
    envsubst "$NGINX_VARS" <"$HERE/nginx.conf.in" >"$conf"
    # Included by the configuration above: empty unless a perfcgi is to be fronted too.
    : >"$RUN_DIR/perfcgi-fronts.conf"
    if [[ -n ${BENCH_PERFCGI_SOCKET:-} ]]; then
        local port
        for port in "${BENCH_PERFCGI_PORT:-}" "${BENCH_PERFCGI_KEPT_PORT:-}"; do
            if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
                fail_start "BENCH_PERFCGI_SOCKET needs BENCH_PERFCGI_PORT and BENCH_PERFCGI_KEPT_PORT (ports), not '$port'"
            fi
        done
        export BENCH_PERFCGI_SOCKET BENCH_PERFCGI_PORT BENCH_PERFCGI_KEPT_PORT
        envsubst "$FRONT_VARS" <"$HERE/perfcgi-fronts.conf.in" >"$RUN_DIR/perfcgi-fronts.conf"
    fi
    # Nginx and its messages before -e takes effect both append to the log; nothing reads it.
    # shellcheck disable=SC2094
    nginx -p "$RUN_DIR/" -c "$conf" -e "$log" -t -q </dev/null >>"$log" 2>&1 ||
        fail_start --log "$log" "nginx: $conf does not pass nginx -t; read $log"
    # shellcheck disable=SC2094
    nginx -p "$RUN_DIR/" -c "$conf" -e "$log" </dev/null >>"$log" 2>&1 ||
        fail_start --log "$log" "nginx: failed to start; read $log"
    say "nginx: http://127.0.0.1:$PORT/baseline/... (pid $(cat "$RUN_DIR/baseline-nginx.pid"), log $log)"
}

status_of() { # URL: the HTTP status it answers with, 000 when nothing answers
    curl -q --noproxy '*' -s -o /dev/null --max-time 2 -w '%{http_code}' "$1" || true
}

# Every path answers 200 within START_TIMEOUT seconds, or the start fails naming the first that does not.
wait_ready() {
    local path code program deadline=$((SECONDS + START_TIMEOUT))
    declare -A log_of=([/baseline/return-200]=baseline-nginx-error.log
        [/baseline/libfcgi-loop]=fcgi-loop.log [/baseline/nonblocking-fcgi]=fcgi-nonblocking.log
        ['/baseline/memory-reuse?mb=10']=fcgi-memory-reuse.log ['/baseline/memory-fresh?mb=10']=fcgi-memory-fresh.log)
    for path in "${PATHS[@]}"; do
        until [[ $(status_of "http://127.0.0.1:$PORT$path") == 200 ]]; do
            for program in "${PROGRAMS[@]}"; do
                running_pid "$RUN_DIR/$program.pid" "$program" >/dev/null ||
                    fail_start --log "$RUN_DIR/$program.log" "$program exited during start-up; read $RUN_DIR/$program.log"
            done
            if ((SECONDS >= deadline)); then
                code=$(status_of "http://127.0.0.1:$PORT$path")
                fail_start --log "$RUN_DIR/${log_of[$path]}" "http://127.0.0.1:$PORT$path answers $code, not 200, after ${START_TIMEOUT}s; read $RUN_DIR/${log_of[$path]} and $RUN_DIR/baseline-nginx-error.log"
            fi
            sleep 0.1
        done
    done
}

start() {
    local cores program
    if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then usage; fi
    for program in "${PROGRAMS[@]}"; do
        if running_pid "$RUN_DIR/$program.pid" "$program" >/dev/null; then
            die "$program already runs (pid file $RUN_DIR/$program.pid): run '$0 stop $RUN_DIR' first"
        fi
    done
    running_pid "$RUN_DIR/baseline-nginx.pid" nginx >/dev/null &&
        die "the baselines' nginx already runs (pid file $RUN_DIR/baseline-nginx.pid): run '$0 stop $RUN_DIR' first"
    [[ $(status_of "http://127.0.0.1:$PORT/") == 000 ]] || die "port $PORT on 127.0.0.1 is taken by another program"
    # Nginx's 4096 connections per worker want more than the usual 1024 open files.
    ulimit -Sn 65536 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
    # The count perfcgi's `workers = auto` starts from (sysconf of the online CPUs).
    cores=$(getconf _NPROCESSORS_ONLN)
    start_fcgi fcgi-loop "${BENCH_LOOP_PROCESSES:-$((2 * cores + 1))}"
    start_fcgi fcgi-nonblocking "${BENCH_NB_PROCESSES:-$((cores * 4))}"
    start_fcgi fcgi-memory-reuse "${BENCH_LOOP_PROCESSES:-$((2 * cores + 1))}"
    start_fcgi fcgi-memory-fresh "${BENCH_LOOP_PROCESSES:-$((2 * cores + 1))}"
    start_nginx
    wait_ready
    say "ready: ${PATHS[*]} answer 200 on http://127.0.0.1:$PORT"
}

(($# >= 2)) || usage
COMMAND=$1
RUN_DIR=$2
PORT=${3:-}
case $RUN_DIR in /*) ;; *) RUN_DIR=$PWD/$RUN_DIR ;; esac
RUN_DIR=${RUN_DIR%/}
case $COMMAND in
start)
    [[ -n $PORT ]] || usage
    mkdir -p "$RUN_DIR"
    start
    ;;
stop) stop_all ;;
*) usage ;;
esac
