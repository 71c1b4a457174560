# Shared helpers for the shell suites that drive the real binaries.
#
# A suite sources this file, calls check_* for each assertion, and ends with
# `finish`, which prints "N passed, N failed" as its last line and exits
# non-zero when anything failed.  test/run.sh adds those lines up.

suite_passed=0
suite_failed=0

pass() {
    suite_passed=$((suite_passed + 1))
    printf 'ok   %s\n' "$1"
}

fail() {
    suite_failed=$((suite_failed + 1))
    printf 'FAIL %s\n' "$1"
    [[ -z "${2:-}" ]] || printf '     %s\n' "$2"
}

# check_eq NAME EXPECTED ACTUAL
check_eq() {
    if [[ "$2" == "$3" ]]; then
        pass "$1"
    else
        fail "$1" "expected '$2', got '$3'"
    fi
}

# check_match NAME REGEX ACTUAL
check_match() {
    if [[ "$3" =~ $2 ]]; then
        pass "$1"
    else
        fail "$1" "expected a match for /$2/, got '${3:0:300}'"
    fi
}

# check_true NAME DESCRIPTION COMMAND...: passes when the command succeeds.
check_true() {
    local name=$1 description=$2
    shift 2
    if "$@"; then
        pass "$name"
    else
        fail "$name" "$description"
    fi
}

# check_range NAME LOW HIGH VALUE: LOW <= VALUE <= HIGH, decimals allowed.
check_range() {
    if awk -v lo="$2" -v hi="$3" -v v="$4" \
        'BEGIN { exit !(v != "" && v + 0 >= lo + 0 && v + 0 <= hi + 0) }'; then
        pass "$1"
    else
        fail "$1" "expected $2 <= value <= $3, got '$4'"
    fi
}

# free_ports N: prints N distinct free loopback TCP ports, one a line.  All
# N sockets are bound at once, so the kernel cannot offer one port twice.
free_ports() {
    python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# Picks a free loopback TCP port by letting the kernel choose one.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        shuf -i 20000-60000 -n 1
}

finish() {
    printf '%d passed, %d failed\n' "$suite_passed" "$suite_failed"
    [[ $suite_failed -eq 0 ]]
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds
# (returns 0) or SECONDS pass (returns 1).
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while ((SECONDS <= deadline)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}
