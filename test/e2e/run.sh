#!/usr/bin/env bash
# End to end, as a user lives it: kubectl apply of the samples in
# manifests/samples/, kubectl get for progress, and curl into each worker
# pod on its 127.0.0.x pod IP.  The operator runs as installed by
# hack/local-up.sh (a Deployment on the node agent's nodes); the suite uses
# only kubectl and curl, and its own namespace.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib.sh

hack/local-up.sh >/dev/null 2>&1 || { echo "local-up failed; run hack/local-up.sh"; exit 1; }
# Runs the controller binary of this checkout, even if an older pod runs.
hack/operator-up.sh --restart >/dev/null 2>&1 || { echo "operator-up failed"; exit 1; }
kubeconfig=$PWD/.local/kubeconfig
k() { .local/bin/kubectl --kubeconfig "$kubeconfig" "$@"; }
ns=memstress-e2e-$$
k create namespace "$ns" >/dev/null
trap 'k delete namespace "$ns" --wait=false >/dev/null 2>&1' EXIT

mst_field() { k -n "$ns" get mst "$1" -o jsonpath="$2" 2>/dev/null; }
phase_is() { [[ $(mst_field "$1" '{.status.phase}') == "$2" ]]; }
pod_count() { k -n "$ns" get pods -l "memstress.dev/test=$1" --no-headers 2>/dev/null | wc -l; }
pods_gone() { [[ $(pod_count "$1") -eq 0 ]]; }
# sample FILE [SED-SCRIPT]: applies a sample, shortened by the sed script.
sample() { sed "${2:-}" "manifests/samples/$1.yaml" | k -n "$ns" apply -f - 2>&1; }
controller_ready() {
    [[ $(k -n memstress-system get deploy memstress-controller -o jsonpath='{.status.availableReplicas}') == 1 ]]
}

check_true "controller installed and available" "see kubectl -n memstress-system get pods" \
    wait_until 60 controller_ready

# --- a fixed target with two workers ---------------------------------------------

started=$SECONDS
sample fixed-target 's/durationSeconds: 60/durationSeconds: 8/; s/logIntervalSeconds: 5/logIntervalSeconds: 1/' >/dev/null
check_true "fixed target reaches Holding" "phase: $(mst_field fixed-target '{.status.phase}')" \
    wait_until 60 phase_is fixed-target Holding
