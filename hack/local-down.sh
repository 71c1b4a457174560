#!/usr/bin/env bash
# Stops the local control plane that hack/local-up.sh started, and its node agent.
#
#   hack/local-down.sh                   stop every component
#   hack/local-down.sh COMPONENT...      stop only these (for example kube-apiserver)
#
# It signals only the PIDs recorded in .local/pids/, after checking that each
# still belongs to a process that local-up.sh started: SIGTERM first, then
# SIGKILL after MEMSTRESS_STOP_TIMEOUT seconds (default 20). Certificates and
# etcd data under .local/ are kept, so the next local-up.sh resumes the state.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
local_dir=$repo_root/.local
pid_dir=$local_dir/pids
stop_timeout=${MEMSTRESS_STOP_TIMEOUT:-20}

# Reverse start order: clients stop before the apiserver, the apiserver
# before etcd.
all_components=(kube-scheduler kube-controller-manager kube-apiserver etcd)

log() {
    printf '[local-down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# Succeeds when PID is a live process that local-up.sh started as NAME: its
# argv[0] ends in NAME and its command line contains the path of .local/.
# A PID that the kernel has reused for another program fails this check.
owned_process() {
    local name=$1 pid=$2
    [[ -r /proc/$pid/cmdline ]] || return 1
    local -a argv
    mapfile -d '' argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [[ ${#argv[@]} -gt 0 && "$(basename "${argv[0]}")" == "$name" ]] || return 1
    [[ "${argv[*]}" == *"$local_dir/"* ]]
}

# Stops one component by the PID in its PID file and removes that file.
stop_component() {
    local name=$1 pid_file=$pid_dir/$1.pid pid deadline
    if [[ ! -f "$pid_file" ]]; then
        log "$name: no PID file, nothing to stop"
        return 0
    fi
    pid=$(<"$pid_file")
    if [[ ! "$pid" =~ ^[0-9]+$ ]]; then
        log "$name: invalid PID file $pid_file (content '$pid'); removing it"
        rm -f "$pid_file"
        return 0
    fi
    if ! owned_process "$name" "$pid"; then
        log "$name: PID $pid is not running (or is no longer $name); removing $pid_file"
        rm -f "$pid_file"
        return 0
    fi

    log "$name: sending SIGTERM to PID $pid"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + stop_timeout))
    while owned_process "$name" "$pid" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if owned_process "$name" "$pid"; then
        log "$name: PID $pid still running after ${stop_timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while owned_process "$name" "$pid" && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if owned_process "$name" "$pid"; then
            log "error: $name: PID $pid survived SIGKILL; check it with 'ps -o pid,stat,cmd -p $pid'"
            return 1
        fi
    fi
    rm -f "$pid_file"
    log "$name: stopped"
}

if [[ $# -gt 0 ]]; then
    requested=("$@")
else
    requested=("${all_components[@]}")
    # --- node agent (hack/node-agent/): stopped first, while the apiserver
    # still takes its last node and pod updates.
    if [[ ${MEMSTRESS_NODE_AGENT:-1} != 0 ]]; then
        "$repo_root/hack/agent-down.sh" || status_agent=1
    fi
    # --- end of the node agent addition
fi

status=${status_agent:-0}
for name in "${requested[@]}"; do
    case " ${all_components[*]} " in
    *" $name "*) stop_component "$name" || status=1 ;;
    *)
        log "error: unknown component '$name'; expected one of: ${all_components[*]}"
        status=1
        ;;
    esac
done
exit "$status"
