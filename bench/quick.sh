#!/usr/bin/env bash
# bench/quick.sh: one wrk run per endpoint through the running stack's Nginx, side by
# side, and the resident memory of the workers. Usage (after `make up`):
#   bench/quick.sh [DURATION] [CONNECTIONS]      # defaults: 10s 64
# Environment: PORT (Nginx, 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-8080}
duration=${1:-10s}
conns=${2:-64}
base="http://127.0.0.1:$port"

command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
curl -fsS "$base/readyz" >/dev/null || { echo "bench: the stack at $base is not ready (make up)" >&2; exit 1; }

rss() { # LABEL: the workers' resident memory from /status?full
    curl -fsS "$base/status?full" | python3 -c '
import json, sys
rows = [r["rss_kb"] for r in json.load(sys.stdin)["processes"]]
print("%s: %d workers, RSS KiB min %d, max %d" % (sys.argv[1], len(rows), min(rows), max(rows)))' "$1"
}
rss "workers before the runs"
printf '%-44s %10s %10s %10s %8s\n' "request" "req/s" "p50" "p99" "non-2xx"
bench() { # LABEL PATH [HEADER]
    local label=$1 path=$2 out
    shift 2
    out=$(wrk -t1 -c"$conns" -d"$duration" --latency "$@" "$base$path")
    awk -v label="$label" '
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
        /Non-2xx/ { bad = $5 } /Socket errors/ { bad = bad "+sock" }
        END { printf "%-44s %10s %10s %10s %8s\n", label, rps, p50, p99, bad == "" ? 0 : bad }' <<<"$out"
}
bench "/ (Nginx micro-cache)" "/"
bench "/ (X-No-Cache)" "/" -H "X-No-Cache: 1"
bench "/cpu-intensive (n=50000)" "/cpu-intensive" -H "X-No-Cache: 1"
bench "/cached-data (X-No-Cache: Redis hits)" "/cached-data" -H "X-No-Cache: 1"
bench "/io-intensive (ms=100)" "/io-intensive" -H "X-No-Cache: 1"

sleep 1 # the master samples RSS every 250 ms
rss "workers after the runs"
