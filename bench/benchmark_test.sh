#!/usr/bin/env bash
# bench/benchmark_test.sh: the tuning chapter's benchmark, done by perfcgi's engine. For
# each worker class and each endpoint it prints, in ab's words, Requests per second, Time
# per request (mean, and across all concurrent requests) and Failed requests, plus p50
# and p99; the run's CSV, JSON and report land in bench/results/<run id>/.
#
#   bench/benchmark_test.sh [-d SECONDS] [-c CONNECTIONS] [-n REPS]
#                           [--classes sync,thread,event] [--endpoints /,/cpu-intensive,...]
#                           [--url BASE]
#
# Without --url it starts a private stack (PostgreSQL, Redis, perfcgi, Nginx on free
# loopback ports), runs each class in turn and stops it all. With --url BASE it measures
# the server at BASE (a Gunicorn or PHP-FPM port of the endpoints behind its own proxy,
# or a running perfcgi stack) and starts or changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
args=(run --profile chapter --ab)
while (($#)); do
    case $1 in
    -d | --duration) args+=(--duration "${2:?$1 needs a value}"); shift 2 ;;
    -c | --concurrency) args+=(--concurrency "${2:?$1 needs a value}"); shift 2 ;;
    -n | --reps) args+=(--reps "${2:?$1 needs a value}"); shift 2 ;;
    --classes | --endpoints | --url | --out | --p99-bound) args+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "benchmark_test.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
exec /usr/bin/python3 bench/engine.py "${args[@]}"