echo "     (apply to Holding: $((SECONDS - started)) s)"
for i in 0 1; do
    name=fixed-target-worker-$i
    entry_mem=$(mst_field fixed-target "{.status.workers[?(@.name==\"$name\")].memoryBytes}")
    check_range "$name within 2% of 256Mi" 268435456 273804165 "$entry_mem"
    ip=$(k -n "$ns" get pod "$name" -o jsonpath='{.status.podIP}')
    check_match "$name pod IP on loopback" '^127\.' "$ip"
    status=$(curl -s -m 5 "http://$ip:8080/status")
    check_eq "$name /status state" searching "$(jq -r .state <<<"$status")"
    check_range "$name /status memory matches its entry" \
        "$(awk -v b="$entry_mem" 'BEGIN { print b / 1048576 - 1 }')" \
        "$(awk -v b="$entry_mem" 'BEGIN { print b / 1048576 + 1 }')" \
        "$(jq -r .memory_mb <<<"$status")"
    check_eq "$name /status nodes match its entry" \
        "$(mst_field fixed-target "{.status.workers[?(@.name==\"$name\")].treeNodes}")" \
        "$(jq -r .nodes <<<"$status")"
    check_match "$name /logs has the build" BUILD_TREE_COMPLETE \
        "$(curl -s -m 5 "http://$ip:8080/logs" | jq -r '[.logs[].operation] | join(",")')"
done
check_match "kubectl get shows the test holding" 'fixed-target +Holding +256Mi +51[0-9]Mi +2/2' \
    "$(k -n "$ns" get mst fixed-target --no-headers)"
check_true "fixed target ends Succeeded" "phase: $(mst_field fixed-target '{.status.phase}')" \
    wait_until 60 phase_is fixed-target Succeeded

# --- a percent of the limit --------------------------------------------------------

sample percent-of-limit 's/durationSeconds: 60/durationSeconds: 5/' >/dev/null
check_true "percent test holds" "phase: $(mst_field percent-of-limit '{.status.phase}')" \
    wait_until 60 phase_is percent-of-limit Holding
check_eq "percent target resolves against the pod limit" 134217728 \
    "$(mst_field percent-of-limit '{.status.workers[0].targetBytes}')"
check_range "about 128Mi held, not half the machine" 134217728 136900000 \
    "$(mst_field percent-of-limit '{.status.workers[0].memoryBytes}')"
ip=$(k -n "$ns" get pod percent-of-limit-worker-0 -o jsonpath='{.status.podIP}')
check_eq "worker reports the cgroup as its percent base" cgroup \
    "$(curl -s -m 5 "http://$ip:8080/status" | jq -r .percent_base)"

# --- finding the limit -------------------------------------------------------------

out=$(sed 's/allowOOM: true/allowOOM: false/; s/name: find-oom-limit/name: no-oom/' \
    manifests/samples/find-oom-limit.yaml | k -n "$ns" apply -f - 2>&1)
check_match "above the limit without allowOOM is refused" \
    "memory must be below template.resources.limits.memory" "$out"
sample find-oom-limit >/dev/null
check_true "find-oom-limit succeeds at the OOM kill" "phase: $(mst_field find-oom-limit '{.status.phase}')" \
    wait_until 60 phase_is find-oom-limit Succeeded
check_eq "OOM kill recorded" OOMKilled "$(mst_field find-oom-limit '{.status.workers[0].reason}')"
check_eq "exit code 137" 137 "$(mst_field find-oom-limit '{.status.workers[0].exitCode}')"
check_eq "pod reports OOMKilled" OOMKilled \
    "$(k -n "$ns" get pod find-oom-limit-worker-0 -o jsonpath='{.status.containerStatuses[0].state.terminated.reason}')"
# RSS also counts shared library pages charged to other cgroups, so the last
# figure may sit a few MiB above the 128Mi limit.
check_range "last memory reported within 10% of 128Mi" 120795955 147639500 \
    "$(mst_field find-oom-limit '{.status.workers[0].memoryBytes}')"
check_match "wide view counts the OOM kill" 'find-oom-limit +Succeeded .* 30 +1$' \
    "$(k -n "$ns" get mst find-oom-limit -o wide --no-headers)"

# --- stop and deletion ---------------------------------------------------------------

sample spread 's/workers: 4/workers: 2/; s/durationSeconds: 120/durationSeconds: 600/' >/dev/null
check_true "spread test holds" "phase: $(mst_field spread '{.status.phase}')" \
    wait_until 60 phase_is spread Holding
nodes=$(k -n "$ns" get pods -l memstress.dev/test=spread -o jsonpath='{.items[*].spec.nodeName}' |
    tr ' ' '\n' | sort -u | wc -l)
check_eq "spread workers land on both nodes" 2 "$nodes"
k -n "$ns" patch mst spread --type merge -p '{"spec":{"stop":true}}' >/dev/null
check_true "stop ends in Stopped within one log interval" "phase: $(mst_field spread '{.status.phase}')" \
    wait_until 5 phase_is spread Stopped
k -n "$ns" delete mst spread --wait=false >/dev/null
check_true "deleting the test removes its pods" "pods left" wait_until 30 pods_gone spread

# --- restarts in the middle of a test ----------------------------------------------

sample fixed-target 's/name: fixed-target/name: survivor/; s/durationSeconds: 60/durationSeconds: 15/; s/256Mi/64Mi/' >/dev/null
check_true "survivor holds" "phase: $(mst_field survivor '{.status.phase}')" \
    wait_until 60 phase_is survivor Holding
k -n memstress-system delete pod -l app.kubernetes.io/name=memstress-controller --wait=false >/dev/null
hack/local-up.sh restart-apiserver >/dev/null 2>&1
check_true "controller comes back" "not available" wait_until 90 controller_ready
check_true "survivor still ends Succeeded" "phase: $(mst_field survivor '{.status.phase}')" \
    wait_until 90 phase_is survivor Succeeded
check_eq "no worker replaced or duplicated" 2 "$(pod_count survivor)"
check_eq "survivor lost no worker" "" "$(mst_field survivor '{.status.workers[*].reason}')"

finish
