#!/usr/bin/env bash
# Checks the local control plane of hack/local-up.sh against a real cluster:
# readiness, the pinned version, a safe second start, service-account tokens
# from the TokenRequest API, garbage collection through ownerReferences,
# namespace deletion, an apiserver restart that keeps the etcd state, and a
# local-down that leaves none of its PIDs alive.
#
# The first run on a machine builds the binaries with hack/build-kube.sh,
# which takes minutes.
# The suite stops the cluster near its end, then starts it again only when
# it was running before the suite began, so it leaves the cluster as found.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/lib.sh

kubeconfig=.local/kubeconfig
kubectl=.local/bin/kubectl
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)
namespace=memstress-cluster-test-$$
# shellcheck disable=SC2016 # the pattern matches a literal ${...}
pinned_version=$(sed -n 's/^KUBE_VERSION=\${MEMSTRESS_KUBE_VERSION:-\(v[0-9.]*\)}$/\1/p' hack/build-kube.sh)

kubectl_admin() {
    "$kubectl" --kubeconfig "$kubeconfig" "$@"
}

# Runs kubectl with its output discarded, for checks that need only the
# exit status.
kubectl_quiet() {
    kubectl_admin "$@" >/dev/null 2>&1
}

# Polls COMMAND every half second until it succeeds or TIMEOUT seconds pass.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while ((SECONDS < deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

pid_of() {
    cat ".local/pids/$1.pid" 2>/dev/null || echo none
}

