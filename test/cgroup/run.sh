#!/usr/bin/env bash
# Runs the worker inside a real memory cgroup with a 256 MiB limit:
# memory_percent must resolve against that limit, and a target past it with
# allow_oom must end in a real kernel OOM kill.
#
# The cgroups are created under one parent named "memstress" (cgroup v2 at
# /sys/fs/cgroup, or the v1 memory hierarchy) and removed when the suite
# ends.  Needs root.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib.sh

variant=${MEMSTRESS_VARIANT:-release}
worker=bin/memstress-worker
[[ $variant == sanitize ]] && worker=build/sanitize/bin/memstress-worker
[[ -x $worker ]] || { echo "missing $worker; run make test-build"; exit 1; }

limit_bytes=$((256 * 1024 * 1024))
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    version=2
    parent=/sys/fs/cgroup/memstress
elif [[ -d /sys/fs/cgroup/memory ]]; then
    version=1
    parent=/sys/fs/cgroup/memory/memstress
else
    echo "no memory cgroup controller found under /sys/fs/cgroup"
    fail "memory cgroup available" "mount cgroup v2, or v1 with memory"
    finish
    exit 1
fi
child=$parent/worker-test-$$
tmp=$(mktemp -d /tmp/memstress-cgroup.XXXXXX)
worker_pid=

cleanup() {
    if [[ -n $worker_pid ]] && kill -0 "$worker_pid" 2>/dev/null; then
        kill -KILL "$worker_pid"
        wait "$worker_pid" 2>/dev/null
    fi
    [[ -d $child ]] && rmdir "$child"
    # Other suites may share the parent; remove it only when empty.
    [[ -d $parent ]] && rmdir "$parent" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

make_cgroup() {
    mkdir -p "$parent" || return 1
    if [[ $version == 2 ]]; then
        grep -qw memory "$parent/cgroup.subtree_control" ||
            echo +memory >"$parent/cgroup.subtree_control" || return 1
        mkdir "$child" && echo "$limit_bytes" >"$child/memory.max" || return 1
        [[ ! -e $child/memory.swap.max ]] || echo 0 >"$child/memory.swap.max"
    else
        mkdir "$child" && echo "$limit_bytes" >"$child/memory.limit_in_bytes" ||
            return 1
        # With swap, the OOM kill would wait for swap to fill; forbid it.
        [[ ! -e $child/memory.memsw.limit_in_bytes ]] ||
            echo "$limit_bytes" >"$child/memory.memsw.limit_in_bytes"
    fi
}

oom_kills() {
    if [[ $version == 2 ]]; then
        awk '$1 == "oom_kill" { print $2 }' "$child/memory.events"
    else
        awk '$1 == "oom_kill" { print $2 }' "$child/memory.oom_control"
    fi
}

start_in_cgroup() {
    local port i
    port=$(free_port)
    url="http://127.0.0.1:$port"
    # The shell joins the cgroup, then becomes the worker.
    bash -c 'echo $$ >"$1/cgroup.procs" && exec "$2" --listen "$3"' _ \
        "$child" "$worker" "127.0.0.1:$port" >"$tmp/worker.log" 2>&1 &
    worker_pid=$!
    for ((i = 0; i < 100; i++)); do
        curl -sf "$url/healthz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    cat "$tmp/worker.log"
    return 1
}

status_field() { curl -s -m 5 "$url/status" | jq -r "$1"; }

check_true "cgroup v$version created under $parent" "mkdir or limit failed" \
    make_cgroup || exit 1
check_true "worker starts inside the cgroup" "see the log above" \
    start_in_cgroup || exit 1
check_eq "worker is in the cgroup" "$worker_pid" \
    "$(grep -x "$worker_pid" "$child/cgroup.procs")"

check_eq "percent base is the cgroup" cgroup "$(status_field .percent_base)"
check_eq "limit is 256 MiB" 256 "$(status_field .limit_mb)"
check_match "limit source is the cgroup file" "memstress/worker-test-$$/memory" \
    "$(status_field .limit_source)"

# memory_percent 50 of a 256 MiB limit: 128 MiB, not half of the host.
out=$(curl -s -X POST "$url/start" -d '{"memory_percent": 50, "duration_seconds": 5}')
check_eq "percent target resolves to 128 MiB" 128 "$(jq -r .target_mb <<<"$out")"
check_eq "start reports cgroup base" cgroup "$(jq -r .percent_base <<<"$out")"
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)) && [[ $(status_field .state) != searching ]]; do
    sleep 0.05
done
check_eq "percent test holds" searching "$(status_field .state)"
check_range "about 128 MiB resident" 128 131 "$(status_field .memory_mb)"
curl -s -X POST "$url/stop" >/dev/null
curl -s -X POST "$url/clear" >/dev/null

out=$(curl -s -w '\n%{http_code}' -X POST "$url/start" -d '{"memory_mb": 512}')
check_eq "target above the cgroup limit returns 400" 400 "${out##*$'\n'}"
check_match "the error names the cgroup limit" \
    'exceeds the cgroup memory limit of 256 MiB' "${out%$'\n'*}"

# allow_oom: the kernel must kill the worker at the limit.
kills_before=$(oom_kills)
out=$(curl -s -w '\n%{http_code}' -X POST "$url/start" \
    -d '{"memory_mb": 512, "allow_oom": true, "ramp_mb_per_sec": 400}')
check_eq "allow_oom start returns 200" 200 "${out##*$'\n'}"
last_mb=0
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)) && kill -0 "$worker_pid" 2>/dev/null; do
    mb=$(status_field .memory_mb 2>/dev/null)
    [[ $mb =~ ^[0-9.]+$ ]] && last_mb=$mb
    sleep 0.02
done
wait "$worker_pid" 2>/dev/null
exit_code=$?
worker_pid=
check_eq "worker killed by SIGKILL (exit 137)" 137 "$exit_code"
check_eq "kernel counted one OOM kill" $((kills_before + 1)) "$(oom_kills)"
# RSS also counts shared library pages that are charged to other cgroups,
# so the last figure can sit a little above the limit.
check_range "last memory reported near the limit" 200 260 "$last_mb"

finish
