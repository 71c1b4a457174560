#!/usr/bin/env bash
# The demo: the operator's main job on a local cluster, as a user lives it.
#
#   1. installs what is missing and builds (the first build of the control
#      plane from the Kubernetes Go modules takes several minutes);
#   2. starts the local cluster: control plane, node agent and controller;
#   3. applies a MemoryStressTest with two workers of 256 MiB each;
#   4. shows `kubectl get mst` rows until both workers hold their target;
#   5. curls each worker pod's /status on its pod IP.
# The cluster keeps running afterwards; `make local-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

namespace=memstress-demo
test_name=fixed-target
k() { .local/bin/kubectl --kubeconfig .local/kubeconfig "$@"; }

echo "==> Installing dependencies and building"
hack/deps.sh
make --no-print-directory all

echo "==> Starting the local cluster (hack/local-up.sh)"
hack/local-up.sh

echo
echo "==> kubectl apply -n $namespace -f manifests/samples/fixed-target.yaml"
k create namespace "$namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "$namespace" delete mst "$test_name" --ignore-not-found --wait=true >/dev/null
k -n "$namespace" apply -f manifests/samples/fixed-target.yaml

echo
echo "==> kubectl get mst -n $namespace (until both workers hold 256Mi)"
row_format='%-14s %-10s %-8s %-8s %-8s %s\n'
# shellcheck disable=SC2059 # the format is the constant above
printf "$row_format" NAME PHASE TARGET MEMORY WORKERS AGE
deadline=$((SECONDS + 180))
last=""
while ((SECONDS < deadline)); do
    row=$(k -n "$namespace" get mst "$test_name" --no-headers 2>/dev/null || true)
    # Print a row when something other than the age changed.
    key=$(awk '{ $NF = ""; $1 = $1; print }' <<<"$row")
    if [[ $key != "$last" ]]; then
        # shellcheck disable=SC2059,SC2086 # constant format; fields split on purpose
        printf "$row_format" $row
        last=$key
    fi
    phase=$(k -n "$namespace" get mst "$test_name" -o jsonpath='{.status.phase}')
    [[ $phase == Holding || $phase == Succeeded || $phase == Failed ]] && break
    sleep 0.5
done
if [[ $phase != Holding && $phase != Succeeded ]]; then
    echo "demo: the test did not reach Holding (phase '$phase'); see:" >&2
    echo "  .local/bin/kubectl --kubeconfig .local/kubeconfig -n $namespace describe mst $test_name" >&2
    exit 1
fi

echo
echo "==> kubectl get pods -n $namespace -o wide"
k -n "$namespace" get pods -o wide
for pod in $(k -n "$namespace" get pods -l "memstress.dev/test=$test_name" -o name); do
    ip=$(k -n "$namespace" get "$pod" -o jsonpath='{.status.podIP}')
    echo
    echo "==> curl http://$ip:8080/status   (${pod#pod/})"
    curl -s "http://$ip:8080/status" |
        jq '{state, memory_mb, target_mb, limit_mb, percent_base, nodes, searches}'
done

cat <<EOT

The test holds its memory for 60 s, then ends Succeeded. Try next:
  eval "\$(hack/local-up.sh env)"        # kubectl and KUBECONFIG for this cluster
  kubectl get mst -A -o wide
  kubectl -n $namespace describe mst $test_name
  kubectl -n $namespace patch mst $test_name --type merge -p '{"spec":{"stop":true}}'
  kubectl -n $namespace apply -f manifests/samples/find-oom-limit.yaml
  curl http://<pod IP>:8080/logs
  make local-down                        # stop the local cluster
EOT