# Succeeds when PID is alive and still runs the named component.
pid_runs() {
    local name=$1 pid=$2
    [[ "$pid" =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    [[ "$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)" == */"$name" ]]
}

pid_gone() {
    ! pid_runs "$1" "$2"
}

readyz() {
    kubectl_admin get --raw /readyz 2>&1 || true
}

object_missing() {
    ! kubectl_admin get "$@" >/dev/null 2>&1
}

was_running=false
if hack/local-up.sh status >/dev/null 2>&1; then
    was_running=true
fi
echo "cluster running before the suite: $was_running"

# --- start ------------------------------------------------------------------
up_started=$SECONDS
up_output=$(hack/local-up.sh 2>&1) && up_status=0 || up_status=$?
echo "local-up took $((SECONDS - up_started))s"
check_eq "local-up exits 0" 0 "$up_status"
if [[ $up_status -ne 0 ]]; then
    printf '%s\n' "$up_output" | tail -n 40
    finish
    exit 1
fi
check_eq "readyz is ok" ok "$(readyz)"

# --- version ----------------------------------------------------------------
check_match "pinned version found in build-kube.sh" '^v1\.[0-9]+\.[0-9]+$' "$pinned_version"
version_json=$(kubectl_admin version -o json 2>/dev/null || true)
check_eq "server version is pinned" "$pinned_version" \
    "$(jq -r '.serverVersion.gitVersion' <<<"$version_json" 2>/dev/null)"
check_eq "kubectl version is pinned" "$pinned_version" \
    "$(jq -r '.clientVersion.gitVersion' <<<"$version_json" 2>/dev/null)"

# --- second local-up --------------------------------------------------------
declare -A pids_before
for name in "${components[@]}"; do
    pids_before[$name]=$(pid_of "$name")
done
hack/local-up.sh >/dev/null 2>&1 && again_status=0 || again_status=$?
check_eq "second local-up exits 0" 0 "$again_status"
for name in "${components[@]}"; do
    check_eq "second local-up keeps $name PID" "${pids_before[$name]}" "$(pid_of "$name")"
done

# --- service accounts and TokenRequest --------------------------------------
check_true "namespace created" "kubectl create namespace $namespace failed" \
    kubectl_quiet create namespace "$namespace"
check_true "default service account appears" \
    "the serviceaccount controller created no 'default' ServiceAccount within 30s" \
    wait_until 30 kubectl_quiet -n "$namespace" get serviceaccount default
check_true "root CA ConfigMap appears" \
    "no kube-root-ca.crt ConfigMap in $namespace within 30s" \
    wait_until 30 kubectl_quiet -n "$namespace" get configmap kube-root-ca.crt
check_true "service account created" "kubectl create serviceaccount failed" \
    kubectl_quiet -n "$namespace" create serviceaccount tester
token=$(kubectl_admin -n "$namespace" create token tester --duration=10m 2>&1 || true)
check_match "TokenRequest returns a JWT" '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' "$token"

# The token alone, without the admin certificate, must authenticate as the
# service account.
server=$(kubectl_admin config view -o jsonpath='{.clusters[0].cluster.server}' || true)
whoami=$("$kubectl" --kubeconfig /dev/null --server "$server" \
    --certificate-authority .local/pki/ca.crt --token "$token" \
    auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1 || true)
check_eq "token authenticates as tester" "system:serviceaccount:$namespace:tester" "$whoami"

# --- garbage collection -----------------------------------------------------
kubectl_admin -n "$namespace" create configmap owner --from-literal=role=owner >/dev/null || true
owner_uid=$(kubectl_admin -n "$namespace" get configmap owner -o jsonpath='{.metadata.uid}' || true)
check_match "owner has a UID" '^[0-9a-f-]{36}$' "$owner_uid"
kubectl_admin -n "$namespace" apply -f - >/dev/null <<EOF || true
apiVersion: v1
kind: ConfigMap
metadata:
  name: dependent
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: owner
    uid: $owner_uid
data:
  role: dependent
EOF
check_true "dependent created" "ConfigMap dependent not found after apply" \
    kubectl_quiet -n "$namespace" get configmap dependent
kubectl_admin -n "$namespace" delete configmap owner --wait=true >/dev/null || true
check_true "garbage collector deletes dependent" \
    "ConfigMap dependent still exists 60s after its owner was deleted" \
    wait_until 60 object_missing -n "$namespace" configmap dependent

# --- apiserver restart ------------------------------------------------------
apiserver_before=$(pid_of kube-apiserver)
etcd_before=$(pid_of etcd)
restart_output=$(hack/local-up.sh restart-apiserver 2>&1) && restart_status=0 || restart_status=$?
check_eq "restart-apiserver exits 0" 0 "$restart_status"
[[ $restart_status -eq 0 ]] || printf '%s\n' "$restart_output" | tail -n 40
check_true "apiserver PID changes" "kube-apiserver PID is still $apiserver_before" \
    test "$(pid_of kube-apiserver)" != "$apiserver_before"
check_true "old apiserver stopped" "PID $apiserver_before still runs kube-apiserver" \
    pid_gone kube-apiserver "$apiserver_before"
check_eq "etcd PID unchanged by restart" "$etcd_before" "$(pid_of etcd)"
check_eq "readyz ok after restart" ok "$(readyz)"
check_true "state survives restart" "ServiceAccount tester missing after the restart" \
    kubectl_quiet -n "$namespace" get serviceaccount tester

# --- namespace deletion -----------------------------------------------------
kubectl_admin delete namespace "$namespace" --wait=false >/dev/null || true
check_true "namespace controller removes namespace" \
    "namespace $namespace still exists 90s after deletion" \
    wait_until 90 object_missing namespace "$namespace"

# --- local-down -------------------------------------------------------------
declare -A pids_running
for name in "${components[@]}"; do
    pids_running[$name]=$(pid_of "$name")
done
hack/local-down.sh >/dev/null 2>&1 && down_status=0 || down_status=$?
check_eq "local-down exits 0" 0 "$down_status"
for name in "${components[@]}"; do
    pid=${pids_running[$name]}
    check_true "local-down stops $name" "PID $pid still runs $name" \
        pid_gone "$name" "$pid"
    check_true "local-down removes $name PID file" ".local/pids/$name.pid still exists" \
        test ! -e ".local/pids/$name.pid"
done
check_match "readyz fails when down" 'refused|connect|Unable' "$(readyz)"

if [[ $was_running == true ]]; then
    hack/local-up.sh >/dev/null 2>&1 && restore_status=0 || restore_status=$?
    check_eq "local-up restores cluster" 0 "$restore_status"
fi

finish
