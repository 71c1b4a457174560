#!/usr/bin/env bash
# Measures the node agent. Figures: its RSS before and with N more small pods
# (`sleep`, default 50, at most 100), the time until all N are Running, and
# the time from `kubectl apply` of a worker pod with a readiness probe
# (periodSeconds 1) to Ready. Prints one line per figure.
# Bounded: every wait has a deadline, and the namespace is deleted at the
# end. Needs the cluster and the agent running (make local-up agent-up).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

count=${1:-50}
if ! [[ "$count" =~ ^[0-9]+$ ]] || ((count < 1 || count > 100)); then
    echo "usage: test/agent/load.sh [PODS], PODS between 1 and 100" >&2
    exit 2
fi
kubectl=.local/bin/kubectl
namespace=memstress-agent-load-$$
agent_pid=$(cat .local/pids/node-agent.pid 2>/dev/null) || {
    echo "no node agent PID file; run make local-up agent-up first" >&2
    exit 1
}

k() {
    "$kubectl" --kubeconfig .local/kubeconfig "$@"
}

rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$agent_pid/status"
}

running_count() {
    k -n "$namespace" get pods -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Running$'
}

cleanup() {
    k delete namespace "$namespace" --wait=false >/dev/null 2>&1
    local deadline=$((SECONDS + 120))
    while k get namespace "$namespace" >/dev/null 2>&1 && ((SECONDS < deadline)); do
        sleep 0.5
    done
}
trap cleanup EXIT

k create namespace "$namespace" >/dev/null
deadline=$((SECONDS + 30))
until k -n "$namespace" get serviceaccount default >/dev/null 2>&1 || ((SECONDS >= deadline)); do
    sleep 0.3
done
echo "agent RSS before the load: $(rss_mib) MiB"

for i in $(seq 1 "$count"); do
    cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: sleep-$i}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - {name: sleep, image: busybox, command: [sleep, "600"], resources: {limits: {memory: 16Mi}}}
---
EOF
done >"/tmp/$namespace.yaml"
started=$(date +%s.%N)
k -n "$namespace" apply -f "/tmp/$namespace.yaml" >/dev/null
rm -f "/tmp/$namespace.yaml"
deadline=$((SECONDS + 180))
while (($(running_count) < count)) && ((SECONDS < deadline)); do
    sleep 0.5
done
echo "pods Running: $(running_count) of $count after $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
sleep 2 # let the status writes settle before reading RSS
echo "agent RSS with $count more pods: $(rss_mib) MiB"

started=$(date +%s.%N)
k -n "$namespace" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: worker}
spec:
  containers:
  - name: worker
    image: memstress-worker
    command: [memstress-worker, --listen, "$(POD_IP):8080"]
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    resources: {limits: {memory: 128Mi}}
    readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
EOF
deadline=$((SECONDS + 60))
until [[ "$(k -n "$namespace" get pod worker -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] ||
    ((SECONDS >= deadline)); do
    sleep 0.1
done
echo "worker pod apply to Ready: $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
