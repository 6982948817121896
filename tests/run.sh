#!/usr/bin/env bash
# tests/run.sh [unit|asan|docs|integration|scale|bench|compose ...]: runs the test tiers (all by
# default) and ends with one line `N passed, N failed, N skipped` summed over every tier.
# A skipped test is not a passed one: it is counted apart, and said why where it skips.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

passed=0 failed=0 skipped=0
count() { passed=$((passed + $1)); failed=$((failed + $2)); skipped=$((skipped + ${3:-0})); }

# A summary line of the integration runner or of compose-test: `N passed, N failed`,
# optionally followed by `, N skipped`. Sets BASH_REMATCH (1 passed, 2 failed, 4 skipped).
SUMMARY_RE='^([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?$'
count_summary() { # LINE: counts it; fails (counting nothing) if it is not a summary
    [[ $1 =~ $SUMMARY_RE ]] || return 1
    count "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[4]:-0}"
}

# cmocka binaries: each prints "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)".
# The summary is not the whole verdict: LeakSanitizer reports after it and exits 23, and
# a crash leaves no summary. Any non-zero exit that the failed tests do not account for
# (cmocka exits with their number), or any sanitizer report, is one failure more.
run_cmocka() { # DIR
    local bin out p f rc
    for bin in "$1"/test_*; do
        [[ -x $bin && $bin != *.d ]] || continue
        rc=0
        out=$("$bin" 2>&1) || rc=$?
        printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED|  ERROR) |^\[  FAILED  \] [a-z]|^\[  ERROR' || true
        p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        if [[ -z $p && -z $f ]]; then # crashed before its summary
            printf '%s\n' "$out" | tail -20
            f=1
        elif ((rc != ${f:-0})) || grep -qE '^==[0-9]+==ERROR: |runtime error: ' <<<"$out"; then
            printf '%s\n' "$out" | grep -E -A40 '^==[0-9]+==ERROR: |runtime error: ' | head -60
            printf 'FAIL %s: exit status %d after its summary (%s failed test(s)); a sanitizer report or a crash\n' \
                "${bin##*/}" "$rc" "${f:-0}"
            f=$((${f:-0} + 1))
        fi
        count "${p:-0}" "${f:-0}"
    done
}

tier_unit() {
    echo "== unit tests"
    make -s unit-bins >/dev/null || { count 0 1; return; }
    CMOCKA_MESSAGE_OUTPUT=stdout run_cmocka build/tests
}

tier_asan() {
    echo "== unit tests under AddressSanitizer and UBSan"
    make -s asan-unit-bins >/dev/null || { count 0 1; return; }
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        CMOCKA_MESSAGE_OUTPUT=stdout run_cmocka build/asan/tests
}

# The README's settings table is the one the binary's settings table generates, and the
# layers of app/ its Layout section draws stay one way, without loops (tests/layers.py).
tier_docs() {
    echo "== README settings table"
    if python3 tests/readme_settings.py; then count 1 0; else count 0 1; fi
    echo "== layers of app/, from the includes and the objects"
    make -s all >/dev/null || { count 0 1; return; }
    if python3 tests/layers.py; then count 1 0; else count 0 1; fi
    echo "== Nginx's timeouts in the templates against perfcgi's defaults"
    if python3 tests/nginx_templates.py; then count 1 0; else count 0 1; fi
}

# CMD ...: runs it, its output shown, and counts its last line, a summary (else one failure).
run_summarised() {
    local log out
    log=$(mktemp)
    "$@" 2>&1 | tee "$log"
    out=$(tail -1 "$log")
    rm -f "$log"
    count_summary "$out" || count 0 1
}

# One pass per worker class (the modules without a stack run in the sync pass), and
# the event class again on the AddressSanitizer build, with the modules without a stack
# (malformed FastCGI, aborts, signals, limits) run on that build too (TEST_STANDALONE).
integration_pass() { # LABEL [VAR=VALUE ...]
    local label=$1
    shift
    echo "== integration tests, $label (the real stack through Nginx)"
    run_summarised env "$@" python3 tests/integration/run.py
}

tier_integration() {
    integration_pass "sync workers" TEST_WORKER_CLASS=sync
    integration_pass "thread workers" TEST_WORKER_CLASS=thread
    integration_pass "event workers" TEST_WORKER_CLASS=event
    make -s asan >/dev/null || { count 0 1; return; }
    integration_pass "event workers, ASan+UBSan build" TEST_WORKER_CLASS=event TEST_STANDALONE=1 \
        PERFCGI_BIN="$PWD/build/asan/perfcgi" ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1
}

# Several app hosts (network namespaces) behind one Nginx: scaling, failover, a rolling
# restart (make scale-test, tests/scale/run.py); its figures go to build/scale/scale.json.
tier_scale() {
    echo "== scale test: 3 app hosts in network namespaces behind one Nginx"
    run_summarised python3 tests/scale/run.py
}

# The benchmark, as a smoke test that never judges speed: `make bench-quick` into a run
# folder of its own, whose results and report bench/check_report.py checks (the HTML page
# in headless Chromium), and the unit tests of the recommendations (tests/bench).
tier_bench() {
    local dir=build/bench-quick log out
    echo "== benchmark: make bench-quick, its report checked (never its speed)"
    rm -rf "$dir"
    log=$(mktemp)
    if make -s bench-quick BENCH_ARGS="--out $PWD/$dir" >"$log" 2>&1; then
        tail -3 "$log"
        count 1 0
    else
        tail -40 "$log"
        echo "FAIL make bench-quick (output above)"
        count 0 1
    fi
    rm -f "$log"
    out=$(/usr/bin/python3 bench/check_report.py "$dir" 2>&1)
    printf '%s\n' "$out"
    count_summary "$(tail -1 <<<"$out")" || count 0 1
    echo "== benchmark: recommendations (tests/bench)"
    out=$(/usr/bin/python3 -m unittest discover -s tests/bench 2>&1)
    printf '%s\n' "$out" | tail -15
    local ran fails=0 n
    ran=$(sed -n 's/^Ran \([0-9]*\) test.*/\1/p' <<<"$out")
    while read -r n; do fails=$((fails + n)); done < <(grep -oE '(failures|errors)=[0-9]+' <<<"$out" | cut -d= -f2)
    if [[ -z $ran ]]; then count 0 1; else count $((ran - fails)) "$fails"; fi
}

# The docker-compose stack (make compose-test: a private Docker engine, the images built
# from Debian packages, the endpoint, error and cache tests through its Nginx). Its
# tests count; a failure outside them (build, health, teardown) counts as one.
tier_compose() {
    local log out rc
    echo "== docker-compose stack, offline (make compose-test)"
    log=$(mktemp)
    deploy/compose-test.sh 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    out=$(grep -E "$SUMMARY_RE" "$log" | tail -1)
    rm -f "$log"
    if ((rc == 77)); then # no Docker engine can run on this machine: said above
        echo "== docker-compose stack: SKIPPED (see the reason above)"
        count 0 0 1
    elif count_summary "$out"; then
        ((rc == 0 || BASH_REMATCH[2] > 0)) || count 0 1
    else
        count 0 1
    fi
}

tiers=("$@")
((${#tiers[@]})) || tiers=(unit asan docs integration scale bench compose)
for t in "${tiers[@]}"; do "tier_$t"; done
echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
