#!/usr/bin/env bash
# deploy/compose-test.sh (`make compose-test`): the docker-compose stack, tested without a
# registry. As root, on Debian with docker.io, docker-compose and debootstrap:
#
#   1. a private Docker engine, all its state in one temporary directory: no bridge, no
#      iptables rules, nothing shared with another engine on the machine;
#   2. debian:bookworm-slim imported from a debootstrap --variant=minbase of the mirror apt
#      uses (the tarball is kept in build/compose/ for the next run);
#   3. docker-compose.yml + deploy/docker-compose.offline.yml built and started on free
#      loopback ports (postgres, redis and nginx built from Debian packages);
#   4. every service healthy, the app image checked (non-root, no compilers, only the
#      libraries perfcgi links), then the integration suite's endpoint, error and cache
#      tests through the stack's Nginx (harness.py's external-stack mode);
#   5. whatever happened: docker-compose down -v, the engine stopped, its mounts and
#      directories removed, nothing left running.
#
# Ends with the suite's "N passed, N failed, N skipped" line (a failure before or after the
# tests counts as one failed test) and exits non-zero if anything failed.
#
# Environment (all optional):
#   TEST_WORKER_CLASS    perfcgi's worker class in the stack (sync, thread, event)  [sync]
#   COMPOSE_TEST_FRESH   1: debootstrap again instead of using build/compose/'s tarball
#   BUILD_TIMEOUT        seconds for building the images                           [1200]
#   HEALTH_TIMEOUT       seconds from `up` until every service is healthy          [300]
#   SUITE_TIMEOUT        seconds for the integration tests                         [900]
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

BUILD_TIMEOUT=${BUILD_TIMEOUT:-1200}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-300}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-900}
DEBOOTSTRAP_TIMEOUT=600
ENGINE_TIMEOUT=60
SUITE=bookworm
CACHE_DIR=$REPO/build/compose
BASE_TARBALL=$CACHE_DIR/debian-$SUITE-minbase.tar
BASE_IMAGE=debian:bookworm-slim
APP_IMAGE=perfcgi:latest
PROJECT=perfcgitest
COMPOSE_FILES=(-f docker-compose.yml -f deploy/docker-compose.offline.yml)
# The offline override runs Nginx as nginx-offline (docker-compose.offline.yml says why).
SERVICES=(postgres redis upstream app nginx-offline)
WORKER_CLASS=${TEST_WORKER_CLASS:-sync}

# --- output -------------------------------------------------------------------------------

T0=$SECONDS
phase_name="" phase_t0=0
timings=()
say() { printf '[compose-test %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
phase() { # NAME: ends the current phase (its time is kept for the summary), starts NAME
    phase_end
    phase_name=$1 phase_t0=$SECONDS
    say "== $1"
}
phase_end() {
    if [[ -n $phase_name ]]; then
        timings+=("$phase_name: $((SECONDS - phase_t0))s")
        phase_name=""
    fi
}
fail() {
    printf '[compose-test %4ds] error: %s\n' "$((SECONDS - T0))" "$*" >&2
    exit 1
}
show_file() { # FILE [LINES]: its last lines, on stderr
    local lines=${2:-40}
    if [[ -s $1 ]]; then
        printf -- '--- last %s lines of %s ---\n' "$lines" "$1" >&2
        tail -n "$lines" "$1" >&2 || true
        printf -- '---\n' >&2
    fi
}

# --- preconditions ------------------------------------------------------------------------

((EUID == 0)) || fail "must run as root (it starts a Docker engine)"
for tool in dockerd docker docker-compose debootstrap python3 psql redis-cli timeout findmnt; do
    command -v "$tool" >/dev/null ||
        fail "$tool not found: run deploy/install-deps.sh test (as root) first"
done
case $WORKER_CLASS in sync | thread | event) ;; *) fail "TEST_WORKER_CLASS=$WORKER_CLASS: sync, thread or event" ;; esac
# The engine's own client: another docker CLI earlier in PATH (a newer static one, say)
# would try BuildKit or newer API defaults against this older engine.
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)

# The engine's images and build layers take about 1.5 GB under /tmp.
free_mb=$(df -Pm /tmp | awk 'NR == 2 { print $4 }')
((free_mb >= 3000)) || fail "only ${free_mb} MB free under /tmp: the images need about 3000"

