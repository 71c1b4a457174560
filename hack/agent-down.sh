#!/usr/bin/env bash
# Stops the node agent that hack/agent-up.sh started, by the PID in
# .local/pids/node-agent.pid after checking that it still belongs to that
# agent. SIGTERM makes the agent stop its pods' processes, remove their
# cgroups and mark its nodes NotReady. SIGKILL follows after
# MEMSTRESS_STOP_TIMEOUT seconds (default 40).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
local_dir=$repo_root/.local
pid_file=$local_dir/pids/node-agent.pid
stop_timeout=${MEMSTRESS_STOP_TIMEOUT:-40}

log() {
    printf '[agent-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

owned_process() {
    local pid=$1
    [[ -r /proc/$pid/cmdline ]] || return 1
    local -a argv
    mapfile -d '' argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [[ ${#argv[@]} -gt 0 && "$(basename "${argv[0]}")" == node-agent ]] || return 1
    [[ "${argv[*]}" == *"$local_dir/"* ]]
}

# Without a PID file, the PID that the agent wrote into its lock file is
# used.
if [[ -f "$pid_file" ]]; then
    pid=$(<"$pid_file")
elif pid=$(head -n 1 "$local_dir/node-agent/agent.lock" 2>/dev/null) && [[ -n "$pid" ]] && owned_process "$pid"; then
    log "no PID file; using PID $pid from $local_dir/node-agent/agent.lock"
else
    log "no PID file, nothing to stop"
    exit 0
fi
if [[ ! "$pid" =~ ^[0-9]+$ ]] || ! owned_process "$pid"; then
    log "PID '$pid' is not a running node agent; removing $pid_file"
    rm -f "$pid_file"
    exit 0
fi

log "sending SIGTERM to node agent PID $pid"
kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + stop_timeout))
while owned_process "$pid" && ((SECONDS < deadline)); do
    sleep 0.2
done
if owned_process "$pid"; then
    log "PID $pid still running after ${stop_timeout}s; sending SIGKILL (its containers die with it, but cgroups under memstress/ may remain)"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while owned_process "$pid" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if owned_process "$pid"; then
        log "error: PID $pid survived SIGKILL; check it with 'ps -o pid,stat,cmd -p $pid'"
        exit 1
    fi
fi
rm -f "$pid_file"
log "node agent stopped"
