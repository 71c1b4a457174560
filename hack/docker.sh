#!/usr/bin/env bash
# Makes sure a Docker engine responds on the default socket, so that
# `make image` works on a bare Debian machine with no engine running.
#
#   hack/docker.sh          install docker.io if needed, start dockerd if needed
#   hack/docker.sh status   print whether the engine responds, and the PID
#   hack/docker.sh stop     stop the dockerd that this script started
#
# The daemon runs with --bridge=none and --iptables=false, so it creates no
# docker0 bridge, no private address range and no NAT rules. Builds and
# containers then need `--network host`, which is what the Makefile passes.
# Log: .local/logs/dockerd.log, PID: .local/pids/dockerd.pid.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log_dir=$repo_root/.local/logs
pid_dir=$repo_root/.local/pids
log_file=$log_dir/dockerd.log
pid_file=$pid_dir/dockerd.pid

# Seconds to wait for `docker info` to succeed after starting dockerd.
ready_timeout=${MEMSTRESS_DOCKERD_TIMEOUT:-60}
# Empty lets dockerd choose (overlay2 where the kernel has overlayfs).
storage_driver=${MEMSTRESS_DOCKER_STORAGE_DRIVER:-}

log() {
    printf '[docker %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

engine_responds() {
    docker info >/dev/null 2>&1
}

# Prints the PID from the PID file when that process is a live dockerd.
started_pid() {
    local pid
    [[ -f "$pid_file" ]] || return 1
    pid=$(<"$pid_file")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    printf '%s\n' "$pid"
}

install_engine() {
    if command -v dockerd >/dev/null && command -v docker >/dev/null; then
        return
    fi
    [[ $(id -u) -eq 0 ]] || die "dockerd is missing; install Debian's docker.io as root"
    log "installing docker.io with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io
}

start_engine() {
    local flags pid waited=0

    [[ $(id -u) -eq 0 ]] || die "starting dockerd needs root; run this script as root"
    mkdir -p "$log_dir" "$pid_dir"

    flags=(--bridge=none --iptables=false --ip6tables=false --ip-forward=false)
    if [[ -n "$storage_driver" ]]; then
        flags+=(--storage-driver="$storage_driver")
    fi

    log "starting dockerd ${flags[*]}; log in $log_file"
    # setsid detaches dockerd from this shell, so it outlives the script and
    # a Ctrl-C in the calling terminal does not reach it.
    setsid dockerd "${flags[@]}" >>"$log_file" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$pid_file"

    until engine_responds; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log_file" >&2
            die "dockerd (PID $pid) exited during startup; see $log_file"
        fi
        if ((waited >= ready_timeout)); then
            tail -n 20 "$log_file" >&2
            die "docker info did not succeed within ${ready_timeout}s; dockerd PID $pid is still running, see $log_file"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "dockerd is ready (PID $pid, storage driver $(docker info -f '{{.Driver}}'))"
}

stop_engine() {
    local pid waited=0
    # NEEDSWORK: the PID file is the only record of which dockerd this script
    # started, and .local/ is shared with other tools that may delete it. When
    # it is gone, a running dockerd must be stopped by hand, using the PID in
    # its own pidfile, /var/run/docker.pid.
    if ! pid=$(started_pid); then
        log "no dockerd started by this script is running (no live dockerd PID in $pid_file)"
        rm -f "$pid_file"
        return
    fi
    log "stopping dockerd (PID $pid)"
    kill -TERM "$pid"
    # dockerd stops its containers and its containerd child before exiting.
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= 30)); then
            die "dockerd (PID $pid) is still running 30s after SIGTERM"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    rm -f "$pid_file"
}

case ${1:-up} in
up)
    install_engine
    if engine_responds; then
        exit 0
    fi
    if pid=$(started_pid); then
        die "dockerd (PID $pid) is running but docker info fails; see $log_file or run hack/docker.sh stop"
    fi
    start_engine
    ;;
status)
    if engine_responds; then
        echo "engine: responds (server $(docker version -f '{{.Server.Version}}'))"
    else
        echo "engine: not responding"
    fi
    if pid=$(started_pid); then
        echo "dockerd started by hack/docker.sh: PID $pid"
    fi
    ;;
stop)
    stop_engine
    ;;
*)
    die "unknown command '$1'; expected up, status or stop"
    ;;
esac
