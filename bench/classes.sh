#!/usr/bin/env bash
# bench/classes.sh: the three worker classes side by side, one after the other in one
# run, through the running local stack's Nginx (`make up` first). For each class it
# restarts perfcgi (and re-renders Nginx: upstream keepalive for event only), records
# the idle workers' memory, then runs wrk on `/`, `/cpu-intensive` and
# `/io-intensive?ms=100`.
#
#   bench/classes.sh [DURATION]                   # default 10s
#   CLASSES="sync event" WORKERS=4 bench/classes.sh 5s
#
# The pools are sized so that every class could overlap 256 waits: 4 workers x 64
# PostgreSQL connections (the local stack's max_connections is 300); the thread class
# runs 64 threads per worker to match. Sync keeps one request per worker: that is
# the point of the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-8080}
duration=${1:-10s}
workers=${WORKERS:-4}
classes=${CLASSES:-sync thread event}
base="http://127.0.0.1:$port"

command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
curl -fsS "$base/readyz" >/dev/null || { echo "bench: the stack at $base is not ready (make up)" >&2; exit 1; }

# A short warm-up first (pool connections open lazily), then the measured run.
# --timeout 30s: a queued request is slow, not an error.
# Requests a run leaves queued (the clients gone) are still served: wait for the
# workers to be idle and the accept queue empty before the next run.
wait_idle() {
    for _ in $(seq 300); do
        curl -fsS "$base/status" | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if d["active_processes"] == 0 and d["listen_queue"] == 0 else 1)' && return
        sleep 0.2
    done
}

run_wrk() { # CONNECTIONS PATH: "req/s p50 p99 errors"
    wrk -t2 -c"$1" -d2s --timeout 30s -H "X-No-Cache: 1" "$base$2" >/dev/null
    wait_idle
    wrk -t2 -c"$1" -d"$duration" --timeout 30s --latency -H "X-No-Cache: 1" "$base$2" | awk '
        /Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
        /Non-2xx/ { bad += $5 } /Socket errors/ { split($0, a, /[ ,]+/); bad += a[5] + a[7] + a[9] + a[11] }
        END { printf "%s %s %s %d\n", rps, p50, p99, bad }'
}

restart() { # CLASS
    deploy/stack.sh stop perfcgi >/dev/null
    PERFCGI_WORKER_CLASS=$1 PERFCGI_WORKERS=$workers PERFCGI_THREADS=64 PERFCGI_POOL_SIZE=64 \
        PERFCGI_POOL_MAX_OVERFLOW=0 PERFCGI_ACCESS_LOG='' deploy/stack.sh up >/dev/null
    sleep 1
}

idle_rss() {
    curl -fsS "$base/status?full" | python3 -c '
import json, sys
rows = [r["rss_kb"] for r in json.load(sys.stdin)["processes"]]
print(sum(rows) // len(rows))'
}

printf '%-7s %-30s %10s %10s %10s %7s\n' class request req/s p50 p99 errors
for class in $classes; do
    restart "$class"
    rss=$(idle_rss)
    for spec in "64 /" "64 /cpu-intensive" "256 /io-intensive?ms=100"; do
        read -r conns path <<<"$spec"
        read -r rps p50 p99 bad <<<"$(run_wrk "$conns" "$path")"
        printf '%-7s %-30s %10s %10s %10s %7s\n' "$class" "$path (c=$conns)" "$rps" "$p50" "$p99" "$bad"
        wait_idle
    done
    printf '%-7s %-30s %10s KiB per worker\n' "$class" "idle RSS" "$rss"
done
echo "(restoring the stack's default perfcgi)"
deploy/stack.sh stop perfcgi >/dev/null
deploy/stack.sh up >/dev/null
