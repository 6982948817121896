#!/usr/bin/env bash
# deploy/stack.sh: the local perfcgi stack (PostgreSQL, Redis, perfcgi, Nginx) on loopback,
# with all its state in one run directory. Used by developers and by the integration tests.
#
#   deploy/stack.sh up                 start whatever is not running, wait until ready
#   deploy/stack.sh down               stop everything (data stays in RUN_DIR)
#   deploy/stack.sh start SERVICE      start one service: postgres, redis, perfcgi, nginx, pgbouncer
#   deploy/stack.sh stop SERVICE       stop one service
#   deploy/stack.sh status             one line per service
#
# Settings come from the environment; see usage() below. `up` remembers the ones it was
# given in RUN_DIR/stack.env, and every later command on that RUN_DIR uses them for the
# variables it is not given. Every wait is bounded, and every failure names what failed
# and the log to read, and exits non-zero.
set -euo pipefail

usage() {
    cat <<EOF
usage: ${0##*/} up | down | start SERVICE | stop SERVICE | status
       SERVICE is one of: postgres redis perfcgi nginx pgbouncer

environment (all optional):
  RUN_DIR       state directory: data, sockets, pid files, logs   [$REPO/run]
  PORT          Nginx port on 127.0.0.1                          [8080]
  REDIS_PORT    Redis port on 127.0.0.1                          [16379]
  BACKEND_LISTEN  addresses Redis and PostgreSQL listen on          [127.0.0.1]
                (space-separated; tests/scale adds its test network's)
  PG_PORT       PostgreSQL port on 127.0.0.1                     [15432]
  UPSTREAM_PORT the external API's port on 127.0.0.1 (served by     [18080]
                the stack's Nginx; /async-request calls it)
  PERFCGI_BIN   the perfcgi binary                               [$REPO/bin/perfcgi]
  PERFCGI_*     perfcgi settings, passed through; unless set, the stack sets
                PERFCGI_BIND=unix:\$RUN_DIR/perfcgi.sock
                PERFCGI_STATUS_BIND=unix:\$RUN_DIR/status.sock
                PERFCGI_REDIS_URL=redis://127.0.0.1:\$REDIS_PORT/0
                PERFCGI_DATABASE_URL=postgresql://perfcgi@127.0.0.1:\$PG_PORT/perfcgi
                PERFCGI_UPSTREAM_URL=http://127.0.0.1:\$UPSTREAM_PORT/
                PERFCGI_PIDFILE=\$RUN_DIR/perfcgi.pid
                PERFCGI_ACCESS_LOG= (off: Nginx logs every request already)
  NGINX_WORKER_PROCESSES  Nginx worker_processes                [auto]
  WAIT_TIMEOUT  seconds any start-up wait may take               [30]
  STOP_TIMEOUT  seconds perfcgi gets to stop after TERM          [40]
  PG_BINDIR     directory of initdb and pg_ctl       [newest /usr/lib/postgresql/*/bin]
  PGBOUNCER_PORT  PgBouncer's port (transaction pooling, in front of [16432]
                PostgreSQL; deploy/pgbouncer.ini). Optional: 'up' starts it
                only when this is set, 'start pgbouncer' always. perfcgi keeps
                PERFCGI_DATABASE_URL: point it at this port to use PgBouncer.
  PGBOUNCER_LISTEN_ADDR  the address PgBouncer listens on          [127.0.0.1]
  PGBOUNCER_POOL_SIZE    its default_pool_size (server connections) [20]
  PGBOUNCER_MAX_CLIENT_CONN  its max_client_conn                    [1000]

'up' writes the variables above that it was given (ports, binary, PERFCGI_* ...) to
RUN_DIR/stack.env; 'status', 'start', 'stop', 'down' and a later 'up' on the same RUN_DIR
take each variable they are not given from there (a variable given still wins), so
after 'PORT=8081 REDIS_PORT=16380 make up', 'stop redis' and 'start redis' act on that
stack. Delete the file to forget them.

Without bin/perfcgi (not built yet), 'start postgres' and 'start redis' bring up the
backends alone; 'up' starts them and then stops with an error at the perfcgi step.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# --- settings ---------------------------------------------------------------------------

abspath() { # PATH: made absolute against the current directory
    case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/$1" ;;
    esac
}

RUN_DIR=$(abspath "${RUN_DIR:-$REPO/run}")
RUN_DIR=${RUN_DIR%/}

# The settings `up` was given, for the commands that follow it (see usage()).
STACK_ENV=$RUN_DIR/stack.env
STACK_VARS=(PORT REDIS_PORT PG_PORT UPSTREAM_PORT PERFCGI_BIN WAIT_TIMEOUT STOP_TIMEOUT PG_BINDIR
    NGINX_WORKER_PROCESSES NGINX_LISTEN_ADDR BACKEND_LISTEN PGBOUNCER_PORT PGBOUNCER_LISTEN_ADDR
    PGBOUNCER_POOL_SIZE PGBOUNCER_MAX_CLIENT_CONN)
remembered_var() { # NAME: may stack.env set it?
    [[ $1 =~ ^PERFCGI_[A-Z0-9_]+$ || " ${STACK_VARS[*]} " == *" $1 "* ]]
}
load_stack_env() { # each NAME=VALUE line of stack.env whose NAME is not set already
    local line name used=()
    [[ -r $STACK_ENV ]] || return 0
    while IFS= read -r line || [[ -n $line ]]; do
        [[ $line == *=* ]] || continue
        name=${line%%=*}
        remembered_var "$name" || continue
        [[ -n ${!name+set} ]] && continue # given: it wins
        export "$name=${line#*=}"
        used+=("$name")
    done <"$STACK_ENV"
    # Names only: values may hold passwords (PERFCGI_DATABASE_URL).
    if ((${#used[@]})); then printf 'stack.sh: from %s: %s\n' "$STACK_ENV" "${used[*]}" >&2; fi
}
load_stack_env
# What `up` remembers: the ports and the binary as they end up, and the other variables
# given (or remembered) before the defaults below fill them in.
GIVEN_VARS=(PORT REDIS_PORT PG_PORT UPSTREAM_PORT PERFCGI_BIN)
for name in "${STACK_VARS[@]:5}"; do [[ -z ${!name+set} ]] || GIVEN_VARS+=("$name"); done
mapfile -t -O "${#GIVEN_VARS[@]}" GIVEN_VARS < <(compgen -e | grep -E '^PERFCGI_[A-Z0-9_]+$' | grep -vx PERFCGI_BIN || true)

PORT=${PORT:-8080}
REDIS_PORT=${REDIS_PORT:-16379}
PG_PORT=${PG_PORT:-15432}
UPSTREAM_PORT=${UPSTREAM_PORT:-18080}
PERFCGI_BIN=$(abspath "${PERFCGI_BIN:-$REPO/bin/perfcgi}")
WAIT_TIMEOUT=${WAIT_TIMEOUT:-30}
STOP_TIMEOUT=${STOP_TIMEOUT:-40}
BACKEND_LISTEN=${BACKEND_LISTEN:-127.0.0.1}

PG_DIR=$RUN_DIR/postgres # the cluster: data/, postgres.log, the unix socket
PGB_DIR=$RUN_DIR/pgbouncer # its rendered config, auth file, pid file and log
REDIS_PIDFILE=$RUN_DIR/redis.pid
REDIS_LOG=$RUN_DIR/redis.log
PERFCGI_LOG=$RUN_DIR/perfcgi.log
PERFCGI_STATE=$RUN_DIR/perfcgi.stack # "pid starttime" of the master this script started
NGINX_CONF=$RUN_DIR/nginx.conf
NGINX_PIDFILE=$RUN_DIR/nginx.pid
NGINX_ERROR_LOG=$RUN_DIR/nginx-error.log
NGINX_ACCESS_LOG=$RUN_DIR/nginx-access.log
# Loaded by nginx/nginx.conf.template (the path is written there too).
NGINX_ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so

# Nginx (4096 connections per worker), Redis and perfcgi want more than the usual soft
# limit of 1024 open files: raise it towards the hard limit (at most 65536) for them all.
raise_nofile() {
    local hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=65536
    ((hard > 65536)) && hard=65536
    if (($(ulimit -Sn) < hard)); then ulimit -Sn "$hard" 2>/dev/null || true; fi
}
raise_nofile

# perfcgi's settings: the user's, else the stack's. Exported for perfcgi; the Nginx
# upstreams and the readiness checks are derived from the same values.
export PERFCGI_BIND=${PERFCGI_BIND:-unix:$RUN_DIR/perfcgi.sock}
export PERFCGI_STATUS_BIND=${PERFCGI_STATUS_BIND:-unix:$RUN_DIR/status.sock}
export PERFCGI_REDIS_URL=${PERFCGI_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export PERFCGI_DATABASE_URL=${PERFCGI_DATABASE_URL:-postgresql://perfcgi@127.0.0.1:$PG_PORT/perfcgi}
export PERFCGI_UPSTREAM_URL=${PERFCGI_UPSTREAM_URL:-http://127.0.0.1:$UPSTREAM_PORT/}
export PERFCGI_PIDFILE=${PERFCGI_PIDFILE:-$RUN_DIR/perfcgi.pid}
# Nginx's access log already has every request: perfcgi's own (on by default, to
# stderr) would double the log writes of a benchmark stack. Set it to - or a file to see it.
export PERFCGI_ACCESS_LOG=${PERFCGI_ACCESS_LOG-}

# --- output -----------------------------------------------------------------------------

say() { printf '%s\n' "$*"; }
warn() { printf 'stack.sh: %s\n' "$*" >&2; }
die() {
    printf 'stack.sh: error: %s\n' "$*" >&2
    exit 1
}

show_log() { # FILE [LINES]: the end of a log, on stderr
    local file=$1 lines=${2:-25}
    if [[ -r $file ]]; then
        printf -- '--- last %s lines of %s ---\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" >&2 || true
        printf -- '---\n' >&2
    else
        printf -- '(no log at %s)\n' "$file" >&2
    fi
}

# --- helpers ----------------------------------------------------------------------------

check_port_number() { # NAME VALUE
    if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < 1 || $2 > 65535)); then
        die "$1=$2 is not a port number"
    fi
}

# curl that ignores the user's proxy settings and ~/.curlrc, and never hangs.
curl_() { curl -q --noproxy '*' -sS --max-time 5 "$@"; }

# Does anything accept TCP connections on 127.0.0.1:PORT?
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat):
# with the pid it identifies a process even after its pid has been reused.
proc_starttime() {
    local stat rest fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    read -ra fields <<<"$rest"
    printf '%s\n' "${fields[19]}"
}

alive() { # PID: a live process, not a zombie
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# PIDFILE COMM: print the pid in PIDFILE if it is a live process named COMM.
pid_from_file() {
    local pid comm
    [[ -r $1 ]] || return 1
    pid=$(head -n 1 "$1" 2>/dev/null) || return 1
    pid=${pid//[[:space:]]/}
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$2" ]] || return 1
    printf '%s\n' "$pid"
}

# TIMEOUT COMMAND...: run COMMAND every 0.2 s until it succeeds; fail after TIMEOUT s.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

not_alive() { ! alive "$1"; }

# PID TIMEOUT NAME [GROUP]: TERM, wait, then KILL (the whole process group when GROUP is
# 1, so no orphaned child keeps running). Fails if the process survives KILL.
stop_pid() {
    local pid=$1 timeout=$2 name=$3 group=${4:-0}
    kill -TERM "$pid" 2>/dev/null || true
    wait_until "$timeout" not_alive "$pid" && return 0
    warn "$name (pid $pid) did not stop within ${timeout}s of TERM: sending KILL"
    if ((group)); then
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 5 not_alive "$pid" || die "$name (pid $pid) survived KILL"
}

# BIND: the upstream address Nginx connects to for perfcgi's first bind
# (unix:PATH or HOST:PORT; a wildcard host becomes loopback).
upstream_of() {
    local bind=$1 host port
    bind=${bind#"${bind%%[![:space:]]*}"}
    bind=${bind%%[,[:space:]]*}
    case $bind in
    unix:/*) printf '%s\n' "$bind" ;;
    unix:*) printf 'unix:%s\n' "$REPO/${bind#unix:}" ;; # perfcgi runs from the repo
    *:*)
        host=${bind%:*} port=${bind##*:}
        case $host in
        '' | '*' | 0.0.0.0) host=127.0.0.1 ;;
        '[::]') host='[::1]' ;;
        esac
        printf '%s:%s\n' "$host" "$port"
        ;;
    *) printf '127.0.0.1:%s\n' "$bind" ;;
    esac
}

socket_path() { # UPSTREAM: the path of a unix: upstream, or nothing
    case $1 in unix:*) printf '%s\n' "${1#unix:}" ;; esac
}

# PATH: GET PATH from the master's status socket; prints the body, fails unless 200.
status_get() {
    local up
    up=$(upstream_of "$PERFCGI_STATUS_BIND")
    case $up in
    unix:*) curl_ -f --unix-socket "${up#unix:}" "http://localhost$1" ;;
    *) curl_ -f "http://$up$1" ;;
    esac
}

lock_run_dir() {
    mkdir -p "$RUN_DIR"
    # One stack.sh at a time per run directory. Every process started below gets
    # `9>&-` so that no daemon inherits (and holds) this lock.
    exec 9>"$RUN_DIR/.stack.lock"
    flock -w 120 9 || die "another stack.sh holds $RUN_DIR/.stack.lock for over 120 s"
}

# --- required programs --------------------------------------------------------------------

find_pg_bindir() {
    local d
    if [[ -n ${PG_BINDIR:-} ]]; then
        printf '%s\n' "$PG_BINDIR"
        return
    fi
    d=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
        sort -V | tail -n 1)
    if [[ -n $d ]]; then
        dirname "$d"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}
PG_BINDIR=$(find_pg_bindir)

# SERVICE...: stop with the exact apt-get line if a program a service needs is missing.
require() {
    local missing=() pkgs=() svc
    need() { # PROGRAM PACKAGE
        if ! command -v "$1" >/dev/null 2>&1 && [[ ! -x $1 ]]; then
            missing+=("$1")
            [[ " ${pkgs[*]} " == *" $2 "* ]] || pkgs+=("$2")
        fi
    }
    need curl curl
    need flock util-linux
    for svc in "$@"; do
        case $svc in
        postgres)
            need "${PG_BINDIR:-/usr/lib/postgresql/15/bin}/initdb" postgresql
            need "${PG_BINDIR:-/usr/lib/postgresql/15/bin}/pg_ctl" postgresql
            need "${PG_BINDIR:-/usr/lib/postgresql/15/bin}/psql" postgresql-client
            if ((EUID == 0)); then need runuser util-linux; fi
            ;;
        redis)
            need redis-server redis-server
            need redis-cli redis-tools
            ;;
        perfcgi) need setsid util-linux ;;
        pgbouncer)
            need pgbouncer pgbouncer
            need envsubst gettext-base
            need "${PG_BINDIR:-/usr/lib/postgresql/15/bin}/psql" postgresql-client
            ;;
        nginx)
            need nginx nginx
            need envsubst gettext-base
            # The external API's echo_sleep (a module file: present, not executable).
            [[ -r $NGINX_ECHO_MODULE ]] || {
                missing+=("$NGINX_ECHO_MODULE")
                pkgs+=(libnginx-mod-http-echo)
            }
            ;;
        esac
    done
    if ((${#missing[@]})); then
        printf 'stack.sh: error: missing program(s): %s\n' "${missing[*]}" >&2
        printf 'install them with:\n  apt-get install -y %s\n' "${pkgs[*]}" >&2
        exit 1
    fi
}

# --- PostgreSQL -----------------------------------------------------------------------------
# A private cluster: superuser perfcgi, trust authentication, loopback only (and BACKEND_LISTEN,
# whose clients need a pg_hba.conf line of their own: tests/scale adds it). PostgreSQL
# refuses to run as root, so as root every server-side command runs as `postgres`.

as_pg() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# The cluster directory as PostgreSQL sees it (the symlink resolved, see pg_prepare_dir).
pg_real_dir() { readlink -f "$PG_DIR" 2>/dev/null || printf '%s\n' "$PG_DIR"; }

pg_prepare_dir() {
    local tmp
    if [[ -L $PG_DIR && ! -d $PG_DIR ]]; then
        warn "$PG_DIR points to a vanished directory: making a new cluster"
        rm -f "$PG_DIR"
    fi
    [[ -d $PG_DIR ]] && return 0
    if ((EUID == 0)); then
        id -u postgres >/dev/null 2>&1 ||
            die "no 'postgres' user to run PostgreSQL as (apt-get install -y postgresql creates it)"
        if runuser -u postgres -- test -x "$RUN_DIR"; then
            mkdir -m 700 "$PG_DIR"
            chown postgres:postgres "$PG_DIR"
        else
            # The postgres user cannot reach RUN_DIR (e.g. the repository lives under
            # /root, mode 700), and the server must run as postgres: keep the cluster in
            # a private directory under /tmp and leave a symlink where it is expected.
            tmp=$(mktemp -d /tmp/perfcgi-pg.XXXXXX)
            chown postgres:postgres "$tmp"
            chmod 700 "$tmp"
            ln -s "$tmp" "$PG_DIR"
            say "postgres: $RUN_DIR is not reachable by user postgres; cluster in $tmp (symlink $PG_DIR)"
        fi
    else
        mkdir -m 700 "$PG_DIR"
    fi
}

pg_running() {
    local real
    real=$(pg_real_dir)
    [[ -f $real/data/PG_VERSION ]] || return 1
    as_pg "$PG_BINDIR/pg_ctl" status -D "$real/data" >/dev/null 2>&1
}

pg_pid() { head -n 1 "$(pg_real_dir)/data/postmaster.pid" 2>/dev/null; }

psql_() { "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U perfcgi "$@"; }

pg_write_settings() { # DATA SOCKETDIR
    local sockets=$2
    # sun_path holds 107 bytes: a longer socket path would stop the server from starting.
    if ((${#sockets} + 18 > 107)); then sockets=''; fi
    as_pg tee "$1/stack.conf" >/dev/null <<EOF
# Written by deploy/stack.sh at every start (edits here are lost); included from
# postgresql.conf.
listen_addresses = '${BACKEND_LISTEN// /,}'
port = $PG_PORT
unix_socket_directories = '$sockets'
# perfcgi: workers x (pool_size + pool_max_overflow) connections, plus tests.
max_connections = 300
# A benchmark stack with disposable data: no fsync and no waiting for the WAL. After a
# crash of the machine the cluster may be corrupt: delete RUN_DIR/postgres and run
# 'stack.sh up' again (it re-creates and re-seeds it). Never do this with real data.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

pg_start() {
    local real data out
    check_port_number PG_PORT "$PG_PORT"
    if pg_running; then
        say "postgres: already running (pid $(pg_pid))"
    else
        pg_prepare_dir
        real=$(pg_real_dir)
        data=$real/data
        if [[ ! -f $data/PG_VERSION ]]; then
            if [[ -e $data ]] && [[ -n $(ls -A "$data" 2>/dev/null) ]]; then
                die "postgres: $data exists but holds no cluster (a failed initdb?); remove it and retry"
            fi
            say "postgres: creating a cluster in $PG_DIR/data"
            if ! out=$(as_pg "$PG_BINDIR/initdb" -D "$data" -U perfcgi --auth=trust \
                -E UTF8 --locale=C --no-sync 2>&1); then
                printf '%s\n' "$out" >&2
                die "postgres: initdb failed (output above)"
            fi
            printf "\ninclude_if_exists = 'stack.conf'\n" | as_pg tee -a "$data/postgresql.conf" >/dev/null
        fi
        port_in_use "$PG_PORT" && die "postgres: port $PG_PORT is taken by another program; set PG_PORT"
        pg_write_settings "$data" "$real"
        say "postgres: starting on 127.0.0.1:$PG_PORT"
        if ! as_pg "$PG_BINDIR/pg_ctl" start -D "$data" -l "$real/postgres.log" -w \
            -t "$WAIT_TIMEOUT" -s 9>&-; then
            show_log "$PG_DIR/postgres.log"
            die "postgres: did not start within ${WAIT_TIMEOUT}s; read $PG_DIR/postgres.log"
        fi
    fi
    if ! wait_until "$WAIT_TIMEOUT" psql_ -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
        show_log "$PG_DIR/postgres.log"
        die "postgres: not answering on 127.0.0.1:$PG_PORT; read $PG_DIR/postgres.log"
    fi
    if [[ $(psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'perfcgi'") != 1 ]]; then
        psql_ -d postgres -c 'CREATE DATABASE perfcgi OWNER perfcgi' ||
            die "postgres: could not create database perfcgi"
    fi
    # Idempotent: creates and seeds the table only when missing or empty.
    psql_ -d perfcgi -f "$REPO/deploy/schema.sql" ||
        die "postgres: loading deploy/schema.sql failed"
}

pg_stop() {
    local real
    if ! pg_running; then
        say "postgres: not running"
        return 0
    fi
    real=$(pg_real_dir)
    say "postgres: stopping (pid $(pg_pid))"
    if ! as_pg "$PG_BINDIR/pg_ctl" stop -D "$real/data" -m fast -w -t "$WAIT_TIMEOUT" -s; then
        warn "postgres: fast shutdown did not finish in ${WAIT_TIMEOUT}s: immediate shutdown"
        as_pg "$PG_BINDIR/pg_ctl" stop -D "$real/data" -m immediate -w -t "$WAIT_TIMEOUT" -s || {
            show_log "$PG_DIR/postgres.log"
            die "postgres: could not stop; read $PG_DIR/postgres.log"
        }
    fi
}

# --- Redis ----------------------------------------------------------------------------------
# A private cache: loopback only (unless BACKEND_LISTEN says more), no persistence (the data is a cache of PostgreSQL).

redis_pid() { pid_from_file "$REDIS_PIDFILE" redis-server; }
redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_start() {
    local pid
    check_port_number REDIS_PORT "$REDIS_PORT"
    if pid=$(redis_pid); then
        say "redis: already running (pid $pid)"
    else
        port_in_use "$REDIS_PORT" && die "redis: port $REDIS_PORT is taken by another program; set REDIS_PORT"
        say "redis: starting on 127.0.0.1:$REDIS_PORT"
        rm -f "$REDIS_PIDFILE"
        local backend_addrs listen_args
        read -ra backend_addrs <<<"$BACKEND_LISTEN" # --bind takes one argument per address
        listen_args=(--bind "${backend_addrs[@]}")
        # Without a password, protected mode refuses every client not on loopback: the
        # clients on BACKEND_LISTEN's other addresses are meant to come in.
        [[ $BACKEND_LISTEN == 127.0.0.1 ]] || listen_args+=(--protected-mode no)
        # Errors before the log file is open (bad arguments) go to stderr: append them to
        # the same log. Both only ever append.
        # shellcheck disable=SC2094
        if ! redis-server "${listen_args[@]}" --port "$REDIS_PORT" \
            --daemonize yes --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" \
            --dir "$RUN_DIR" --save '' --appendonly no \
            </dev/null >>"$REDIS_LOG" 2>&1 9>&-; then
            show_log "$REDIS_LOG"
            die "redis: redis-server failed to start; read $REDIS_LOG"
        fi
    fi
    if ! wait_until "$WAIT_TIMEOUT" redis_ping; then
        show_log "$REDIS_LOG"
        die "redis: no PONG on 127.0.0.1:$REDIS_PORT within ${WAIT_TIMEOUT}s; read $REDIS_LOG"
    fi
}

redis_stop() {
    local pid
    if ! pid=$(redis_pid); then
        say "redis: not running"
        return 0
    fi
    say "redis: stopping (pid $pid)"
    stop_pid "$pid" "$WAIT_TIMEOUT" redis
    rm -f "$REDIS_PIDFILE"
}

# --- perfcgi ----------------------------------------------------------------------------------

# The master's pid: the one this script started (pid and start time in the state file),
# else the one in perfcgi's own pidfile if that process carries the binary's name.
perfcgi_pid() {
    local pid='' start='' comm
    if [[ -r $PERFCGI_STATE ]]; then
        read -r pid start <"$PERFCGI_STATE" || true
        if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" &&
            [[ $(proc_starttime "$pid") == "$start" ]]; then
            printf '%s\n' "$pid"
            return 0
        fi
    fi
    comm=${PERFCGI_BIN##*/}
    pid_from_file "$PERFCGI_PIDFILE" "${comm:0:15}"
}

# Unix sockets of perfcgi inside RUN_DIR, for cleaning up after a crash or a KILL.
perfcgi_own_sockets() {
    local up path
    for up in "$(upstream_of "$PERFCGI_BIND")" "$(upstream_of "$PERFCGI_STATUS_BIND")"; do
        path=$(socket_path "$up")
        if [[ -n $path && $path == "$RUN_DIR"/* ]]; then printf '%s\n' "$path"; fi
    done
}

perfcgi_serving() {
    local pid=$1 app
    alive "$pid" || return 2
    app=$(socket_path "$(upstream_of "$PERFCGI_BIND")")
    if [[ -n $app && ! -S $app ]]; then return 1; fi
    status_get /healthz >/dev/null 2>&1
}

perfcgi_start() {
    local pid path up rc
    if pid=$(perfcgi_pid); then
        say "perfcgi: already running (pid $pid)"
        return 0
    fi
    if [[ ! -x $PERFCGI_BIN ]]; then
        die "perfcgi: no executable at $PERFCGI_BIN: build it with 'make' (or set PERFCGI_BIN); services started so far keep running ('${0##*/} down' stops them)"
    fi
    for up in "$(upstream_of "$PERFCGI_BIND")" "$(upstream_of "$PERFCGI_STATUS_BIND")"; do
        path=$(socket_path "$up")
        if [[ -n $path ]] && ((${#path} > 107)); then
            die "perfcgi: socket path $path is longer than a unix socket allows (107); use a shorter RUN_DIR"
        fi
    done
    # perfcgi is not running (per the state file): sockets left by a crash are stale.
    while read -r path; do
        if [[ -S $path ]]; then rm -f "$path"; fi
    done < <(perfcgi_own_sockets)
    say "perfcgi: starting $PERFCGI_BIN (fastcgi $PERFCGI_BIND, status $PERFCGI_STATUS_BIND)"
    printf '\n=== %s stack.sh: starting %s\n' "$(date '+%F %T')" "$PERFCGI_BIN" >>"$PERFCGI_LOG"
    # In its own session (setsid): no terminal signals, and its workers form one process
    # group that stop_pid can kill as a whole. PERFCGI_BIN is this script's, not a
    # perfcgi setting, and perfcgi rejects unknown PERFCGI_* variables: drop it.
    (cd "$REPO" && exec setsid env -u PERFCGI_BIN "$PERFCGI_BIN" </dev/null >>"$PERFCGI_LOG" 2>&1 9>&-) &
    pid=$!
    printf '%s %s\n' "$pid" "$(proc_starttime "$pid")" >"$PERFCGI_STATE"
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    while :; do
        rc=0
        perfcgi_serving "$pid" || rc=$?
        ((rc == 0)) && break
        if ((rc == 2)); then
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            rm -f "$PERFCGI_STATE"
            show_log "$PERFCGI_LOG"
            die "perfcgi: exited during start-up (status $rc); read $PERFCGI_LOG"
        fi
        if ((SECONDS >= deadline)); then
            show_log "$PERFCGI_LOG"
            die "perfcgi: not serving /healthz on $PERFCGI_STATUS_BIND within ${WAIT_TIMEOUT}s (pid $pid still runs); read $PERFCGI_LOG"
        fi
        sleep 0.2
    done
    say "perfcgi: serving (pid $pid)"
}

perfcgi_stop() {
    local pid path
    if ! pid=$(perfcgi_pid); then
        say "perfcgi: not running"
        rm -f "$PERFCGI_STATE"
        return 0
    fi
    say "perfcgi: stopping (pid $pid)"
    stop_pid "$pid" "$STOP_TIMEOUT" perfcgi 1
    rm -f "$PERFCGI_STATE"
    # After a clean TERM perfcgi has removed these itself; after a KILL it could not.
    while read -r path; do
        if [[ -S $path ]]; then rm -f "$path"; fi
    done < <(perfcgi_own_sockets)
    if [[ -f $PERFCGI_PIDFILE ]] && [[ $(head -n 1 "$PERFCGI_PIDFILE") == "$pid" ]]; then
        rm -f "$PERFCGI_PIDFILE"
    fi
}

# --- Nginx ------------------------------------------------------------------------------------

nginx_pid() { pid_from_file "$NGINX_PIDFILE" nginx; }
nginx_() { nginx -p "$RUN_DIR/" -c "$NGINX_CONF" -e "$NGINX_ERROR_LOG" "$@"; }

# SRC DST [PREFIX SERVICE]: envsubst restricted to the ${PREFIX*} variables SRC uses
# (NGINX_ by default), so Nginx's own variables ($host, $request_uri, ...) survive; each
# of them must be set.
render() {
    local src=$1 dst=$2 prefix=${3:-NGINX_} service=${4:-nginx} vars=() v name
    while read -r v; do
        name=${v:2:${#v}-3}
        [[ -n ${!name:-} ]] || die "$service: $src uses $v, which is not set"
        vars+=("$v")
    done < <(grep -oE '\$\{'"$prefix"'[A-Z0-9_]+\}' "$src" | sort -u)
    envsubst "${vars[*]}" <"$src" >"$dst.tmp"
    mv "$dst.tmp" "$dst"
}

nginx_render() {
    export NGINX_RUN_DIR=$RUN_DIR
    export NGINX_PORT=$PORT
    export NGINX_LISTEN_ADDR=${NGINX_LISTEN_ADDR:-127.0.0.1}
    NGINX_APP_SERVER=$(upstream_of "$PERFCGI_BIND")
    NGINX_STATUS_SERVER=$(upstream_of "$PERFCGI_STATUS_BIND")
    export NGINX_APP_SERVER NGINX_STATUS_SERVER
    export NGINX_CACHE_DIR=$RUN_DIR/nginx/cache
    export NGINX_UPSTREAM_LISTEN=127.0.0.1:$UPSTREAM_PORT
    # Upstream keepalive only for the class that multiplexes connections, closed by
    # Nginx a second before perfcgi would close them itself, and each renewed after
    # keepalive_time, so a retiring worker's connections drain within it. Up to 1024
    # idle ones per Nginx worker: with 128, at 2,000 client connections every second
    # request or so found the pool empty and opened (and later closed) a connection of
    # its own; with 1024 only the first requests of a burst do. The pool never holds
    # more connections than the load opened, so it costs perfcgi nothing at low load.
    if [[ ${PERFCGI_WORKER_CLASS:-sync} == event ]]; then
        NGINX_UPSTREAM_KEEPALIVE=$("$REPO/deploy/nginx_timeouts.sh" keepalive "${PERFCGI_KEEPALIVE_TIMEOUT:-5}")
        export NGINX_UPSTREAM_KEEPALIVE
        export NGINX_FASTCGI_KEEP_CONN=on
    else
        export NGINX_UPSTREAM_KEEPALIVE="# no keepalive: a ${PERFCGI_WORKER_CLASS:-sync} worker serves one connection at a time"
        export NGINX_FASTCGI_KEEP_CONN=off
    fi
    export NGINX_WORKER_PROCESSES=${NGINX_WORKER_PROCESSES:-auto}
    if ((EUID == 0)); then
        # Started as root, Nginx would run its workers as nobody, who cannot reach the
        # sockets in a root-owned RUN_DIR.
        export NGINX_USER_DIRECTIVE='user root;'
    else
        export NGINX_USER_DIRECTIVE='# not started as root: workers run as the invoking user'
    fi
    mkdir -p "$RUN_DIR/nginx"
    render "$REPO/nginx/perfcgi.conf.template" "$RUN_DIR/perfcgi.conf"
    render "$REPO/nginx/upstream.conf.template" "$RUN_DIR/upstream.conf"
    render "$REPO/nginx/nginx.conf.template" "$NGINX_CONF"
    local out
    # Nginx's timeouts against perfcgi's (the defaults when unset: perfcgi --help).
    out=$("$REPO/deploy/nginx_timeouts.sh" check "$RUN_DIR/perfcgi.conf" "${PERFCGI_TIMEOUT:-30}" \
        "${PERFCGI_KEEPALIVE_TIMEOUT:-5}") || warn "$out"
    if ! out=$(nginx_ -t -q 2>&1 9>&-); then
        printf '%s\n' "$out" >&2
        die "nginx: the rendered configuration $NGINX_CONF does not pass nginx -t (output above)"
    fi
}

nginx_answers() { # any HTTP answer at all (a 502 without perfcgi is fine)
    local code
    code=$(curl_ -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz" 2>/dev/null) || true
    [[ -n $code && $code != 000 ]]
}

nginx_start() {
    local pid
    check_port_number PORT "$PORT"
    check_port_number UPSTREAM_PORT "$UPSTREAM_PORT"
    nginx_render
    if pid=$(nginx_pid); then
        say "nginx: already running (pid $pid): reloading the configuration"
        nginx_ -s reload </dev/null >>"$NGINX_ERROR_LOG" 2>&1 9>&- || {
            show_log "$NGINX_ERROR_LOG"
            die "nginx: reload failed; read $NGINX_ERROR_LOG"
        }
    else
        port_in_use "$PORT" && die "nginx: port $PORT is taken by another program; set PORT"
        port_in_use "$UPSTREAM_PORT" && die "nginx: port $UPSTREAM_PORT (the external API) is taken by another program; set UPSTREAM_PORT"
        # A fresh Nginx starts with an empty cache: answers cached from an earlier
        # perfcgi would only confuse tests and benchmarks.
        rm -rf "$RUN_DIR/nginx/cache"
        rm -f "$NGINX_PIDFILE"
        say "nginx: starting on http://127.0.0.1:$PORT/"
        if ! nginx_ </dev/null >>"$NGINX_ERROR_LOG" 2>&1 9>&-; then
            show_log "$NGINX_ERROR_LOG"
            die "nginx: failed to start; read $NGINX_ERROR_LOG"
        fi
    fi
    if ! wait_until "$WAIT_TIMEOUT" nginx_answers; then
        show_log "$NGINX_ERROR_LOG"
        die "nginx: no answer on 127.0.0.1:$PORT within ${WAIT_TIMEOUT}s; read $NGINX_ERROR_LOG"
    fi
}

nginx_stop() {
    local pid
    if ! pid=$(nginx_pid); then
        say "nginx: not running"
        return 0
    fi
    say "nginx: stopping (pid $pid)"
    # QUIT: graceful (in-flight requests finish); then stop_pid's TERM and KILL.
    kill -QUIT "$pid" 2>/dev/null || true
    if ! wait_until 10 not_alive "$pid"; then
        stop_pid "$pid" 10 nginx 1
    fi
    rm -f "$NGINX_PIDFILE"
}

# --- pgbouncer (optional) ------------------------------------------------------------------
# PgBouncer in transaction pooling mode between perfcgi and PostgreSQL: started only when
# asked ('start pgbouncer', or 'up' with PGBOUNCER_PORT set); the stack's perfcgi keeps
# PERFCGI_DATABASE_URL, so the default stack never goes through it.

pgbouncer_pid() { pid_from_file "$PGB_DIR/pgbouncer.pid" pgbouncer; }

pgbouncer_answers() { # a query through it reaches PostgreSQL (a login waits for that: bounded)
    PGCONNECT_TIMEOUT=2 "$PG_BINDIR/psql" -X -q -h "$PGBOUNCER_LISTEN_ADDR" -p "$PGBOUNCER_PORT" -U perfcgi -d perfcgi \
        -tAc 'SELECT 1' >/dev/null 2>&1
}

pgbouncer_start() {
    local pid user=()
    PGBOUNCER_PORT=${PGBOUNCER_PORT:-16432}
    check_port_number PGBOUNCER_PORT "$PGBOUNCER_PORT"
    export PGBOUNCER_PORT PGBOUNCER_DIR=$PGB_DIR PGBOUNCER_PG_HOST=127.0.0.1 PGBOUNCER_PG_PORT=$PG_PORT
    export PGBOUNCER_LISTEN_ADDR=${PGBOUNCER_LISTEN_ADDR:-127.0.0.1}
    export PGBOUNCER_POOL_SIZE=${PGBOUNCER_POOL_SIZE:-20}
    export PGBOUNCER_MAX_CLIENT_CONN=${PGBOUNCER_MAX_CLIENT_CONN:-1000}
    if pid=$(pgbouncer_pid); then
        say "pgbouncer: already running (pid $pid)"
    else
        mkdir -p "$PGB_DIR"
        touch "$PGB_DIR/pgbouncer.log"
        # PgBouncer refuses to run as root: as root it runs as postgres, like PostgreSQL,
        # and must write its pid file and log.
        if ((EUID == 0)); then
            chown postgres:postgres "$PGB_DIR" "$PGB_DIR/pgbouncer.log"
            user=(-u postgres)
        fi
        printf '"perfcgi" ""\n' >"$PGB_DIR/userlist.txt"
        render "$REPO/deploy/pgbouncer.ini" "$PGB_DIR/pgbouncer.ini" PGBOUNCER_ pgbouncer
        port_in_use "$PGBOUNCER_PORT" &&
            die "pgbouncer: port $PGBOUNCER_PORT is taken by another program; set PGBOUNCER_PORT"
        rm -f "$PGB_DIR/pgbouncer.pid"
        say "pgbouncer: starting on $PGBOUNCER_LISTEN_ADDR:$PGBOUNCER_PORT (pool_mode transaction, default_pool_size $PGBOUNCER_POOL_SIZE, PostgreSQL 127.0.0.1:$PG_PORT)"
        if ! pgbouncer -d "${user[@]}" "$PGB_DIR/pgbouncer.ini" </dev/null >>"$PGB_DIR/pgbouncer.log" 2>&1 9>&-; then
            show_log "$PGB_DIR/pgbouncer.log"
            die "pgbouncer: failed to start; read $PGB_DIR/pgbouncer.log"
        fi
    fi
    if ! wait_until "$WAIT_TIMEOUT" pgbouncer_answers; then
        show_log "$PGB_DIR/pgbouncer.log"
        die "pgbouncer: no answer to SELECT 1 on $PGBOUNCER_LISTEN_ADDR:$PGBOUNCER_PORT within ${WAIT_TIMEOUT}s (is postgres up?); read $PGB_DIR/pgbouncer.log"
    fi
}

pgbouncer_stop() {
    local pid
    [[ -d $PGB_DIR ]] || return 0 # never started here: nothing to say
    if ! pid=$(pgbouncer_pid); then
        say "pgbouncer: not running"
        return 0
    fi
    say "pgbouncer: stopping (pid $pid)"
    # TERM: immediate shutdown; clients see their connections close and reconnect.
    stop_pid "$pid" "$WAIT_TIMEOUT" pgbouncer
}

# --- commands -----------------------------------------------------------------------------

service_line() { # SERVICE: one status line
    local pid
    case $1 in
    postgres)
        if pg_running; then
            printf '%-9s running  pid %-7s postgresql://perfcgi@127.0.0.1:%s/perfcgi  log %s\n' \
                postgres "$(pg_pid)" "$PG_PORT" "$PG_DIR/postgres.log"
        else
            printf '%-9s stopped\n' postgres
        fi
        ;;
    redis)
        if pid=$(redis_pid); then
            printf '%-9s running  pid %-7s redis://127.0.0.1:%s/0  log %s\n' redis "$pid" "$REDIS_PORT" "$REDIS_LOG"
        else
            printf '%-9s stopped\n' redis
        fi
        ;;
    perfcgi)
        if pid=$(perfcgi_pid); then
            printf '%-9s running  pid %-7s fastcgi %s  status %s  log %s\n' perfcgi "$pid" \
                "$PERFCGI_BIND" "$PERFCGI_STATUS_BIND" "$PERFCGI_LOG"
        else
            printf '%-9s stopped\n' perfcgi
        fi
        ;;
    pgbouncer)
        if pid=$(pgbouncer_pid); then
            printf '%-9s running  pid %-7s postgresql://perfcgi@%s:%s/perfcgi  log %s\n' pgbouncer "$pid" \
                "${PGBOUNCER_LISTEN_ADDR:-127.0.0.1}" "${PGBOUNCER_PORT:-16432}" "$PGB_DIR/pgbouncer.log"
        elif [[ -n ${PGBOUNCER_PORT:-} ]]; then
            printf '%-9s stopped\n' pgbouncer
        fi
        ;;
    nginx)
        if pid=$(nginx_pid); then
            printf '%-9s running  pid %-7s http://127.0.0.1:%s/ (external API :%s)  logs %s %s\n' nginx "$pid" \
                "$PORT" "$UPSTREAM_PORT" "$NGINX_ERROR_LOG" "$NGINX_ACCESS_LOG"
        else
            printf '%-9s stopped\n' nginx
        fi
        ;;
    esac
}

cmd_status() {
    local svc
    for svc in postgres redis perfcgi nginx pgbouncer; do service_line "$svc"; done
}

wait_ready() {
    local url=http://127.0.0.1:$PORT/readyz
    if ! wait_until "$WAIT_TIMEOUT" curl_ -f -o /dev/null "$url" 2>/dev/null; then
        printf 'stack.sh: %s answers:\n' "$url" >&2
        curl_ -i "$url" >&2 || true
        printf '\n' >&2
        show_log "$PERFCGI_LOG"
        show_log "$NGINX_ERROR_LOG" 10
        die "the stack is not ready: $url is not 200 after ${WAIT_TIMEOUT}s; read $PERFCGI_LOG and $NGINX_ERROR_LOG"
    fi
}

# Writes what this `up` was given to stack.env (one NAME=VALUE a line; a value with a
# newline cannot be kept and is left out, with a warning).
save_stack_env() {
    local name tmp=$STACK_ENV.tmp
    {
        printf '# Written by deploy/stack.sh up: the settings of this stack, used by the next\n'
        printf '# commands on this RUN_DIR for each variable they are not given.\n'
        for name in "${GIVEN_VARS[@]}"; do
            [[ -n ${!name+set} ]] || continue
            if [[ ${!name} == *$'\n'* ]]; then
                warn "$name holds a newline: not remembered in $STACK_ENV"
                continue
            fi
            printf '%s=%s\n' "$name" "${!name}"
        done
    } >"$tmp"
    mv -f "$tmp" "$STACK_ENV"
}

cmd_up() {
    local pgb=()
    if [[ -n ${PGBOUNCER_PORT:-} ]]; then pgb=(pgbouncer); fi
    require postgres redis perfcgi nginx "${pgb[@]}"
    lock_run_dir
    save_stack_env
    pg_start
    if ((${#pgb[@]})); then pgbouncer_start; fi
    redis_start
    perfcgi_start
    nginx_start
    wait_ready
    say ""
    say "perfcgi stack is up (RUN_DIR=$RUN_DIR; its settings are in $STACK_ENV)"
    cmd_status | sed 's/^/  /'
    say ""
    say "  try:   curl -i http://127.0.0.1:$PORT/    (X-No-Cache: 1 skips the Nginx cache)"
    say "  ops:   http://127.0.0.1:$PORT/healthz /readyz /status /metrics (loopback only)"
    say "  psql:  psql -h 127.0.0.1 -p $PG_PORT -U perfcgi perfcgi"
    say "  stop:  ${0} down"
}

cmd_down() {
    if [[ ! -d $RUN_DIR ]]; then
        say "nothing to stop: $RUN_DIR does not exist"
        return 0
    fi
    lock_run_dir
    nginx_stop
    perfcgi_stop
    redis_stop
    pgbouncer_stop
    if [[ -n $PG_BINDIR ]]; then pg_stop; fi
}

main() {
    local cmd=${1:-}
    case $cmd in
    up | down | status)
        (($# == 1)) || {
            usage >&2
            exit 2
        }
        "cmd_$cmd"
        ;;
    start | stop)
        (($# == 2)) || {
            usage >&2
            exit 2
        }
        case $2 in
        postgres | redis | perfcgi | nginx | pgbouncer) ;;
        *) die "unknown service '$2' (postgres, redis, perfcgi, nginx or pgbouncer)" ;;
        esac
        if [[ $cmd == start ]]; then
            require "$2"
        elif [[ $2 == postgres && -z $PG_BINDIR ]]; then
            say "postgres: not installed, so not running"
            return 0
        fi
        lock_run_dir
        case $2 in
        postgres) "pg_$cmd" ;;
        *) "${2}_$cmd" ;;
        esac
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
