#!/usr/bin/env bash
# bench/process_manager.sh: what the process manager costs under load, through the
# running local stack's Nginx (`make up` first), side by side in one run:
#   1. failed requests over 10 HUP reloads under wrk load (/ and /io-intensive?ms=5);
#   2. requests/s of / with max_requests=100 against max_requests=0 (twice each, ABAB).
# Usage: bench/process_manager.sh [DURATION]     (default 10s per max_requests run)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-8080}
duration=${1:-10s}
workers=${WORKERS:-4}
base="http://127.0.0.1:$port"
run_dir=${RUN_DIR:-$PWD/run}

command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
curl -fsS "$base/readyz" >/dev/null || { echo "bench: the stack at $base is not ready (make up)" >&2; exit 1; }

restart() { # extra PERFCGI_* assignments
    deploy/stack.sh stop perfcgi >/dev/null
    env PERFCGI_WORKERS="$workers" PERFCGI_ACCESS_LOG='' "$@" deploy/stack.sh up >/dev/null
    sleep 1
}

# "requests non-2xx socket-errors req/s" of one wrk run
summary() {
    awk '/requests in/ { n = $1 } /Requests\/sec/ { rps = $2 } /Non-2xx/ { bad = $5 }
         /Socket errors/ { split($0, a, /[ ,]+/); sock = a[5] + a[7] + a[9] + a[11] }
         END { printf "%d %d %d %s\n", n, bad, sock, rps }'
}

echo "== 10 HUP reloads under load ($workers sync workers)"
restart
master=$(cat "$run_dir/perfcgi.pid")
before=$(curl -fsS "$base/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["worker_restarts"]["reload"])')
for path in / "/io-intensive?ms=5"; do
    wrk -t2 -c32 -d14s --timeout 30s -H "X-No-Cache: 1" "$base$path" >"/tmp/perfcgi-bench-hup.$$" &
    wrk_pid=$!
    sleep 2
    for _ in 1 2 3 4 5; do kill -HUP "$master"; sleep 1; done
    wait "$wrk_pid"
    read -r n bad sock rps < <(summary <"/tmp/perfcgi-bench-hup.$$")
    printf '  %-22s %8d requests, %d non-2xx, %d socket errors (%s req/s)\n' "$path" "$n" "$bad" "$sock" "$rps"
done
rm -f "/tmp/perfcgi-bench-hup.$$"
after=$(curl -fsS "$base/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["worker_restarts"]["reload"])')
echo "  workers replaced by the reloads: $((after - before))"

echo "== / with max_requests=100 against max_requests=0 ($workers sync workers, $duration each)"
for round in 1 2; do
    for mr in 0 100; do
        restart PERFCGI_MAX_REQUESTS=$mr
        read -r n bad sock rps < <(wrk -t2 -c64 -d"$duration" --timeout 30s -H "X-No-Cache: 1" "$base/" | summary)
        recycled=$(curl -fsS "$base/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["worker_restarts"]["max_requests"])')
        printf '  round %d max_requests=%-4s %10s req/s  %d non-2xx, %d socket errors, %s workers recycled\n' \
            "$round" "$mr" "$rps" "$bad" "$sock" "$recycled"
    done
done
echo "(restoring the stack's default perfcgi)"
restart
