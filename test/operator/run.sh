#!/usr/bin/env bash
# The operator against a real control plane and the node agent, driven with
# kubectl and curl: schema validation, worker pods, status aggregation,
# stop, TTL, deletion, lost workers, allowOOM, leader election, an API
# server restart, metrics, and the controller Deployment from manifests/.
#
# It brings up the local cluster (hack/local-up.sh) if it is not running,
# scales the installed controller to zero while it runs its own, uses one
# namespace per run, and stops the controllers it starts by PID.  At the end
# the installed controller is back.  Everything listens on 127.0.0.x.
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib.sh

controller_bin=bin/memstress-controller
[[ -x $controller_bin ]] || { echo "missing $controller_bin; run make"; exit 1; }
hack/local-up.sh >/dev/null || { echo "local-up failed"; exit 1; }
hack/agent-up.sh >/dev/null || { echo "agent-up failed"; exit 1; }

kubeconfig=$PWD/.local/kubeconfig
k() { .local/bin/kubectl --kubeconfig "$kubeconfig" "$@"; }
ns=memstress-operator-$$
tmp=$(mktemp -d /tmp/memstress-operator.XXXXXX)
controller_pids=()

cleanup() {
    local pid
    for pid in "${controller_pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${controller_pids[@]}"; do wait "$pid" 2>/dev/null; done
    k delete namespace "$ns" --wait=false >/dev/null 2>&1
    # Leave the operator installed as hack/local-up.sh installs it.
    k apply -k . >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

# start_controller NAME PORT [ARGS...]: sets $controller_pid.
start_controller() {
    local name=$1 port=$2
    shift 2
    "$controller_bin" --kubeconfig "$kubeconfig" --listen "127.0.0.1:$port" \
        --worker-image memstress:dev "$@" >"$tmp/$name.log" 2>&1 &
    controller_pid=$!
    controller_pids+=("$controller_pid")
}

mst_field() { k -n "$ns" get mst "$1" -o jsonpath="$2" 2>/dev/null; }
phase_is() { [[ $(mst_field "$1" '{.status.phase}') == "$2" ]]; }
pod_count() { k -n "$ns" get pods -l "memstress.dev/test=$1" --no-headers 2>/dev/null | wc -l; }
pods_gone() { [[ $(pod_count "$1") -eq 0 ]]; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

# apply_test NAME SPEC-YAML: creates a MemoryStressTest in the namespace.
apply_test() {
    printf 'apiVersion: memstress.dev/v1alpha1\nkind: MemoryStressTest\nmetadata:\n  name: %s\nspec:\n%s\n' \
        "$1" "$2" | k -n "$ns" apply -f - 2>&1
}

# --- the schema -----------------------------------------------------------------

k apply -f crds/ -f manifests/00-namespace.yaml -f manifests/10-rbac.yaml >/dev/null
# The controllers of this suite are started by hand; the installed one would
# race them for the Lease and the tests.
k -n memstress-system scale deployment memstress-controller --replicas=0 \
    >/dev/null 2>&1
wait_until 60 bash -c "[[ -z \$(.local/bin/kubectl --kubeconfig $kubeconfig -n memstress-system get pods -l app.kubernetes.io/name=memstress-controller -o name) ]]"
k -n memstress-system delete lease memstress-controller --ignore-not-found \
    >/dev/null 2>&1
check_true "CRD established" "not established in 30 s" \
    k wait --for condition=established crd/memorystresstests.memstress.dev --timeout=30s
k create namespace "$ns" >/dev/null
check_match "explain documents memoryPercent" "percent of its" \
    "$(k explain mst.spec.memoryPercent 2>&1)"
check_match "explain documents allowOOM" "OOM kill" \
    "$(k explain mst.spec.allowOOM 2>&1)"
check_match "explain lists status phase values" "Holding" \
    "$(k explain mst.status.phase 2>&1)"

rejects() {
    local name=$1 spec=$2 message=$3 out
    out=$(printf 'apiVersion: memstress.dev/v1alpha1\nkind: MemoryStressTest\nmetadata:\n  name: bad\nspec:\n%s\n' "$spec" |
        k -n "$ns" create --dry-run=server -f - 2>&1)
    check_match "rejects $name" "$message" "$out"
}
accepts() {
    local name=$1 spec=$2 out
    out=$(printf 'apiVersion: memstress.dev/v1alpha1\nkind: MemoryStressTest\nmetadata:\n  name: good\nspec:\n%s\n' "$spec" |
        k -n "$ns" create --dry-run=server -f - 2>&1)
    check_match "accepts $name" "created \\(server dry run\\)" "$out"
}
accepts "memory as a plain byte count" "  memory: 268435456"
accepts "payloadSize as a plain byte count" "  memory: 64Mi
  payloadSize: 4096"
accepts "memory as a decimal quantity" "  memory: 0.5Gi"
rejects "no target" "  workers: 1" "exactly one of memory and memoryPercent"
rejects "both targets" "  memory: 64Mi
  memoryPercent: 10" "exactly one of memory and memoryPercent"
rejects "memory below 10Mi" "  memory: 5Mi" "memory must be at least 10Mi"
rejects "memory above 1Ti" "  memory: 2Ti" "memory must be at most 1Ti"
rejects "a non-quantity memory" "  memory: lots" "memory must be a quantity"
rejects "zero workers" "  memory: 64Mi
  workers: 0" "spec.workers.*greater than or equal to 1"
rejects "101 workers" "  memory: 64Mi
  workers: 101" "spec.workers.*less than or equal to 100"
rejects "duration 4" "  memory: 64Mi
  durationSeconds: 4" "durationSeconds.*greater than or equal to 5"
rejects "duration 3601" "  memory: 64Mi
  durationSeconds: 3601" "durationSeconds.*less than or equal to 3600"
rejects "log interval 61" "  memory: 64Mi
  logIntervalSeconds: 61" "logIntervalSeconds.*less than or equal to 60"
rejects "memoryPercent 96" "  memoryPercent: 96" "memoryPercent.*less than or equal to 95"
rejects "cpuPercent 0" "  memory: 64Mi
  cpuPercent: 0" "cpuPercent.*greater than or equal to 1"
rejects "payload 20Mi" "  memory: 64Mi
  payloadSize: 20Mi" "payloadSize must be between 1Ki and 10Mi"
rejects "memoryPercent without a limit" "  memoryPercent: 50" \
    "memoryPercent must come with template.resources.limits.memory"
rejects "target above the limit without allowOOM" "  memory: 512Mi
  template:
    resources:
      limits:
        memory: 128Mi" "memory must be below template.resources.limits.memory"
rejects "an unknown toleration operator" "  memory: 64Mi
  template:
    tolerations:
    - operator: Maybe" 'Unsupported value: "Maybe"'
rejects "a long image name" "  memory: 64Mi
  template:
    image: $(printf 'x%.0s' $(seq 1 600))" "may not be more than 512 bytes|Too long"

# --- pods and status, with one controller ------------------------------------------

start_controller main 28181
main_pid=$controller_pid
check_true "controller ready" "no /readyz in 20 s" \
    wait_until 20 curl -sf http://127.0.0.1:28181/readyz -o /dev/null

spec_basic="  memory: 32Mi
  workers: 2
  durationSeconds: 6
  logIntervalSeconds: 1"
apply_test basic "$spec_basic" >/dev/null
check_true "two worker pods created" "pods never appeared" \
    wait_until 20 bash -c "[[ \$(.local/bin/kubectl --kubeconfig $kubeconfig -n $ns get pods -l memstress.dev/test=basic --no-headers | wc -l) -eq 2 ]]"
pod_json=$(k -n "$ns" get pod basic-worker-0 -o json)
check_eq "pod has a controller owner" "true" \
    "$(jq -r '.metadata.ownerReferences[0].controller' <<<"$pod_json")"
check_eq "owner is the test" "basic" \
    "$(jq -r '.metadata.ownerReferences[0].name' <<<"$pod_json")"
check_eq "restart policy Never" "Never" "$(jq -r .spec.restartPolicy <<<"$pod_json")"
check_eq "pod runs as non-root" "true" \
    "$(jq -r .spec.securityContext.runAsNonRoot <<<"$pod_json")"
check_eq "readiness probe on /readyz" "/readyz" \
    "$(jq -r '.spec.containers[0].readinessProbe.httpGet.path' <<<"$pod_json")"
check_eq "guaranteed QoS" "Guaranteed" "$(jq -r .status.qosClass <<<"$pod_json")"
check_eq "memory limit is target plus overhead" "56Mi" \
    "$(jq -r '.spec.containers[0].resources.limits.memory' <<<"$pod_json")"
uids_before=$(k -n "$ns" get pods -l memstress.dev/test=basic -o jsonpath='{.items[*].metadata.uid}')
check_match "re-apply changes nothing" "unchanged" "$(apply_test basic "$spec_basic")"
sleep 1
check_eq "re-apply keeps the same pods" "$uids_before" \
    "$(k -n "$ns" get pods -l memstress.dev/test=basic -o jsonpath='{.items[*].metadata.uid}')"

check_true "test reaches Holding" "phase: $(mst_field basic '{.status.phase}')" \
    wait_until 30 phase_is basic Holding
check_eq "both workers hold" "2/2" "$(mst_field basic '{.status.workersReady}')"
for i in 0 1; do
    mem=$(mst_field basic "{.status.workers[?(@.name==\"basic-worker-$i\")].memoryBytes}")
    check_range "worker $i within 2% of 32Mi" 33554432 34225521 "$mem"
    ip=$(k -n "$ns" get pod "basic-worker-$i" -o jsonpath='{.status.podIP}')
    check_match "worker $i pod IP is loopback" '^127\.' "$ip"
    check_eq "worker $i answers curl on its pod IP" 32 \
        "$(curl -s "http://$ip:8080/status" | jq -r .target_mb)"
done
check_eq "WorkersReady condition" "True" \
    "$(mst_field basic '{.status.conditions[?(@.type=="WorkersReady")].status}')"
check_eq "Succeeded is Unknown while running" "Unknown" \
    "$(mst_field basic '{.status.conditions[?(@.type=="Succeeded")].status}')"
check_true "test Succeeds after its duration" "phase: $(mst_field basic '{.status.phase}')" \
    wait_until 30 phase_is basic Succeeded
check_eq "Succeeded condition True" "True" \
    "$(mst_field basic '{.status.conditions[?(@.type=="Succeeded")].status}')"
check_match "completion time set" '^20[0-9-]+T' "$(mst_field basic '{.status.completionTime}')"
check_eq "observed generation" "$(mst_field basic '{.metadata.generation}')" \
    "$(mst_field basic '{.status.observedGeneration}')"
events=$(k -n "$ns" get events --field-selector involvedObject.name=basic -o jsonpath='{.items[*].reason}')
for reason in Building TargetReached Succeeded; do
    check_match "Event $reason emitted" "(^| )$reason( |$)" "$events"
done
check_match "event summary has the completion" STRESS_TEST_COMPLETE \
    "$(mst_field basic '{.status.events[*].operation}')"
wide=$(k -n "$ns" get mst basic -o wide --no-headers)
check_match "kubectl get shows phase, target, workers" 'basic +Succeeded +32Mi +[0-9]+Mi +2/2' "$wide"

out=$(k -n "$ns" patch mst basic --type merge -p '{"spec":{"durationSeconds":9}}' 2>&1)
check_match "spec change after start is refused" "delete and re-create" "$out"
out=$(k -n "$ns" patch mst basic --type merge -p '{"spec":{"ttlSecondsAfterFinished":600}}' 2>&1)
check_match "ttl may change after start" "patched" "$out"

# --- stop, TTL, deletion, a lost worker --------------------------------------------

apply_test stopper "  memory: 16Mi
  durationSeconds: 600
  logIntervalSeconds: 2" >/dev/null
check_true "stopper reaches Holding" "never Holding" wait_until 30 phase_is stopper Holding
k -n "$ns" patch mst stopper --type merge -p '{"spec":{"stop":true}}' >/dev/null
started=$SECONDS
check_true "stop ends in Stopped within one log interval" "phase: $(mst_field stopper '{.status.phase}')" \
    wait_until 4 phase_is stopper Stopped
check_eq "stopped worker keeps running for curl" Running \
    "$(k -n "$ns" get pod stopper-worker-0 -o jsonpath='{.status.phase}')"

apply_test ttl "  memory: 16Mi
  durationSeconds: 5
  ttlSecondsAfterFinished: 2" >/dev/null
check_true "TTL deletes the finished test" "still there" \
    wait_until 40 bash -c "! .local/bin/kubectl --kubeconfig $kubeconfig -n $ns get mst ttl >/dev/null 2>&1"
check_true "TTL deletion removes the pods" "pods left" wait_until 30 pods_gone ttl

apply_test doomed "  memory: 16Mi
  durationSeconds: 600" >/dev/null
check_true "doomed test runs" "never Holding" wait_until 30 phase_is doomed Holding
k -n "$ns" delete mst doomed --wait=false >/dev/null
check_true "deleting a test removes its pods" "pods left" wait_until 30 pods_gone doomed

apply_test lossy "  memory: 16Mi
  workers: 2
  durationSeconds: 600" >/dev/null
check_true "lossy test holds" "never Holding" wait_until 30 phase_is lossy Holding
k -n "$ns" delete pod lossy-worker-1 --wait=false >/dev/null
check_true "a deleted worker fails the test" "phase: $(mst_field lossy '{.status.phase}')" \
    wait_until 30 phase_is lossy Failed
check_eq "lost worker reason Deleted" Deleted \
    "$(mst_field lossy '{.status.workers[?(@.name=="lossy-worker-1")].reason}')"
check_eq "lost pod not replaced" 1 "$(pod_count lossy)"

apply_test oom "  memory: 256Mi
  allowOOM: true
  rampMiBPerSecond: 64
  logIntervalSeconds: 1
  durationSeconds: 30
  template:
    resources:
      limits:
        memory: 96Mi" >/dev/null
check_true "allowOOM test succeeds at the kill" "phase: $(mst_field oom '{.status.phase}')" \
    wait_until 60 phase_is oom Succeeded
check_eq "OOM kill recorded" OOMKilled \
    "$(mst_field oom '{.status.workers[0].reason}')"
check_eq "oomKills counted" 1 "$(mst_field oom '{.status.oomKills}')"
check_range "memory reached near the 96Mi limit" 90596966 110729625 \
    "$(mst_field oom '{.status.workers[0].memoryBytes}')"
check_eq "Succeeded reason names the limit" OOMLimitFound \
    "$(mst_field oom '{.status.conditions[?(@.type=="Succeeded")].reason}')"

check_range "metrics count reconciles" 1 1e12 "$(metric 28181 memstress_controller_reconciles_total)"
check_range "metrics count succeeded tests" 2 100 \
    "$(metric 28181 'memstress_controller_tests{phase="Succeeded"}')"
check_match "metrics expose a duration histogram" 'reconcile_duration_seconds_bucket' \
    "$(curl -s http://127.0.0.1:28181/metrics)"

# --- an API server restart in the middle of reconciling ----------------------------

apply_test restart "  memory: 16Mi
  workers: 3
  durationSeconds: 8
  logIntervalSeconds: 1" >/dev/null
hack/local-up.sh restart-apiserver >/dev/null 2>&1
check_true "converges after an API server restart" "phase: $(mst_field restart '{.status.phase}')" \
    wait_until 90 phase_is restart Succeeded
check_eq "exactly three pods after the restart" 3 "$(pod_count restart)"

kill -TERM "$main_pid"
check_true "SIGTERM stops the controller" "still running after 10 s" \
    wait_until 10 bash -c "! kill -0 $main_pid 2>/dev/null"
wait "$main_pid"
check_eq "controller exits 0 on SIGTERM" 0 "$?"

# --- leader election -------------------------------------------------------------------

election=(--leader-elect --leader-election-namespace memstress-system
    --lease-duration 4 --renew-deadline 3 --retry-period 1)
start_controller first 28182 "${election[@]}"
first_pid=$controller_pid
wait_until 15 bash -c "curl -s http://127.0.0.1:28182/metrics | grep -q '^memstress_controller_leader 1'"
start_controller second 28183 "${election[@]}"
second_pid=$controller_pid
wait_until 10 curl -sf http://127.0.0.1:28183/readyz -o /dev/null
check_eq "first controller leads" 1 "$(metric 28182 memstress_controller_leader)"
check_eq "second controller waits" 0 "$(metric 28183 memstress_controller_leader)"
check_eq "standby is ready" 200 "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:28183/readyz)"

kill -KILL "$first_pid"
killed_at=$SECONDS
apply_test failover "  memory: 16Mi
  workers: 2
  durationSeconds: 5" >/dev/null
check_true "standby takes over" "no leader after 15 s" \
    wait_until 15 bash -c "curl -s http://127.0.0.1:28183/metrics | grep -q '^memstress_controller_leader 1'"
check_range "takeover within the lease duration plus a retry" 0 7 $((SECONDS - killed_at))
check_true "failover test succeeds" "phase: $(mst_field failover '{.status.phase}')" \
    wait_until 60 phase_is failover Succeeded
check_eq "nothing duplicated after failover" 2 "$(pod_count failover)"
check_eq "lease names the new leader" "$(k -n memstress-system get lease memstress-controller -o jsonpath='{.spec.holderIdentity}')" \
    "$(k -n memstress-system get lease memstress-controller -o jsonpath='{.spec.holderIdentity}' | grep "_$second_pid$")"
kill -TERM "$second_pid"
wait "$second_pid"
check_eq "lease released on shutdown" "" \
    "$(k -n memstress-system get lease memstress-controller -o jsonpath='{.spec.holderIdentity}')"

# --- the Deployment from manifests/ ----------------------------------------------------

k apply -k . >/dev/null
check_true "controller Deployment becomes available" "not available in 60 s" \
    k -n memstress-system wait --for condition=available deployment/memstress-controller --timeout=60s
apply_test deployed "  memory: 16Mi
  durationSeconds: 5" >/dev/null
check_true "the deployed controller runs a test" "phase: $(mst_field deployed '{.status.phase}')" \
    wait_until 60 phase_is deployed Succeeded

finish
