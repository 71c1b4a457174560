#!/usr/bin/env bash
# Drives the real memstress-worker binary over loopback HTTP with curl: every
# endpoint, every kind of bad input, the test lifecycle with real memory, and
# racing clients.  MEMSTRESS_VARIANT=sanitize runs the ASan/UBSan build.
#
# Each worker started here listens on 127.0.0.1 on a free port and is stopped
# by its PID when the suite ends.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib.sh

variant=${MEMSTRESS_VARIANT:-release}
if [[ $variant == sanitize ]]; then
    worker=build/sanitize/bin/memstress-worker
    export ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=4:exitcode=99
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    # The sanitizer runtime allocates as requests come in, so resident size
    # drifts by a few MiB; the exact figures are checked in the release run.
    slack=8
else
    worker=bin/memstress-worker
    slack=0
fi
# plus SLACK: adds the variant's allowance for resident-size drift.
plus() { awk -v a="$1" -v s="$slack" 'BEGIN { print a + s }'; }
[[ -x $worker ]] || { echo "missing $worker; run make test-build"; exit 1; }

tmp=$(mktemp -d /tmp/memstress-api.XXXXXX)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# start_worker NAME [ARGS...]: starts a worker, sets $url and $pid.
start_worker() {
    local name=$1 port i
    shift
    port=$(free_port)
    "$worker" --listen "127.0.0.1:$port" "$@" >"$tmp/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    url="http://127.0.0.1:$port"
    for ((i = 0; i < 100; i++)); do
        curl -sf "$url/healthz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "worker $name did not answer /healthz within 5 s:"
    cat "$tmp/$name.log"
    return 1
}

