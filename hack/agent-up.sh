#!/usr/bin/env bash
# Starts the node agent (hack/node-agent/, a development harness that plays
# the kubelet) against the control plane of hack/local-up.sh, and waits until
# its nodes are Ready. Does nothing when the agent already runs.
#
#   hack/agent-up.sh [AGENT FLAGS...]   for example --nodes=3 --node-memory=2Gi
#
# PID: .local/pids/node-agent.pid. Agent log: .local/logs/node-agent.log.
# Container logs: .local/pods/<namespace>_<pod>/<container>.log, also served
# to `kubectl logs`. Stop it with hack/agent-down.sh.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
local_dir=$repo_root/.local
pid_file=$local_dir/pids/node-agent.pid
log_file=$local_dir/logs/node-agent.log
kubectl=$local_dir/bin/kubectl
kubeconfig=$local_dir/kubeconfig
ready_timeout=${MEMSTRESS_READY_TIMEOUT:-120}

log() {
    printf '[agent-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# Succeeds when PID is a live node agent that this script started: argv[0]
# ends in node-agent and the command line contains .local/.
owned_process() {
    local pid=$1
    [[ "$pid" =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    local -a argv
    mapfile -d '' argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [[ ${#argv[@]} -gt 0 && "$(basename "${argv[0]}")" == node-agent ]] || return 1
    [[ "${argv[*]}" == *"$local_dir/"* ]]
}

# Succeeds when the PID file names a running agent. Without one, it takes
# the PID that the agent wrote into its lock file, and restores the PID file.
agent_alive() {
    local pid
    pid=$(cat "$pid_file" 2>/dev/null) && owned_process "$pid" && return 0
    pid=$(head -n 1 "$local_dir/node-agent/agent.lock" 2>/dev/null) && owned_process "$pid" || return 1
    echo "$pid" >"$pid_file"
}

[[ -f "$kubeconfig" && -x "$kubectl" ]] ||
    die "$kubeconfig or $kubectl is missing; run hack/local-up.sh first"
"$kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1 ||
    die "kube-apiserver is not ready; run hack/local-up.sh first (hack/local-up.sh status shows why)"

# Serializes concurrent calls, for example two suites starting at once: the
# second waits here until the first agent is ready, then finds it running.
mkdir -p "$local_dir/pids" "$local_dir/logs"
lock_file=$local_dir/pids/node-agent-up.lock
exec {lock_fd}>"$lock_file"
flock -w $((ready_timeout + 60)) "$lock_fd" ||
    die "another hack/agent-up.sh held $lock_file for over $((ready_timeout + 60))s"

if agent_alive; then
    log "node agent already running with PID $(<"$pid_file")"
    exit 0
fi

binary=$("$repo_root/hack/build-node-agent.sh" | tail -n 1)
[[ -x "$binary" ]] || die "hack/build-node-agent.sh printed '$binary', which is not executable"
[[ -x "$repo_root/bin/memstress-worker" ]] ||
    log "note: $repo_root/bin/memstress-worker is missing; run make before starting worker pods"

argv=("$binary"
    --kubeconfig="$kubeconfig"
    --bin-dir="$repo_root/bin"
    --pod-log-dir="$local_dir/pods"
    --state-dir="$local_dir/node-agent"
    "$@")
log "starting the node agent; log: $log_file"
{
    printf '\n=== %s: starting node-agent\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '%q ' "${argv[@]}"
    printf '\n'
} >>"$log_file"
# setsid execs without forking here, so $! is the agent's own PID. The agent
# must not inherit the lock, or it would hold it for as long as it runs.
setsid "${argv[@]}" </dev/null >>"$log_file" 2>&1 {lock_fd}>&- &
echo "$!" >"$pid_file"

# Succeeds while the started process exists. Right after the start its
# command line may still be setsid's, so agent_alive would not match yet.
started_alive() {
    local pid=$1 state
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# Ready means every node that the agent registered reports Ready=True.
agent_pid=$(<"$pid_file")
deadline=$((SECONDS + ready_timeout))
while ((SECONDS < deadline)); do
    started_alive "$agent_pid" || {
        tail -n 20 "$log_file" >&2
        die "the node agent exited during start; read $log_file"
    }
    statuses=$("$kubectl" --kubeconfig "$kubeconfig" get nodes -l memstress.io/node-agent=true \
        -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null || true)
    if [[ -n "$statuses" && "$statuses" != *False* && "$statuses" != *Unknown* ]]; then
        log "node agent ready with PID $(<"$pid_file"): $(wc -l <<<"$statuses") nodes Ready"
        exit 0
    fi
    sleep 0.5
done
die "the nodes were not Ready within ${ready_timeout}s (MEMSTRESS_READY_TIMEOUT); read $log_file"