# Logs that outlive the temporary directory, for a failed run (CI prints the tail).
LOG_DIR=$CACHE_DIR/logs
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*.log

docker() { "$DOCKER" "$@"; }
# Long steps run in the background while this script waits, so that a signal reaches the
# teardown at once (bash runs traps only between foreground commands). Their output goes
# to LOG, redirected here: a redirection of the function call would also capture what
# the trap prints.
CHILD="" TAIL=""
run_logged() { # LOG COMMAND...: its exit status
    local rc=0 log=$1
    shift
    "$@" >>"$log" 2>&1 &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}
compose() { timeout 300 docker-compose --ansi never "${COMPOSE_FILES[@]}" "$@"; }

# shellcheck disable=SC2317 # used by teardown, which runs from the EXIT trap
# Processes whose command line mentions the temporary directory: the engine, its
# containerd, container shims. Printed one pid a line.
tmp_processes() {
    local p cmd
    [[ $TMP == /tmp/pcgi-compose.?* ]] || return 0 # never a broader match
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue # it may have just ended
        [[ $cmd == *"$TMP/"* ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}
# shellcheck disable=SC2317
tmp_mounts() { # mount points under the temporary directory, deepest first
    [[ $TMP == /tmp/pcgi-compose.?* ]] || return 0
    findmnt -rn -o TARGET | awk -v d="$TMP/" 'index($0, d) == 1' | sort -r
}

# shellcheck disable=SC2317
teardown() {
    local rc=$? leftovers="" p m i
    set +e
    trap - EXIT INT TERM HUP
    phase teardown
    if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
        say "stopping pid $CHILD ($(tr '\0' ' ' <"/proc/$CHILD/cmdline" | cut -c1-80))"
        kill -TERM "$CHILD" 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            kill -0 "$CHILD" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    if [[ -n $TAIL ]]; then
        kill "$TAIL" 2>/dev/null
        wait "$TAIL" 2>/dev/null
    fi
    if [[ -S $TMP/docker.sock ]] && docker version >/dev/null 2>&1; then
        if [[ $rc -ne 0 ]]; then
            compose ps >"$LOG_DIR/ps.log" 2>&1
            compose logs --no-color --tail=200 >"$LOG_DIR/services.log" 2>&1
        fi
        say "docker-compose down -v"
        compose down -v --remove-orphans -t 10 >>"$LOG_DIR/down.log" 2>&1 ||
            say "warning: docker-compose down failed (log: ${LOG_DIR#"$REPO"/}/down.log)"
        # Anything not of the project (an interrupted build's container, say).
        mapfile -t ids < <(docker ps -aq 2>/dev/null)
        ((${#ids[@]})) && docker rm -f "${ids[@]}" >/dev/null 2>&1
    fi
    if [[ -n $ENGINE_PID ]] && kill -0 "$ENGINE_PID" 2>/dev/null; then
        say "stopping the engine (pid $ENGINE_PID)"
        kill -TERM "$ENGINE_PID"
        for ((i = 0; i < 300; i++)); do
            kill -0 "$ENGINE_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$ENGINE_PID" 2>/dev/null; then
            say "warning: the engine ignored TERM for 30 s: KILL"
            kill -KILL "$ENGINE_PID"
        fi
        wait "$ENGINE_PID" 2>/dev/null
    fi
    # Its containerd and shims stop with it; any survivor (after a KILL) goes now.
    for p in $(tmp_processes); do
        say "warning: killing leftover pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-120)"
        kill -KILL "$p" 2>/dev/null
    done
    for ((i = 0; i < 50; i++)); do
        [[ -z $(tmp_processes) ]] && break
        sleep 0.1
    done
    [[ -s $TMP/dockerd.log ]] && cp "$TMP/dockerd.log" "$LOG_DIR/dockerd.log"
    for p in "${CREATED[@]}"; do
        if [[ -d $p ]]; then rmdir "$p" 2>/dev/null; else rm -f "$p"; fi
    done
    for m in $(tmp_mounts); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "warning: cannot unmount $m"
    done
    rm -rf --one-file-system "$TMP" 2>/dev/null
    [[ -n $(tmp_processes) ]] && leftovers+=" processes: $(tmp_processes | tr '\n' ' ')"
    [[ -n $(tmp_mounts) ]] && leftovers+=" mounts: $(tmp_mounts | tr '\n' ' ')"
    [[ -e $TMP ]] && leftovers+=" directory: $TMP"
    if [[ -n $leftovers ]]; then
        say "error: the teardown left$leftovers"
        rc=1
    else
        say "teardown complete: no engine, container, mount or file left"
    fi
    phase_end
    local times=""
    for p in "${timings[@]}"; do times+="${times:+, }$p"; done
    say "times: $times (total $((SECONDS - T0))s)"
    [[ -z $SUMMARY && -s $SUITE_LOG ]] && SUMMARY=$(tail -n 1 "$SUITE_LOG")
    # The last line is the summary: the suite's own, one failure more if the teardown
    # failed after it, or one failure alone if the suite never ran.
    if [[ $SUMMARY =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)?$ ]]; then
        if ((rc != 0 && BASH_REMATCH[2] == 0)); then
            SUMMARY="${BASH_REMATCH[1]} passed, 1 failed, ${BASH_REMATCH[4]:-0} skipped"
        fi
    else
        SUMMARY="0 passed, 1 failed, 0 skipped"
        ((rc != 0)) || rc=1
    fi
    ((rc == 0)) || say "FAILED (logs in ${LOG_DIR#"$REPO"/}/)"
    printf '%s\n' "$SUMMARY"
    exit "$rc"
}

# Short: the engine's unix sockets live under it.
TMP=$(mktemp -d /tmp/pcgi-compose.XXXXXX)
chmod 0711 "$TMP"
ENGINE_PID=""
SUMMARY="" SUITE_LOG=$LOG_DIR/suite.log
CREATED=()
export DOCKER_HOST="unix://$TMP/docker.sock"
# No credential helpers or contexts of the user's docker CLI configuration.
export DOCKER_CONFIG=$TMP/docker-config
# docker-compose builds through the engine's API (network: host works there), never with
# the docker CLI or BuildKit.
export COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0
export COMPOSE_PROJECT_NAME=$PROJECT COMPOSE_HTTP_TIMEOUT=300
unset COMPOSE_FILE COMPOSE_PROFILES DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
mkdir -p "$DOCKER_CONFIG"

trap teardown EXIT
trap 'fail "interrupted"' INT TERM HUP

# --- 1. the engine ------------------------------------------------------------------------

phase "engine"
# dockerd 20.10 and its containerd also touch these fixed paths; whichever of them this run
# creates, the teardown removes again (directories only if empty).
OUTSIDE=(/etc/docker/key.json /etc/docker /run/docker/plugins /run/docker /run/containerd/s /run/containerd)
CREATED=()
for path in "${OUTSIDE[@]}"; do
    [[ -e $path ]] || CREATED+=("$path")
done
say "dockerd with everything in $TMP (log: ${LOG_DIR#"$REPO"/}/dockerd.log after the run)"
printf '{}\n' >"$TMP/daemon.json" # not the machine's /etc/docker/daemon.json
# Its own session: a Ctrl-C reaches this script, whose teardown stops the engine in order.
setsid dockerd --config-file "$TMP/daemon.json" \
    --data-root "$TMP/data" --exec-root "$TMP/exec" --pidfile "$TMP/dockerd.pid" \
    -H "unix://$TMP/docker.sock" --bridge=none --iptables=false --ip-forward=false \
    >"$TMP/dockerd.log" 2>&1 </dev/null &
ENGINE_PID=$!
for ((i = 0; i < ENGINE_TIMEOUT * 5; i++)); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$ENGINE_PID" 2>/dev/null || break
    sleep 0.2
done
if ! docker version >/dev/null 2>&1; then
    kill -0 "$ENGINE_PID" 2>/dev/null &&
        what="did not answer on $TMP/docker.sock within ${ENGINE_TIMEOUT}s" ||
        what="exited at start-up"
    show_file "$TMP/dockerd.log" 60
    # The one failure that is the machine's, not the project's: a sandbox that cannot
    # run an engine at all. Exit 77 ("skipped", as automake's tests say) so that the
    # test run reports it loudly without calling it a failure of the stack.
    printf '[compose-test %4ds] SKIPPED: this machine cannot run a Docker engine: dockerd %s\n' \
        "$((SECONDS - T0))" "$what" >&2
    exit 77
fi
say "engine $(docker version -f '{{.Server.Version}}') up (pid $ENGINE_PID, storage $(docker info -f '{{.Driver}}')), DOCKER_HOST=$DOCKER_HOST"

# --- 2. the base image --------------------------------------------------------------------

# The mirror apt uses for Debian itself (the one CI and developers reach), and the
# suites of this release it has there: bookworm, bookworm-updates, bookworm-security.
apt_repos() {
    # shellcheck disable=SC2016 # apt's own $(FIELD) syntax
    apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
        'Created-By: Packages' 2>/dev/null |
        awk -v s="$SUITE" '$3 == "main" && ($2 == s || index($2, s "-") == 1) { print $1, $2 }' | sort -u
}
MIRROR=$(apt_repos | awk -v s="$SUITE" '$2 == s { print $1; exit }')
[[ -n $MIRROR ]] || fail "apt has no source for Debian $SUITE main (see /etc/apt/sources.list.d/)"

# The rootfs of debootstrap, made more like Docker's debian:*-slim images: no services
# started by package scripts, no documentation or translations, no apt caches.
slim_rootfs() { # DIR
    local r=$1
    printf '#!/bin/sh\n# Containers start no services from package scripts.\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod 0755 "$r/usr/sbin/policy-rc.d"
    cat >"$r/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
# As in Docker's debian:*-slim images: no documentation, manuals or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
// No package files or caches left in image layers.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
EOF
    find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$r"/usr/share/{man,groff,info,lintian,linda,locale}/* "$r"/var/lib/apt/lists/* \
        "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/log/*.log
    # The engine provides these per container.
    rm -f "$r/etc/hostname" "$r/etc/resolv.conf"
    : >"$r/etc/resolv.conf"
    # Every suite of the release that the host's apt has, on the host's mirrors.
    apt_repos | awk '{ print "deb " $1 " " $2 " main" }' >"$r/etc/apt/sources.list"
}

phase "base image"
if [[ ${COMPOSE_TEST_FRESH:-0} == 1 || ! -s $BASE_TARBALL ]]; then
    say "debootstrap --variant=minbase $SUITE from $MIRROR (log: ${LOG_DIR#"$REPO"/}/debootstrap.log)"
    if ! run_logged "$LOG_DIR/debootstrap.log" \
        timeout "$DEBOOTSTRAP_TIMEOUT" debootstrap --variant=minbase "$SUITE" "$TMP/rootfs" "$MIRROR"; then
        show_file "$LOG_DIR/debootstrap.log" 30
        show_file "$TMP/rootfs/debootstrap/debootstrap.log" 30
        fail "debootstrap failed (or took over ${DEBOOTSTRAP_TIMEOUT}s)"
    fi
    slim_rootfs "$TMP/rootfs"
    mkdir -p "$CACHE_DIR"
    tar -C "$TMP/rootfs" --numeric-owner -cf "$BASE_TARBALL.tmp" .
    mv -f "$BASE_TARBALL.tmp" "$BASE_TARBALL"
    rm -rf --one-file-system "$TMP/rootfs"
    say "cached as ${BASE_TARBALL#"$REPO"/} ($(du -m "$BASE_TARBALL" | cut -f1) MiB; delete it, or COMPOSE_TEST_FRESH=1, to refresh)"
else
    say "using ${BASE_TARBALL#"$REPO"/} ($(date -r "$BASE_TARBALL" '+%F'); COMPOSE_TEST_FRESH=1 makes a new one)"
fi
docker import -c 'CMD ["bash"]' "$BASE_TARBALL" "$BASE_IMAGE" >/dev/null
say "imported as $BASE_IMAGE"

# --- 3. the stack -------------------------------------------------------------------------

# Free loopback ports, chosen together so that none repeats, right before `up` (not
# before builds of up to BUILD_TIMEOUT, while another program may take them).
choose_ports() {
    read -r NGINX_HOST_PORT APP_HOST_PORT STATUS_HOST_PORT REDIS_HOST_PORT PG_HOST_PORT UPSTREAM_HOST_PORT < <(
        python3 -B -c 'import sys; sys.path.insert(0, "tests/integration"); import harness; print(*harness.free_ports(6))'
    )
    export NGINX_HOST_PORT APP_HOST_PORT STATUS_HOST_PORT REDIS_HOST_PORT PG_HOST_PORT UPSTREAM_HOST_PORT
    say "ports on 127.0.0.1: nginx $NGINX_HOST_PORT, app $APP_HOST_PORT, status $STATUS_HOST_PORT," \
        "redis $REDIS_HOST_PORT, postgres $PG_HOST_PORT, upstream $UPSTREAM_HOST_PORT"
}
# Passwords of this run only: the app's database and Redis URLs need them, and so do the
# tests' psql (PGPASSWORD) and redis-cli (REDISCLI_AUTH).
POSTGRES_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
REDIS_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
export POSTGRES_PASSWORD REDIS_PASSWORD
# perfcgi's settings are the ones the suite expects (harness.STACK_SETTINGS).
mapfile -t SUITE_SETTINGS < <(TEST_WORKER_CLASS=$WORKER_CLASS python3 -B -c '
import sys
sys.path.insert(0, "tests/integration")
import harness
for k, v in harness.STACK_SETTINGS.items():
    print(f"{k}={v}")')
((${#SUITE_SETTINGS[@]})) || fail "cannot read harness.STACK_SETTINGS"
export "${SUITE_SETTINGS[@]}"
if [[ $WORKER_CLASS == event ]]; then # as deploy/stack.sh: kept connections for this class
    export NGINX_UPSTREAM_KEEPALIVE="keepalive 1024; keepalive_timeout 4s; keepalive_time 10s;" NGINX_FASTCGI_KEEP_CONN=on
fi
say "perfcgi: ${SUITE_SETTINGS[*]}"

# nginx-offline duplicates docker-compose.yml's nginx: the same variables and mounts,
# and the same health check timings.
drift=$(docker-compose --ansi never "${COMPOSE_FILES[@]}" config | /usr/bin/python3 -c '
import sys, yaml
services = yaml.safe_load(sys.stdin)["services"]
official, offline = services["nginx"], services["nginx-offline"]
for key in ("environment", "volumes", "depends_on"):
    a, b = official.get(key) or {}, offline.get(key) or {}
    for item in (a if isinstance(a, dict) else map(str, a)):
        if item not in (b if isinstance(b, dict) else list(map(str, b))):
            print(f"{key}: {item}")
for key in ("interval", "timeout", "retries", "start_period"):
    if official["healthcheck"].get(key) != offline["healthcheck"].get(key):
        print(f"healthcheck {key}")
if official.get("restart") != offline.get("restart"):
    print("restart")') || fail "docker-compose config failed"
[[ -z $drift ]] || fail "deploy/docker-compose.offline.yml's nginx-offline lacks what docker-compose.yml's nginx has: $(tr '\n' ';' <<<"$drift")"

phase "image builds"
say "docker-compose build --parallel (log: ${LOG_DIR#"$REPO"/}/build.log)"
if ! run_logged "$LOG_DIR/build.log" \
    timeout "$BUILD_TIMEOUT" docker-compose --ansi never "${COMPOSE_FILES[@]}" build --parallel; then
    show_file "$LOG_DIR/build.log" 60
    fail "the images did not build (within ${BUILD_TIMEOUT}s); the build log is above"
fi
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -v '^<none>' | sort | sed 's/^/  /'

phase "app image checks"
# perfcgi runs, as the unprivileged perfcgi user, with every library it links and
# nothing for building: each package the runtime stage installs is one of its libraries
# (or data one of them reads).
version=$(docker run --rm --network none --entrypoint perfcgi "$APP_IMAGE" --version) ||
    fail "docker run --rm --entrypoint perfcgi $APP_IMAGE --version failed"
say "$version"
user=$(docker image inspect -f '{{.Config.User}}' "$APP_IMAGE")
[[ $user == perfcgi ]] || fail "$APP_IMAGE runs as '${user:-root}', not perfcgi"
[[ $(docker run --rm --network none --entrypoint id "$APP_IMAGE" -u) != 0 ]] || fail "$APP_IMAGE runs as root"
# shellcheck disable=SC2016 # expanded in the container
report=$(docker run --rm --network none --entrypoint bash "$APP_IMAGE" -c '
    set -u
    for t in cc gcc make pkg-config; do command -v "$t" >/dev/null && echo "tool: $t"; done
    dpkg-query -W -f "\${Package}\n" | grep -E -- "-dev(:|$)" | sed "s/^/dev package: /"
    ldd /usr/local/bin/perfcgi | grep "not found" | sed "s/^/missing library: /"
    for lib in $(ldd /usr/local/bin/perfcgi | awk "/=>/ { print \$3 }"); do
        dpkg -S "*/${lib##*/}" 2>/dev/null | cut -d: -f1
    done | sort -u | sed "s/^/links: /"
    apt-mark showmanual | sed "s/^/manual: /"') || fail "cannot inspect $APP_IMAGE"
if grep -E '^(tool|dev package|missing library): ' <<<"$report" >&2; then
    fail "the runtime stage of deploy/Dockerfile is not as it should be (above)"
fi
links=$(sed -n 's/^links: //p' <<<"$report")
base_manual=$(docker run --rm --network none --entrypoint apt-mark "$BASE_IMAGE" showmanual)
added=$(sed -n 's/^manual: //p' <<<"$report" | grep -vxF -f <(printf '%s\n' "$base_manual") || true)
# Besides the libraries: the data a linked library reads at run time (ca-certificates is
# libcurl's trust store, for an https upstream_url).
extra=$(grep -vxF -f <(printf '%s\n' "$links" ca-certificates) <<<"$added" || true)
[[ -z $extra ]] || fail "deploy/Dockerfile's runtime stage installs packages perfcgi does not link or read: $extra"
say "runs as perfcgi; no compiler or -dev package; installs only libraries it links: $(tr '\n' ' ' <<<"$added")"

phase "up and healthy"
PORT_TRIES=3

port_collision() { # did a service fail to bind a port (taken since choose_ports)?
    compose logs --no-color 2>/dev/null | grep -m 1 'Address already in use'
}

# `up`, then wait until every service is healthy: 0, or 3 after a port collision (the
# stack is then taken down again); any other failure ends the run.
up_healthy() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT)) states last="" healthy bad s line
    say "docker-compose ${COMPOSE_FILES[*]} up -d --build (log: ${LOG_DIR#"$REPO"/}/up.log)"
    # `up` itself waits for postgres, redis and app to be healthy (depends_on conditions).
    if ! run_logged "$LOG_DIR/up.log" \
        timeout "$HEALTH_TIMEOUT" docker-compose --ansi never "${COMPOSE_FILES[@]}" up -d --build; then
        if line=$(port_collision); then
            say "a port was taken meanwhile: $line"
            return 3
        fi
        show_file "$LOG_DIR/up.log" 30
        compose ps >&2 || true
        compose logs --no-color --tail=40 >&2 || true
        fail "docker-compose up failed (or took over ${HEALTH_TIMEOUT}s)"
    fi
    while :; do
        states=$(service_states | sort)
        [[ $states != "$last" ]] && say "$(tr '\n' ';' <<<"$states" | sed 's/;$//; s/;/; /g')"
        last=$states
        healthy=$(awk '$2 == "running" && $3 == "healthy"' <<<"$states" | wc -l)
        ((healthy == ${#SERVICES[@]})) && return 0
        bad=$(awk '$2 != "running" && $2 != "created" || $3 == "unhealthy" { print $1 }' <<<"$states")
        if [[ -n $bad ]] || ((SECONDS >= deadline)); then
            if line=$(port_collision); then
                say "a port was taken meanwhile: $line"
                return 3
            fi
            compose ps >&2 || true
            for s in ${bad:-${SERVICES[*]}}; do
                printf -- '--- %s: health checks and last log lines ---\n' "$s" >&2
                docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.ExitCode}}: {{.Output}}{{end}}{{end}}' \
                    "$(compose ps -q "$s")" >&2 2>/dev/null || true
                compose logs --no-color --tail=30 "$s" >&2 || true
            done
            [[ -n $bad ]] && fail "service(s) failed: $(tr '\n' ' ' <<<"$bad")"
            fail "the services were not all healthy within ${HEALTH_TIMEOUT}s of up"
        fi
        sleep 2
    done
}

service_states() { # one "SERVICE STATE HEALTH" line per container of the project
    local ids
    mapfile -t ids < <(compose ps -q)
    ((${#ids[@]})) || return 0
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "${ids[@]}"
}

# Ports chosen now, after the builds; chosen again (a bounded number of times) when
# one was bound by another program between the choice and the service's bind.
for ((try = 1; ; try++)); do
    choose_ports
    rc=0
    up_healthy || rc=$?
    ((rc == 0)) && break
    ((try < PORT_TRIES)) || fail "ports were taken by other programs on $PORT_TRIES tries"
    say "docker-compose down -v, then new ports (try $((try + 1)) of $PORT_TRIES)"
    compose down -v --remove-orphans -t 10 >>"$LOG_DIR/down.log" 2>&1 ||
        fail "docker-compose down failed (log: ${LOG_DIR#"$REPO"/}/down.log)"
done
# The app got the suite's settings (docker-compose.yml and the override pass them on).
app_env=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$(compose ps -q app)")
for kv in "${SUITE_SETTINGS[@]}"; do
    grep -qxF "$kv" <<<"$app_env" ||
        fail "the app container lacks $kv: deploy/docker-compose.offline.yml must pass ${kv%%=*} on"
done
# Every container comes back after a crash or an engine restart, unless stopped by hand.
for s in "${SERVICES[@]}"; do
    policy=$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$(compose ps -q "$s")")
    [[ $policy == unless-stopped ]] || fail "$s has restart policy '${policy:-none}', not unless-stopped"
done
# Redis answers only with the password (the app's URL and the health check carry it).
if noauth=$(env -u REDISCLI_AUTH redis-cli -h 127.0.0.1 -p "$REDIS_HOST_PORT" --no-auth-warning ping 2>&1) && [[ $noauth == PONG ]]; then
    fail "redis answers PONG without the password"
fi
[[ $(REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "$REDIS_HOST_PORT" ping 2>&1) == PONG ]] ||
    fail "redis does not answer with REDIS_PASSWORD"
# The servers run as their own users, as in the official images (and perfcgi as perfcgi).
for pair in postgres:postgres redis:redis app:perfcgi; do
    uid=$(docker exec "$(compose ps -q "${pair%%:*}")" awk '/^Uid:/ { print $2 }' /proc/1/status)
    name=$(docker exec "$(compose ps -q "${pair%%:*}")" getent passwd "$uid" | cut -d: -f1)
    [[ $name == "${pair#*:}" ]] || fail "${pair%%:*} runs as ${name:-uid $uid}, not ${pair#*:}"
done
say "every service healthy (postgres, redis and perfcgi as their own users, restart unless-stopped, redis with its password): http://127.0.0.1:$NGINX_HOST_PORT/"

# --- 4. the tests -------------------------------------------------------------------------

phase "integration tests"
say "tests/integration/run.py against the stack's Nginx (log: ${LOG_DIR#"$REPO"/}/suite.log)"
suite_log=$SUITE_LOG
: >"$suite_log"
# Shown as it is written; the suite runs in the background (see run_logged).
tail -n +1 -f "$suite_log" &
TAIL=$!
suite_rc=0
TEST_BASE_PORT=$NGINX_HOST_PORT TEST_REDIS_PORT=$REDIS_HOST_PORT TEST_PG_PORT=$PG_HOST_PORT \
    TEST_STATUS_PORT=$STATUS_HOST_PORT TEST_WORKER_CLASS=$WORKER_CLASS PGPASSWORD=$POSTGRES_PASSWORD \
    REDISCLI_AUTH=$REDIS_PASSWORD \
    run_logged "$suite_log" timeout "$SUITE_TIMEOUT" python3 tests/integration/run.py || suite_rc=$?
sleep 1.2 # tail polls once a second: let it print the end
kill "$TAIL" 2>/dev/null
wait "$TAIL" 2>/dev/null || true
TAIL=""
SUMMARY=$(tail -n 1 "$suite_log")
((suite_rc != 124)) || fail "the integration tests took over ${SUITE_TIMEOUT}s"
exit "$suite_rc"
