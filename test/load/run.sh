#!/usr/bin/env bash
# Load figures for the operator on the local cluster (not part of make test):
#
#   apply-to-holding   one test of 2 workers x 256Mi: apply to all Holding
#   50 tests at once   1 worker x 16Mi each: apply to all Holding, and the
#                      resident memory of the controller and the node agent
#   1,000 tests        1 worker each, pinned to a node that does not exist so
#                      no process starts: apply to all reconciled (phase and
#                      pod set), and the controller's resident memory
#
# Every count and wait is bounded; each part deletes its namespace.
set -uo pipefail
cd "$(dirname "$0")/../.."

hack/local-up.sh >/dev/null 2>&1 || { echo "local-up failed"; exit 1; }
hack/operator-up.sh --restart >/dev/null 2>&1 || { echo "operator-up failed"; exit 1; }
k() { .local/bin/kubectl --kubeconfig .local/kubeconfig "$@"; }
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }
controller_pid() {
    local pod ip
    pod=$(k -n memstress-system get pods -l app.kubernetes.io/name=memstress-controller \
        --field-selector status.phase=Running -o jsonpath='{.items[0].status.containerStatuses[0].containerID}')
    echo "${pod#memstress://}"
}
agent_pid=$(cat .local/pids/node-agent.pid)

# count_phase NAMESPACE PHASE: tests in that phase.
count_phase() {
    k -n "$1" get mst -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' |
        grep -cx "$2"
}

# wait_count NAMESPACE PHASE WANT SECONDS
wait_count() {
    local deadline=$((SECONDS + $4))
    while ((SECONDS < deadline)); do
        [[ $(count_phase "$1" "$2") -ge $3 ]] && return 0
        sleep 0.5
    done
    return 1
}

# Memory-only resources: the default Guaranteed QoS also requests a quarter
# core per worker, and 50 of those do not fit the agent's two 2-CPU nodes.
test_yaml() { # NAME MEMORY [NODE-SELECTOR]
    printf -- '---\napiVersion: memstress.dev/v1alpha1\nkind: MemoryStressTest\nmetadata:\n  name: %s\nspec:\n  memory: %s\n  durationSeconds: 600\n  template:\n    resources:\n      limits:\n        memory: 48Mi\n' "$1" "$2"
    [[ -z ${3:-} ]] || printf '    nodeSelector:\n      kubernetes.io/hostname: %s\n' "$3"
}

echo "memstress operator load figures, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"

ns=memstress-load-pair
k create namespace "$ns" >/dev/null
start=$(now)
sed 's/durationSeconds: 60/durationSeconds: 600/' manifests/samples/fixed-target.yaml |
    k -n "$ns" apply -f - >/dev/null
wait_count "$ns" Holding 1 120 && echo "2 workers x 256Mi, apply to Holding: $(since "$start") s" ||
    echo "2 workers x 256Mi: not Holding after 120 s"
k delete namespace "$ns" --wait=true --timeout=120s >/dev/null

ns=memstress-load-50
k create namespace "$ns" >/dev/null
echo "controller RSS before: $(rss_mib "$(controller_pid)") MiB, agent RSS before: $(rss_mib "$agent_pid") MiB"
start=$(now)
for i in $(seq 1 50); do test_yaml "t$i" 16Mi; done | k -n "$ns" apply -f - >/dev/null
if wait_count "$ns" Holding 50 300; then
    echo "50 tests x 1 worker x 16Mi, apply to all Holding: $(since "$start") s"
else
    echo "50 tests: only $(count_phase "$ns" Holding) Holding after 300 s"
fi
echo "with 50 tests holding: controller RSS $(rss_mib "$(controller_pid)") MiB, agent RSS $(rss_mib "$agent_pid") MiB"
k delete namespace "$ns" --wait=true --timeout=300s >/dev/null

ns=memstress-load-1000
k create namespace "$ns" >/dev/null
start=$(now)
for i in $(seq 1 1000); do test_yaml "t$i" 16Mi no-such-node; done |
    k -n "$ns" apply --server-side -f - >/dev/null
applied=$(since "$start")
if wait_count "$ns" Pending 1000 600; then
    pods=$(k -n "$ns" get pods --no-headers | wc -l)
    echo "1,000 tests: applied in $applied s, all reconciled (phase set, $pods pods created) after $(since "$start") s"
else
    echo "1,000 tests: only $(count_phase "$ns" Pending) reconciled after 600 s"
fi
echo "with 1,000 tests: controller RSS $(rss_mib "$(controller_pid)") MiB"
k delete namespace "$ns" --wait=true --timeout=600s >/dev/null
