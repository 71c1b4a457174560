#!/usr/bin/env bash
# Installs the operator into the local cluster: the resource definition, the
# namespace, RBAC and the controller Deployment (`kubectl apply -k .`), then
# waits until the controller is available.
#
# The node agent runs the controller pod from this checkout's bin/ (it maps
# the container's command to the locally built binary), so it builds first.
# Safe to run again: apply changes nothing when nothing changed.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kubectl=$repo_root/.local/bin/kubectl
kubeconfig=$repo_root/.local/kubeconfig
timeout=${MEMSTRESS_READY_TIMEOUT:-120}

log() {
    printf '[operator-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

[[ -x $kubectl && -f $kubeconfig ]] || {
    log "error: $kubeconfig is missing; run hack/local-up.sh first"
    exit 1
}
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }

log "building bin/memstress-controller and bin/memstress-worker"
make -C "$repo_root" --no-print-directory all >/dev/null
k apply -f "$repo_root/crds/" >/dev/null
k wait --for condition=established --timeout=30s \
    crd/memorystresstests.memstress.dev >/dev/null
k apply -k "$repo_root" >/dev/null
# A rebuilt binary is only picked up by a new pod.
if [[ ${1:-} == --restart ]]; then
    k -n memstress-system rollout restart deployment/memstress-controller >/dev/null
fi
if ! k -n memstress-system rollout status deployment/memstress-controller \
    --timeout="${timeout}s" >/dev/null; then
    log "error: the controller Deployment is not available after ${timeout}s"
    k -n memstress-system get pods -o wide >&2 || true
    exit 1
fi
log "controller available: $kubectl --kubeconfig $kubeconfig get mst -A"
