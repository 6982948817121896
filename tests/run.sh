#!/usr/bin/env bash
# tests/run.sh [unit|asan|docs|integration|compose ...]: runs the test tiers (all by
# default) and ends with one line `N passed, N failed` summed over every tier.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

passed=0 failed=0
count() { passed=$((passed + $1)); failed=$((failed + $2)); }

# cmocka binaries: each prints "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)".
run_cmocka() { # DIR
    local bin out p f
    for bin in "$1"/test_*; do
        [[ -x $bin && $bin != *.d ]] || continue
        out=$("$bin" 2>&1)
        printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED|  ERROR) |^\[  FAILED  \] [a-z]|^\[  ERROR' || true
        p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        if [[ -z $p && -z $f ]]; then # crashed before its summary
            printf '%s\n' "$out" | tail -20
            f=1
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

# The README's settings table is the one the binary's settings table generates.
tier_docs() {
    echo "== README settings table"
    if python3 tests/readme_settings.py; then count 1 0; else count 0 1; fi
}

# One pass per worker class (the modules without a stack run in the sync pass), and
# the event class again on the AddressSanitizer build.
integration_pass() { # LABEL [VAR=VALUE ...]
    local label=$1 out log
    shift
    echo "== integration tests, $label (the real stack through Nginx)"
    log=$(mktemp)
    env "$@" python3 tests/integration/run.py 2>&1 | tee "$log"
    out=$(tail -1 "$log")
    rm -f "$log"
    if [[ $out =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        count "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    else
        count 0 1
    fi
}

tier_integration() {
    integration_pass "sync workers" TEST_WORKER_CLASS=sync
    integration_pass "thread workers" TEST_WORKER_CLASS=thread
    integration_pass "event workers" TEST_WORKER_CLASS=event
    make -s asan >/dev/null || { count 0 1; return; }
    integration_pass "event workers, ASan+UBSan build" TEST_WORKER_CLASS=event \
        PERFCGI_BIN="$PWD/build/asan/perfcgi" ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1
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
    out=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    rm -f "$log"
    if ((rc == 77)); then # no Docker engine can run on this machine: said above, not counted
        echo "== docker-compose stack: SKIPPED (see the reason above)"
    elif [[ $out =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        count "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
        ((rc == 0 || BASH_REMATCH[2] > 0)) || count 0 1
    else
        count 0 1
    fi
}

tiers=("$@")
((${#tiers[@]})) || tiers=(unit asan docs integration compose)
for t in "${tiers[@]}"; do "tier_$t"; done
echo "$passed passed, $failed failed"
((failed == 0))
