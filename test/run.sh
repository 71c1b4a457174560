#!/usr/bin/env bash
# Runs every test suite and prints one closing line, "N passed, N failed".
#
#   test/run.sh            all suites, release build then sanitizer build
#   test/run.sh unit       only the cmocka unit tests (release build)
#   test/run.sh SUITE      one shell suite: test/SUITE/run.sh
#
# Unit tests are cmocka programs under build/<variant>/test/.  Shell suites
# are test/<name>/run.sh; each ends with its own "N passed, N failed" line.
# The sanitizer pass runs the unit tests and the worker API suite again with
# the AddressSanitizer/UndefinedBehaviorSanitizer build.
set -uo pipefail
cd "$(dirname "$0")/.."

total_passed=0
total_failed=0
log_dir=$(mktemp -d /tmp/memstress-test.XXXXXX)
trap 'rm -rf "$log_dir"' EXIT

# Adds the last "N passed, N failed" line of a log to the totals.  A suite
# that crashed before printing one counts as one failure.
add_counts() {
    local log=$1 name=$2 line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [[ -z "$line" ]]; then
        echo "== $name: no result line; counted as one failure"
        total_failed=$((total_failed + 1))
        return
    fi
    total_passed=$((total_passed + $(awk '{print $1}' <<<"$line")))
    total_failed=$((total_failed + $(awk '{print $3}' <<<"$line")))
}

run_unit() {
    local variant=$1 test_bin name log passed failed
    for test_bin in build/"$variant"/test/test_*; do
        [[ -x "$test_bin" ]] || continue
        name="unit/$variant/$(basename "$test_bin")"
        log="$log_dir/$(basename "$test_bin").$variant.log"
        echo "== $name"
        CMOCKA_MESSAGE_OUTPUT=stdout "$test_bin" >"$log" 2>&1
        grep -E '^\[  (FAILED|  OK  |ERROR)|^\[  PASSED|failure|ERROR' "$log" |
            grep -v '^\[       OK \]' || true
        passed=$(sed -nE 's/^\[  PASSED  \] ([0-9]+) test.*/\1/p' "$log" | tail -n 1)
        failed=$(sed -nE 's/^\[  FAILED  \] ([0-9]+) test.*/\1/p' "$log" | tail -n 1)
        if [[ -z "$passed" && -z "$failed" ]]; then
            cat "$log"
            echo "$name: no cmocka summary; counted as one failure"
            total_failed=$((total_failed + 1))
            continue
        fi
        echo "${passed:-0} passed, ${failed:-0} failed" >>"$log"
        add_counts "$log" "$name"
    done
}

run_suite() {
    local suite=$1 variant=$2 log="$log_dir/$1.$2.log"
    [[ -x "test/$suite/run.sh" ]] || return 0
    echo "== $suite ($variant build)"
    MEMSTRESS_VARIANT=$variant "test/$suite/run.sh" 2>&1 | tee "$log"
    add_counts "$log" "$suite/$variant"
}

suites=(api cgroup kube cluster agent operator e2e image)
# Suites start the local cluster as they need it; stop it at the end unless
# it was already running before.
if hack/local-up.sh status >/dev/null 2>&1; then
    cluster_was_up=1
else
    cluster_was_up=0
fi

case "${1:-all}" in
all)
    run_unit release
    for suite in "${suites[@]}"; do run_suite "$suite" release; done
    run_unit sanitize
    run_suite api sanitize
    ;;
unit)
    run_unit release
    ;;
*)
    run_suite "$1" "${2:-release}"
    ;;
esac

if [[ $cluster_was_up == 0 ]] && hack/local-up.sh status >/dev/null 2>&1; then
    hack/local-down.sh >/dev/null 2>&1 || echo "== local-down failed; run make local-down"
fi

echo
echo "$total_passed passed, $total_failed failed"
[[ $total_failed -eq 0 && $total_passed -gt 0 ]]