# req METHOD PATH [BODY]: sets $code and $body.
req() {
    local out
    if [[ $# -ge 3 ]]; then
        out=$(curl -s -m 10 -X "$1" -w '\n%{http_code}' --data-binary "$3" \
            -H 'Content-Type: application/json' "$url$2")
    else
        out=$(curl -s -m 10 -X "$1" -w '\n%{http_code}' "$url$2")
    fi
    code=${out##*$'\n'}
    body=${out%$'\n'*}
}

field() { jq -r "$1" <<<"$body"; }

status_field() {
    curl -s -m 5 "$url/status" | jq -r "$1"
}

# wait_state STATE SECONDS: polls /status until state matches.
wait_state() {
    local deadline=$((SECONDS + $2))
    while ((SECONDS <= deadline)); do
        [[ $(status_field .state) == "$1" ]] && return 0
        sleep 0.05
    done
    return 1
}

# --- command line -----------------------------------------------------------

out=$("$worker" --version)
check_match "version flag prints version" '^memstress-worker [^ ]+$' "$out"
out=$("$worker" --help)
check_match "help lists listen flag" '--listen ADDR:PORT' "$out"
out=$("$worker" --bogus 2>&1)
check_eq "unknown flag exits 2" 2 "$?"
out=$("$worker" --log-format xml 2>&1)
check_match "bad log format is named" 'invalid --log-format "xml"' "$out"
out=$(timeout 5 "$worker" --listen nonsense 2>&1)
check_eq "bad listen address exits 1" 1 "$?"
check_match "bad listen address is named" 'Invalid listen address.*nonsense' "$out"
out=$(timeout 5 "$worker" --listen 127.0.0.1:70000 2>&1)
check_eq "port above 65535 exits 1" 1 "$?"
check_match "port above 65535 is named" 'port from 0 to 65535.*70000' "$out"

# --- idle worker and every endpoint -----------------------------------------

start_worker main || exit 1
main_url=$url main_pid=$pid

out=$(timeout 5 "$worker" --listen "${url#http://}" 2>&1)
check_eq "busy port exits 1" 1 "$?"
check_match "busy port error names the cause" 'Address already in use' "$out"

req GET /
check_eq "info returns 200" 200 "$code"
check_eq "info names the worker" memstress-worker "$(field .name)"
check_eq "info lists ten endpoints" 10 "$(field '.endpoints | length')"

req GET /health
check_eq "health returns healthy" healthy "$(field .status)"
req GET /healthz
check_match "healthz returns ok" '^ok$' "${body%$'\n'}"
req GET /readyz
check_eq "readyz returns 200" 200 "$code"

req GET /status
check_eq "idle state" idle "$(field .state)"
check_eq "idle is not running" false "$(field .is_running)"
check_eq "idle config is null" null "$(field .config)"
check_eq "percent base outside a cgroup limit" host "$(field .percent_base)"
check_range "limit is the host memory" 100 100000000 "$(field .limit_mb)"
for key in memory_mb target_mb nodes searches elapsed_seconds; do
    check_eq "status has $key" true "$(field "has(\"$key\")")"
done
idle_mb=$(field .memory_mb)
host_mb=$(field .limit_mb)

# --- bad input --------------------------------------------------------------

bad_start() {
    local name=$1 want_code=$2 want_field=$3 request=$4
    req POST /start "$request"
    check_eq "$name returns $want_code" "$want_code" "$code"
    check_eq "$name names field '$want_field'" "$want_field" \
        "$(field '.field // ""')"
    check_match "$name has a message" '.{10,}' "$(field .error)"
}

bad_start "malformed JSON" 400 "" '{"memory_mb": 1'
bad_start "empty body" 400 "" ''
bad_start "array body" 400 "" '[1]'
bad_start "single quotes" 400 "" "{'memory_mb': 100}"
bad_start "string target" 400 memory_mb '{"memory_mb": "100"}'
bad_start "target below range" 400 memory_mb '{"memory_mb": 5}'
bad_start "percent above range" 400 memory_percent '{"memory_percent": 99}'
bad_start "both targets" 400 memory_mb '{"memory_mb": 100, "memory_percent": 5}'
bad_start "no target" 400 memory_mb '{"duration_seconds": 10}'
bad_start "unknown field" 400 memroy_mb '{"memory_mb": 100, "memroy_mb": 1}'
bad_start "duration above range" 400 duration_seconds \
    '{"memory_mb": 100, "duration_seconds": 3601}'
bad_start "interval wrong type" 400 log_interval_sec \
    '{"memory_mb": 100, "log_interval_sec": "5"}'
bad_start "payload above range" 400 payload_kb \
    '{"memory_mb": 100, "payload_kb": 20000}'
bad_start "cpu below range" 400 cpu_percent \
    '{"memory_mb": 100, "cpu_percent": 0}'
bad_start "flag wrong type" 400 touch_payload \
    '{"memory_mb": 100, "touch_payload": "yes"}'
bad_start "target above host memory" 400 memory_mb \
    "{\"memory_mb\": $(awk -v m="$host_mb" 'BEGIN { printf "%d", m + 1024 }')}"
check_match "over-limit error suggests allow_oom" 'allow_oom' "$(field .error)"

head -c 100000 /dev/zero | tr '\0' ' ' >"$tmp/big.json"
code=$(curl -s -o "$tmp/big.out" -w '%{http_code}' -X POST \
    --data-binary @"$tmp/big.json" "$url/start")
check_eq "oversized body returns 413" 413 "$code"
check_match "oversized body error" 'exceeds 65536 bytes' "$(cat "$tmp/big.out")"
code=$(head -c 100000 /dev/zero | tr '\0' ' ' |
    curl -s -o "$tmp/chunked.out" -w '%{http_code}' -X POST \
        -H 'Transfer-Encoding: chunked' --data-binary @- "$url/start")
check_eq "oversized chunked body returns 413" 413 "$code"

headers=$(curl -s -D - -o /dev/null "$url/start")
check_match "GET /start returns 405" '^HTTP/1.1 405' "$headers"
check_match "405 names POST in Allow" $'Allow: POST\r' "$headers"
headers=$(curl -s -D - -o /dev/null -X POST "$url/status")
check_match "POST /status returns 405" '^HTTP/1.1 405' "$headers"
check_match "405 names GET in Allow" $'Allow: GET, HEAD\r' "$headers"
req DELETE /clear
check_eq "DELETE /clear returns 405" 405 "$code"
req GET /nope
check_eq "unknown path returns 404" 404 "$code"
check_match "404 points to GET /" 'GET / lists' "$(field .error)"
req GET '/logs?limit=0'
check_eq "logs limit 0 returns 400" 400 "$code"
check_eq "logs limit error names field" limit "$(field .field)"
req GET '/logs?limit=abc'
check_eq "logs limit text returns 400" 400 "$code"
req GET '/logs?after=-1'
check_eq "logs negative after returns 400" 400 "$code"
req POST /stop
check_eq "stop while idle returns 409" 409 "$code"

# Garbage on the socket must not take the server down.
printf 'NOT HTTP AT ALL\r\n\r\n' | timeout 5 curl -s telnet://"${url#http://}" \
    >/dev/null 2>&1
req GET /health
check_eq "server survives garbage request" 200 "$code"

# --- a full test: build, hold, complete, clear --------------------------------

req POST /start '{"memory_mb": 64, "duration_seconds": 5, "log_interval_sec": 1}'
check_eq "start returns 200" 200 "$code"
check_eq "start echoes the resolved target" 64 "$(field .config.target_mb)"
check_eq "start reports the percent base" host "$(field .percent_base)"
req POST /start '{"memory_mb": 64}'
check_eq "second start returns 409" 409 "$code"
req POST /clear
check_eq "clear while running returns 409" 409 "$code"

check_true "test reaches searching" "state never became searching" \
    wait_state searching 20
rss=$(status_field .memory_mb)
check_range "RSS at target within 2 MiB" 64 "$(plus 66)" "$rss"
check_range "nodes fill the target" 500 700 "$(status_field .nodes)"
lowest=1000000
for i in 1 2 3 4 5 6; do
    mb=$(status_field .memory_mb)
    lowest=$(awk -v a="$lowest" -v b="$mb" 'BEGIN { print (b < a) ? b : a }')
    sleep 0.3
done
check_range "RSS does not dip while searching" 64 "$(plus 66)" "$lowest"
check_true "test completes" "state never became completed" \
    wait_state completed 15
check_range "searches ran" 1 1e15 "$(status_field .searches)"
check_eq "every search hits" "$(status_field .searches)" \
    "$(status_field .search_hits)"
check_range "memory kept after completion" 64 "$(plus 66)" \
    "$(status_field .memory_mb)"

req GET /logs
ops=$(field '[.logs[].operation] | join(",")')
for op in STRESS_TEST_START BUILD_TREE_START BUILD_TREE_TARGET \
    BUILD_TREE_COMPLETE SEARCH_TREE_START SEARCH_TREE_PROGRESS \
    SEARCH_TREE_COMPLETE STRESS_TEST_COMPLETE; do
    check_match "log has $op" "(^|,)$op(,|$)" "$ops"
done
check_match "log starts with STRESS_TEST_START" '^STRESS_TEST_START,BUILD_TREE_START' "$ops"
check_match "log ends with completion" 'SEARCH_TREE_COMPLETE,STRESS_TEST_COMPLETE$' "$ops"
check_eq "log entries carry all fields" true \
    "$(field '[.logs[] | has("timestamp") and has("operation") and has("memory_use_mb") and has("message")] | all')"
check_match "log timestamp is RFC 3339" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$' \
    "$(field '.logs[0].timestamp')"
req GET '/logs?limit=2'
check_eq "logs limit pages" 2 "$(field .count)"
first_after=$(field .next_after)
req GET "/logs?limit=2&after=$first_after"
check_eq "logs after continues" $((first_after + 1)) "$(field '.logs[0].seq')"

metrics=$(curl -s "$url/metrics")
check_match "metrics expose resident bytes" \
    'memstress_worker_resident_memory_bytes [0-9]+' "$metrics"
check_match "metrics count completed tests" \
    'memstress_worker_tests_total\{outcome="completed"\} 1' "$metrics"
check_match "metrics one-hot state" \
    'memstress_worker_state\{state="completed"\} 1' "$metrics"
check_match "metrics target bytes" \
    "memstress_worker_target_memory_bytes $((64 * 1048576))" "$metrics"

req POST /clear
check_eq "clear returns 200" 200 "$code"
check_range "clear reports freed payload" 50 64 "$(field .freed_mb)"
near_idle=$(plus "$(awk -v i="$idle_mb" 'BEGIN { print i + 5 }')")
deadline=$((SECONDS + 3))
while ((SECONDS < deadline)); do
    mb=$(status_field .memory_mb)
    awk -v m="$mb" -v n="$near_idle" 'BEGIN { exit !(m <= n) }' && break
    sleep 0.1
done
check_range "RSS back near idle after clear" 0 "$near_idle" "$mb"
check_eq "state idle after clear" idle "$(status_field .state)"
check_eq "nodes zero after clear" 0 "$(status_field .nodes)"
check_match "log records MEMORY_CLEARED" MEMORY_CLEARED \
    "$(curl -s "$url/logs" | jq -r '.logs[-1].operation')"

# --- stop: during build and during search -----------------------------------

req POST /start '{"memory_mb": 2048, "ramp_mb_per_sec": 100, "duration_seconds": 60}'
check_eq "ramped start returns 200" 200 "$code"
sleep 0.5
check_eq "ramped test is building" building "$(status_field .state)"
stop_time=$(curl -s -o /dev/null -w '%{time_total}' -X POST "$url/stop")
check_range "stop during build within 100 ms" 0 0.1 "$stop_time"
check_eq "state stopped after stop" stopped "$(status_field .state)"
nodes=$(status_field .nodes)
check_range "stop keeps the tree" 1 1e9 "$nodes"
sleep 0.3
check_eq "no growth after stop" "$nodes" "$(status_field .nodes)"
check_match "log records STRESS_TEST_STOPPED" STRESS_TEST_STOPPED \
    "$(curl -s "$url/logs" | jq -r '.logs[-1].operation')"

req POST /start '{"memory_mb": 32, "duration_seconds": 60, "cpu_percent": 100, "touch_payload": true}'
check_eq "start after stop frees and restarts" 200 "$code"
check_true "second test reaches searching" "never searching" \
    wait_state searching 20
check_range "RSS at new lower target" 32 "$(plus 34)" "$(status_field .memory_mb)"
stop_time=$(curl -s -o /dev/null -w '%{time_total}' -X POST "$url/stop")
check_range "stop during search within 100 ms" 0 0.1 "$stop_time"
check_eq "touch_payload searches all hit" "$(status_field .searches)" \
    "$(status_field .search_hits)"
check_match "stopped counted in metrics" \
    'memstress_worker_tests_total\{outcome="stopped"\} 2' "$(curl -s "$url/metrics")"

# --- ramp rate, large payloads, percent target ---------------------------------

req POST /start '{"memory_mb": 100, "ramp_mb_per_sec": 50, "duration_seconds": 5}'
started=$(date +%s.%N)
check_true "ramped test reaches searching" "never searching" \
    wait_state searching 20
ramp_time=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
# About 95 MiB above idle at 50 MiB/s: just under 2 s.
check_range "ramp of 50 MiB/s takes about 2 s" 1.4 3.5 "$ramp_time"
curl -s -X POST "$url/stop" >/dev/null

req POST /start '{"memory_mb": 40, "payload_kb": 10240, "duration_seconds": 5}'
check_true "large payload test reaches searching" "never searching" \
    wait_state searching 20
check_range "large payloads still land within 2 MiB" 40 "$(plus 42)" \
    "$(status_field .memory_mb)"
curl -s -X POST "$url/stop" >/dev/null

req POST /start '{"memory_percent": 1, "duration_seconds": 5}'
check_eq "percent start returns 200" 200 "$code"
expected=$(awk -v m="$host_mb" 'BEGIN { printf "%.1f", m / 100 }')
check_range "percent of host resolves" "$(awk -v e="$expected" 'BEGIN { print e - 0.2 }')" \
    "$(awk -v e="$expected" 'BEGIN { print e + 0.2 }')" "$(field .target_mb)"
curl -s -X POST "$url/stop" >/dev/null
curl -s -X POST "$url/clear" >/dev/null

# --- concurrency --------------------------------------------------------------

# Many readers while a build runs.
curl -s -X POST "$url/start" -d '{"memory_mb": 512, "ramp_mb_per_sec": 200}' >/dev/null
for i in $(seq 1 40); do
    curl -s -o /dev/null -w '%{http_code}\n' -m 5 "$url/status" &
done >"$tmp/parallel.out"
wait_pids=$(jobs -p)
for p in $wait_pids; do [[ $p == "$main_pid" ]] || wait "$p"; done
check_eq "40 parallel status requests succeed" 40 "$(grep -c '^200$' "$tmp/parallel.out")"
curl -s -X POST "$url/stop" >/dev/null

# Start, stop and clear racing from three clients.
race() {
    local verb i
    for ((i = 0; i < 15; i++)); do
        for verb in "$@"; do
            curl -s -o /dev/null -m 5 -X POST "$url/$verb" \
                -d '{"memory_mb": 20, "duration_seconds": 5}'
        done
    done
}
race start stop clear &
r1=$!
race stop start clear &
r2=$!
race clear start stop &
r3=$!
wait "$r1" "$r2" "$r3"
req GET /status
state=$(field .state)
check_match "state valid after racing" '^(idle|building|searching|stopped|completed)$' "$state"
if [[ $state == idle ]]; then
    check_eq "idle after racing means no nodes" 0 "$(field .nodes)"
else
    check_range "tree present after racing" 0 1e9 "$(field .nodes)"
fi
curl -s -X POST "$url/stop" >/dev/null
req POST /clear
check_eq "clear after racing returns 200" 200 "$code"
check_eq "no nodes after the final clear" 0 "$(status_field .nodes)"
req GET /health
check_eq "worker healthy after racing" healthy "$(field .status)"

# --- bounded log ----------------------------------------------------------------

start_worker small-log --log-capacity 10 || exit 1
curl -s -X POST "$url/start" -d '{"memory_mb": 16, "duration_seconds": 5, "log_interval_sec": 1}' >/dev/null
wait_state completed 20
req GET /logs
check_eq "log ring holds its capacity" 10 "$(field .count)"
check_range "log ring counts dropped entries" 1 100 "$(field .dropped)"
check_eq "log ring keeps the newest" STRESS_TEST_COMPLETE "$(field '.logs[-1].operation')"

# --- JSON logs and shutdown -------------------------------------------------------

start_worker json-log --log-format json || exit 1
json_pid=$pid
curl -s -X POST "$url/start" -d '{"memory_mb": 16, "duration_seconds": 60}' >/dev/null
wait_state searching 20
kill -TERM "$json_pid"
for ((i = 0; i < 50; i++)); do
    kill -0 "$json_pid" 2>/dev/null || break
    sleep 0.02
done
wait "$json_pid"
check_eq "SIGTERM during a test exits 0" 0 "$?"
jq -c . "$tmp/json-log.log" >/dev/null 2>&1
check_eq "every JSON log line parses" 0 "$?"
check_match "JSON log records the signal" '"msg":"Received signal, shutting down"' \
    "$(cat "$tmp/json-log.log")"

url=$main_url
kill -TERM "$main_pid"
wait "$main_pid"
check_eq "main worker exits 0 on SIGTERM" 0 "$?"
if [[ $variant == sanitize ]]; then
    check_eq "no sanitizer reports" 0 \
        "$(cat "$tmp"/*.log | grep -cE 'ERROR: (Address|Leak)Sanitizer|runtime error')"
fi

finish
