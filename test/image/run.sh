#!/usr/bin/env bash
# Checks the container image (IMAGE, default memstress:dev): its metadata,
# both binaries' --version inside it, and a real 32 MiB worker test run in a
# container with a 256 MiB memory limit.
#
# The container uses the host's network namespace because hack/docker.sh
# starts dockerd without a bridge. The worker listens on 127.0.0.1 only and
# curl on the host drives it. Needs a responding engine and the image, which
# `make image-test` provides. The container is removed when the suite ends.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
source test/lib.sh

image=${IMAGE:-memstress:dev}
version=$(<VERSION)
container=

cleanup() {
    [[ -z $container ]] || docker rm -f "$container" >/dev/null 2>&1
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    fail "docker engine responds" "docker info failed; run hack/docker.sh"
    finish
    exit 1
fi
if ! docker image inspect "$image" >/dev/null 2>&1; then
    fail "image exists" "image $image not found; run make image"
    finish
    exit 1
fi

# --- image metadata and binaries ------------------------------------------

inspect() { docker image inspect -f "$1" "$image"; }
check_eq "image runs as user 65532" 65532:65532 "$(inspect '{{.Config.User}}')"
check_eq "entrypoint is the controller" '[/usr/local/bin/memstress-controller]' \
    "$(inspect '{{.Config.Entrypoint}}')"
check_match "image exposes 8080" '8080/tcp' "$(inspect '{{json .Config.ExposedPorts}}')"

check_eq "controller version in image" "memstress-controller $version" \
    "$(docker run --rm --network none "$image" --version 2>&1)"
check_eq "worker version in image" "memstress-worker $version" \
    "$(docker run --rm --network none --entrypoint memstress-worker "$image" --version 2>&1)"
check_eq "container user id" 65532 \
    "$(docker run --rm --network none --entrypoint id "$image" -u 2>&1)"

# A missing shared library shows up here, in `ldd` of both binaries.
missing_libs=$(docker run --rm --network none --entrypoint sh "$image" -c \
    'ldd /usr/local/bin/memstress-worker /usr/local/bin/memstress-controller' 2>&1 |
    grep 'not found')
check_eq "binaries find every library" "" "$missing_libs"

# --- a real worker test inside a container --------------------------------

port=$(free_port)
url="http://127.0.0.1:$port"
container_name=memstress-image-test-$$
# The name, not the ID, goes to cleanup, because `docker run -d` may create
# the container and then fail to start it without printing the ID.
container=$container_name
run_error=$(docker run -d --network host --memory 256m --memory-swap 256m \
    --name "$container_name" --entrypoint memstress-worker "$image" \
    --listen "127.0.0.1:$port" -v 1 2>&1 >/dev/null)
check_eq "worker container starts" "" "$run_error"
if [[ -n $run_error ]]; then
    finish
    exit 1
fi

# wait_for SECONDS COMMAND...: retries the command every 0.1 s.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}
healthy() { curl -sf -m 2 "$url/healthz" >/dev/null 2>&1; }
state_is() { [[ $(curl -s -m 2 "$url/status" | jq -r .state) == "$1" ]]; }
status_field() { curl -s -m 5 "$url/status" | jq -r "$1"; }

if ! wait_for 15 healthy; then
    fail "worker responds on /healthz" "no response from $url/healthz within 15 s; container log:"
    docker logs "$container" 2>&1 | tail -n 20
    finish
    exit 1
fi
pass "worker responds on /healthz"

response=$(curl -s -m 10 -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary '{"memory_mb": 32, "duration_seconds": 5, "log_interval_sec": 1}' \
    "$url/start")
code=${response##*$'\n'}
body=${response%$'\n'*}
check_eq "start returns 200" 200 "$code"
check_eq "start echoes the 32 MiB target" 32 "$(jq -r .config.target_mb <<<"$body")"
# The container's memory limit (256 MiB) is the base for memory_percent.
check_eq "percent base is the cgroup" cgroup "$(jq -r .percent_base <<<"$body")"

check_true "test reaches searching" "state never became searching within 20 s" \
    wait_for 20 state_is searching
check_range "resident memory reaches 32 MiB" 32 40 "$(status_field .memory_mb)"

# The containerized worker is an ordinary process in the host's /proc, so its
# user and resident size can be read there without tools in the image.
host_pid=$(docker inspect -f '{{.State.Pid}}' "$container")
check_match "worker runs as uid 65532" '^Uid:[[:space:]]+65532[[:space:]]' \
    "$(grep '^Uid:' "/proc/$host_pid/status" 2>&1)"
rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$host_pid/status" 2>/dev/null)
check_range "host sees at least 32 MiB resident" 32768 60000 "$rss_kb"

response=$(curl -s -m 10 -w '\n%{http_code}' -X POST "$url/stop")
check_eq "stop returns 200" 200 "${response##*$'\n'}"
check_true "test ends stopped" "state never became stopped within 10 s" \
    wait_for 10 state_is stopped

docker rm -f "$container" >/dev/null 2>&1
check_true "container removed" "docker rm -f $container failed" \
    bash -c "! docker inspect '$container' >/dev/null 2>&1"
container=

finish
