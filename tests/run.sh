#!/usr/bin/env bash
# tests/run.sh [unit|asan|docs|integration ...]: runs the test tiers (all by default)
# and ends with one line `N passed, N failed` summed over every tier.
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

# The README documents every setting the binary knows.
tier_docs() {
    echo "== README lists every setting"
    local key missing=0
    for key in $(bin/perfcgi --print-config | sed -n 's/^\([a-z_]*\) =.*/\1/p' | sort -u); do
        if grep -q "| \`$key\` |" README.md; then count 1 0; else echo "FAIL README lacks setting $key"; count 0 1; missing=1; fi
    done
    ((missing)) || echo "ok   every setting is documented"
}

tier_integration() {
    echo "== integration tests (the real stack through Nginx)"
    local out
    out=$(python3 tests/integration/run.py 2>&1 | tee /dev/stderr | tail -1)
    if [[ $out =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        count "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    else
        count 0 1
    fi
}

tiers=("$@")
((${#tiers[@]})) || tiers=(unit asan docs integration)
for t in "${tiers[@]}"; do "tier_$t"; done
echo "$passed passed, $failed failed"
((failed == 0))
