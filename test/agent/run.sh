#!/usr/bin/env bash
# Checks the node agent (hack/node-agent/, the kubelet stand-in of the local
# cluster) through kubectl and curl only. Cases: Ready nodes with fresh
# Leases, a worker pod with a 128Mi memory limit and readiness, the downward
# API, and the service-account token inside the pod's mount namespace. Then
# an OOM kill, exit codes, a liveness failure, a restart, graceful and forced
# deletion, an init container before two containers, pod deletion and
# readiness during an apiserver restart, and an agent stop that leaves no
# process or cgroup behind.
#
# Starts the control plane (hack/local-up.sh) and the agent when they are not
# running. An agent that the suite started is stopped at the end, which
# checks its clean-up. One that was running before is left running. Needs root
# for the memory cgroups, and bin/memstress-worker (make). The apiserver
# restart disturbs every client of the cluster for up to half a minute, and
# the suite leaves the apiserver running.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=test/lib.sh
source test/lib.sh

kubeconfig=.local/kubeconfig
kubectl=.local/bin/kubectl
namespace=memstress-agent-test-$$
tmp=$(mktemp -d /tmp/memstress-agent-test.XXXXXX)
agent_pid_file=.local/pids/node-agent.pid

k() {
    "$kubectl" --kubeconfig "$kubeconfig" "$@"
}

kn() {
    k -n "$namespace" "$@"
}

# Polls COMMAND every 0.3 s until it succeeds or TIMEOUT seconds pass.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while ((SECONDS < deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.3
    done
    return 1
}

# pod_field POD JSONPATH prints one field of a pod, or nothing.
pod_field() {
    kn get pod "$1" -o jsonpath="{$2}" 2>/dev/null
}

pod_phase_is() {
    [[ "$(pod_field "$1" .status.phase)" == "$2" ]]
}

pod_ready() {
    [[ "$(pod_field "$1" '.status.conditions[?(@.type=="Ready")].status')" == True ]]
}

pod_gone() {
    ! kn get pod "$1" >/dev/null 2>&1
}

# Succeeds when none of the named pods exists any more.
pods_gone() {
    [[ -z "$(kn get pod "$@" -o name --ignore-not-found 2>/dev/null)" ]] && kn get pods >/dev/null 2>&1
}

# Succeeds when the pod's Ready condition is False, not when it is unknown.
pod_not_ready() {
    [[ "$(pod_field "$1" '.status.conditions[?(@.type=="Ready")].status')" == False ]]
}

apiserver_up() {
    k get --raw /readyz --request-timeout=2s >/dev/null 2>&1
}

# Succeeds once the apiserver fails its readiness request or the process PID
# (the restart) has exited, whichever comes first.
apiserver_down_or_exited() {
    ! apiserver_up || pid_gone "$1"
}

pid_gone() {
    [[ ! -d /proc/$1 ]] || [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" == Z ]]
}

agent_running() {
    [[ -f $agent_pid_file && -d /proc/$(<"$agent_pid_file") ]]
}

cgroup_parent() {
    if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        echo /sys/fs/cgroup/memstress
    else
        echo /sys/fs/cgroup/memory/memstress
    fi
}

# Prints the cgroup directory of a pod, found by its UID under any node.
pod_cgroup() {
    local uid=$1
    find "$(cgroup_parent)" -mindepth 2 -maxdepth 2 -type d -name "$uid" 2>/dev/null | head -n 1
}

cleanup() {
    # A restart that failed half-way must not leave the cluster without
    # its apiserver.
    if ! wait_until 30 apiserver_up; then
        echo "note: kube-apiserver is not answering; starting it again"
        hack/local-up.sh restart-apiserver >/dev/null 2>&1 ||
            echo "note: hack/local-up.sh restart-apiserver failed; run it by hand"
    fi
    if k get namespace "$namespace" >/dev/null 2>&1; then
        k delete namespace "$namespace" --wait=false >/dev/null 2>&1
        wait_until 90 bash -c "! '$kubectl' --kubeconfig '$kubeconfig' get namespace '$namespace'" ||
            echo "note: namespace $namespace still exists after 90s"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- setup ----------------------------------------------------------------

[[ -x bin/memstress-worker ]] || {
    fail "worker binary built" "bin/memstress-worker is missing; run make"
    finish
    exit 1
}
# Read before local-up.sh, which starts the agent too.
agent_was_running=false
agent_running && agent_was_running=true
hack/local-up.sh >/dev/null 2>&1 || {
    fail "local control plane starts" "hack/local-up.sh failed; run it by hand to see why"
    finish
    exit 1
}
hack/agent-up.sh 2>"$tmp/agent-up.err" || {
    fail "node agent starts" "$(tail -n 5 "$tmp/agent-up.err")"
    finish
    exit 1
}
k create namespace "$namespace" >/dev/null
# The service-account controller creates "default" shortly after the
# namespace, and pods that name it are rejected until then.
wait_until 30 kn get serviceaccount default

# --- nodes and leases ----------------------------------------------------

nodes=$(k get nodes -l memstress.io/node-agent=true -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
check_range "at least two agent nodes" 2 1000 "$(grep -c . <<<"$nodes")"
for node in $nodes; do
    check_eq "$node Ready" True \
        "$(k get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
    check_eq "$node memory capacity" 4Gi "$(k get node "$node" -o jsonpath='{.status.capacity.memory}')"
    check_eq "$node has no not-ready taint" "" "$(k get node "$node" -o jsonpath='{.spec.taints}')"
    renew=$(k -n kube-node-lease get lease "$node" -o jsonpath='{.spec.renewTime}')
    age=$(($(date +%s) - $(date -d "$renew" +%s 2>/dev/null || echo 0)))
    check_range "$node lease renewed within 20s" 0 20 "$age"
done

# --- worker pod: readiness, address, cgroup limit --------------------------

cat >"$tmp/worker.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: worker
  labels: {app: memstress-worker}
spec:
  restartPolicy: Never
  containers:
  - name: worker
    image: memstress-worker:test
    command: [memstress-worker, --listen, "$(POD_IP):8080"]
    env:
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    resources:
      limits: {memory: 128Mi}
    readinessProbe:
      httpGet: {path: /readyz, port: 8080}
      periodSeconds: 1
EOF
apply_started=$(date +%s.%N)
kn apply -f "$tmp/worker.yaml" >/dev/null
check_true "worker pod Ready within 60s" "pod never became Ready: $(pod_field worker .status)" \
    wait_until 60 pod_ready worker
ready_seconds=$(awk -v a="$apply_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "     apply to Ready: ${ready_seconds}s"
check_eq "worker phase Running" Running "$(pod_field worker .status.phase)"
check_eq "worker container ready" true "$(pod_field worker '.status.containerStatuses[0].ready')"
check_eq "worker ContainersReady" True "$(pod_field worker '.status.conditions[?(@.type=="ContainersReady")].status')"
pod_ip=$(pod_field worker .status.podIP)
check_match "worker podIP is loopback" '^127\.[0-9]+\.[0-9]+\.[0-9]+$' "$pod_ip"
check_eq "worker podIPs lists podIP" "$pod_ip" "$(pod_field worker '.status.podIPs[0].ip')"
check_eq "worker hostIP" 127.0.0.1 "$(pod_field worker .status.hostIP)"
container_id=$(pod_field worker '.status.containerStatuses[0].containerID')
check_match "worker containerID" '^memstress://[0-9]+$' "$container_id"
check_match "worker startTime set" '^[0-9]{4}-' "$(pod_field worker .status.startTime)"
worker_pid=${container_id#memstress://}

status=$(curl -sS --max-time 5 "http://$pod_ip:8080/status")
check_eq "worker limit_mb from cgroup" 128 "$(jq -r '.limit_mb | floor' <<<"$status" 2>/dev/null)"
check_eq "worker percent_base" cgroup "$(jq -r .percent_base <<<"$status" 2>/dev/null)"
worker_uid=$(pod_field worker .metadata.uid)
worker_cgroup=$(pod_cgroup "$worker_uid")
check_true "worker pod cgroup exists" "no cgroup named $worker_uid under $(cgroup_parent)" test -n "$worker_cgroup"
check_match "worker process in its cgroup" "^$worker_pid\$" "$(cat "$worker_cgroup/worker/cgroup.procs" 2>/dev/null)"
check_match "kubectl logs shows the worker log" 'Started HTTP server' "$(kn logs worker 2>&1)"
check_true "worker log file" "missing .local/pods/${namespace}_worker/worker.log" \
    test -s ".local/pods/${namespace}_worker/worker.log"

# --- downward API and $(VAR) expansion ------------------------------------

cat >"$tmp/env.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: env
  labels: {app: env-test}
  annotations: {memstress.io/note: hello}
spec:
  restartPolicy: Never
  containers:
  - name: env
    image: busybox
    command: [sh, -c]
    # $1 passes the escaped reference to echo without the shell evaluating it.
    args:
    - 'echo "node=$MY_NODE limit=$MY_LIMIT cpu=$MY_CPU ip=$MY_IP ns=$MY_NS label=$MY_LABEL note=$MY_NOTE sa=$MY_SA host=$MY_HOST expanded=$(MY_NODE) $1"'
    - sh
    - escaped=$$(MY_NODE)
    env:
    - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: MY_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: MY_CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}
    - {name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: MY_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: MY_LABEL, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: MY_NOTE, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['memstress.io/note']"}}}
    - {name: MY_SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
    - {name: MY_HOST, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    resources:
      limits: {memory: 64Mi, cpu: 500m}
EOF
kn apply -f "$tmp/env.yaml" >/dev/null
check_true "env pod Succeeded within 60s" "phase: $(pod_field env .status.phase)" \
    wait_until 60 pod_phase_is env Succeeded
env_node=$(pod_field env .spec.nodeName)
env_ip=$(pod_field env .status.podIP)
env_line=$(kn logs env 2>&1)
check_match "env MY_NODE" "node=$env_node " "$env_line"
check_match "env MY_LIMIT in MiB" 'limit=64 ' "$env_line"
check_match "env MY_CPU in millicores" 'cpu=500 ' "$env_line"
check_match "env MY_IP is podIP" "ip=$env_ip " "$env_line"
check_match "env MY_NS" "ns=$namespace " "$env_line"
check_match "env label" 'label=env-test ' "$env_line"
check_match "env annotation" 'note=hello ' "$env_line"
check_match "env service account" 'sa=default ' "$env_line"
check_match "env hostIP" 'host=127.0.0.1 ' "$env_line"
check_match "args expand \$(VAR)" "expanded=$env_node " "$env_line"
check_match "args keep \$\$(VAR) literal" 'escaped=\$\(MY_NODE\)' "$env_line"
check_eq "env exit reason Completed" Completed "$(pod_field env '.status.containerStatuses[0].state.terminated.reason')"
check_eq "env exit code 0" 0 "$(pod_field env '.status.containerStatuses[0].state.terminated.exitCode')"

# --- service-account token inside the pod ----------------------------------

cat >"$tmp/token.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: token
spec:
  restartPolicy: Never
  containers:
  - name: token
    image: busybox
    command:
    - sh
    - -c
    - |
      dir=/var/run/secrets/kubernetes.io/serviceaccount
      echo "namespace=$(cat $dir/namespace)"
      curl -sS --cacert $dir/ca.crt -H "Authorization: Bearer $(cat $dir/token)" \
        -H 'Content-Type: application/json' -X POST \
        -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' \
        "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews"
EOF
kn apply -f "$tmp/token.yaml" >/dev/null
check_true "token pod Succeeded within 60s" "phase: $(pod_field token .status.phase)" \
    wait_until 60 pod_phase_is token Succeeded
token_log=$(kn logs token 2>&1)
check_match "pod reads its namespace file" "namespace=$namespace" "$token_log"
check_match "apiserver accepts the pod token" "\"username\": *\"system:serviceaccount:$namespace:default\"" "$token_log"
check_eq "token is bound to the pod" token \
    "$(sed 1d <<<"$token_log" | jq -r '.status.userInfo.extra["authentication.kubernetes.io/pod-name"][0]' 2>/dev/null)"
check_true "host does not see the pod token" "/var/run/secrets/kubernetes.io/serviceaccount/token exists outside the pod" \
    test ! -e /var/run/secrets/kubernetes.io/serviceaccount/token

# --- init container and two containers ------------------------------------

cat >"$tmp/multi.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: multi
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: init
    image: busybox
    command: [sh, -c, 'echo initialized > $tmp/multi.init']
  containers:
  - name: first
    image: busybox
    command: [sh, -c, 'cat $tmp/multi.init; sleep 300']
  - name: second
    image: busybox
    command: [sleep, "300"]
EOF
kn apply -f "$tmp/multi.yaml" >/dev/null
check_true "multi-container pod Ready" "status: $(pod_field multi .status)" wait_until 60 pod_ready multi
check_eq "init container Completed" Completed "$(pod_field multi '.status.initContainerStatuses[0].state.terminated.reason')"
check_eq "pod Initialized" True "$(pod_field multi '.status.conditions[?(@.type=="Initialized")].status')"
check_eq "both containers ready" "true true" "$(pod_field multi '.status.containerStatuses[*].ready')"
check_match "container ran after init" initialized "$(kn logs multi -c first 2>&1)"
kn delete pod multi --wait=false >/dev/null
check_true "multi-container pod deleted" "pod still exists" wait_until 30 pod_gone multi

# --- OOM kill ----------------------------------------------------------------

start=$(curl -sS --max-time 5 -X POST "http://$pod_ip:8080/start" -d '{"memory_mb":512,"allow_oom":true}')
check_match "worker accepts a target above its limit" 'Stress test started' "$start"
check_true "worker pod Failed after the OOM kill" "phase: $(pod_field worker .status.phase)" \
    wait_until 60 pod_phase_is worker Failed
check_eq "worker terminated OOMKilled" OOMKilled "$(pod_field worker '.status.containerStatuses[0].state.terminated.reason')"
check_eq "worker exit code 137" 137 "$(pod_field worker '.status.containerStatuses[0].state.terminated.exitCode')"
check_eq "worker not ready after exit" false "$(pod_field worker '.status.containerStatuses[0].ready')"
check_true "worker process gone" "PID $worker_pid still exists" wait_until 10 pid_gone "$worker_pid"
check_true "worker cgroup removed" "$worker_cgroup still exists" wait_until 10 test ! -d "$worker_cgroup"

# --- exit codes --------------------------------------------------------------

kn run exit3 --image=busybox --restart=Never --command -- sh -c 'exit 3' >/dev/null
check_true "exit3 pod Failed" "phase: $(pod_field exit3 .status.phase)" wait_until 60 pod_phase_is exit3 Failed
check_eq "exit3 reason Error" Error "$(pod_field exit3 '.status.containerStatuses[0].state.terminated.reason')"
check_eq "exit3 exit code 3" 3 "$(pod_field exit3 '.status.containerStatuses[0].state.terminated.exitCode')"

kn run missing --image=busybox --restart=Never --command -- no-such-binary-memstress >/dev/null
check_true "missing binary pod Failed" "phase: $(pod_field missing .status.phase)" wait_until 60 pod_phase_is missing Failed
check_eq "missing binary reason StartError" StartError "$(pod_field missing '.status.containerStatuses[0].state.terminated.reason')"

# --- liveness failure and restart ---------------------------------------------

cat >"$tmp/liveness.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: liveness
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers:
  - name: sleeper
    image: busybox
    command: [sleep, "300"]
    livenessProbe:
      tcpSocket: {port: 9}
      periodSeconds: 1
      failureThreshold: 2
EOF
kn apply -f "$tmp/liveness.yaml" >/dev/null
check_true "liveness failure ends the pod" "phase: $(pod_field liveness .status.phase)" \
    wait_until 60 pod_phase_is liveness Failed
check_eq "liveness kill exit code 143 (SIGTERM)" 143 "$(pod_field liveness '.status.containerStatuses[0].state.terminated.exitCode')"
check_eq "liveness kill reason Error" Error "$(pod_field liveness '.status.containerStatuses[0].state.terminated.reason')"

kn run restarter --image=busybox --restart=OnFailure --command -- sh -c 'exit 1' >/dev/null
restart_count() {
    [[ "$(pod_field restarter '.status.containerStatuses[0].restartCount')" -ge 1 ]]
}
check_true "OnFailure pod restarts after back-off" "restartCount: $(pod_field restarter '.status.containerStatuses[0].restartCount')" \
    wait_until 40 restart_count
check_eq "restarting pod phase Running" Running "$(pod_field restarter .status.phase)"
check_eq "restarting pod last exit code" 1 "$(pod_field restarter '.status.containerStatuses[0].lastState.terminated.exitCode')"

# --- deletion ----------------------------------------------------------------

cat >"$tmp/graceful.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: graceful
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: trap
    image: busybox
    command: [sh, -c, 'trap "echo sigterm > $tmp/graceful.marker; exit 0" TERM; while :; do sleep 0.2; done']
    resources:
      limits: {memory: 32Mi}
EOF
kn apply -f "$tmp/graceful.yaml" >/dev/null
check_true "graceful pod Running" "phase: $(pod_field graceful .status.phase)" wait_until 60 pod_phase_is graceful Running
graceful_pid=$(pod_field graceful '.status.containerStatuses[0].containerID')
graceful_pid=${graceful_pid#memstress://}
graceful_cgroup=$(pod_cgroup "$(pod_field graceful .metadata.uid)")
check_true "graceful pod cgroup exists" "none found" test -n "$graceful_cgroup"
delete_started=$SECONDS
kn delete pod graceful --wait=false >/dev/null
check_true "deleted pod object disappears" "pod still exists" wait_until 30 pod_gone graceful
check_range "graceful deletion well within the grace period" 0 15 $((SECONDS - delete_started))
check_eq "process got SIGTERM" sigterm "$(cat "$tmp/graceful.marker" 2>/dev/null)"
check_true "deleted pod process gone" "PID $graceful_pid still exists" wait_until 10 pid_gone "$graceful_pid"
check_true "deleted pod cgroup removed" "$graceful_cgroup still exists" wait_until 10 test ! -d "$graceful_cgroup"
check_true "deleted pod log directory removed" ".local/pods/${namespace}_graceful exists" \
    test ! -e ".local/pods/${namespace}_graceful"

cat >"$tmp/stubborn.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: stubborn
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: stubborn
    image: busybox
    command: [sh, -c, 'trap "" TERM; while :; do sleep 0.2; done']
EOF
kn apply -f "$tmp/stubborn.yaml" >/dev/null
check_true "stubborn pod Running" "phase: $(pod_field stubborn .status.phase)" wait_until 60 pod_phase_is stubborn Running
stubborn_pid=$(pod_field stubborn '.status.containerStatuses[0].containerID')
stubborn_pid=${stubborn_pid#memstress://}
delete_started=$SECONDS
kn delete pod stubborn --wait=false >/dev/null
check_true "pod ignoring SIGTERM is removed" "pod still exists" wait_until 30 pod_gone stubborn
check_range "SIGKILL after the 2s grace period" 1 12 $((SECONDS - delete_started))
check_true "pod ignoring SIGTERM: process gone" "PID $stubborn_pid still exists" wait_until 10 pid_gone "$stubborn_pid"

kn run forced --image=busybox --restart=Never --command -- sleep 300 >/dev/null
check_true "forced pod Running" "phase: $(pod_field forced .status.phase)" wait_until 60 pod_phase_is forced Running
forced_pid=$(pod_field forced '.status.containerStatuses[0].containerID')
forced_pid=${forced_pid#memstress://}
kn delete pod forced --force --grace-period=0 >/dev/null 2>&1
check_true "force-deleted pod process gone" "PID $forced_pid still exists" wait_until 15 pid_gone "$forced_pid"

# --- apiserver restart -------------------------------------------------------

# A pod deleted right before kube-apiserver restarts must still be removed,
# and readiness results found while the apiserver is down must reach it once
# it is back. The agent's writes fail during the restart, so this checks
# their retries and the informer resync. The doomed pod exits on SIGTERM
# only once the apiserver is down, so that the agent's final delete of it
# fails at first.
cat >"$tmp/doomed.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: doomed
spec:
  terminationGracePeriodSeconds: 90
  containers:
  - name: doomed
    image: busybox
    command:
    - sh
    - -c
    - |
      trap 'touch $tmp/doomed.sigterm; until [ -e $tmp/doomed.release ]; do sleep 0.2; done; exit 0' TERM
      while :; do sleep 0.2; done
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
EOF
cat >"$tmp/newcomer.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: newcomer
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: worker
    image: memstress-worker:test
    command: [memstress-worker, --listen, "$(POD_IP):8080"]
    env:
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    readinessProbe:
      httpGet: {path: /readyz, port: 8080}
      periodSeconds: 1
EOF
cat >"$tmp/flipper.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: flipper
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleeper
    image: busybox
    command: [sleep, "600"]
    readinessProbe:
      exec: {command: [test, -e, $tmp/flipper.ready]}
      periodSeconds: 1
EOF
kn apply -f "$tmp/doomed.yaml" >/dev/null
kn apply -f "$tmp/flipper.yaml" >/dev/null
check_true "doomed pod Ready before restart" "status: $(pod_field doomed .status)" \
    wait_until 60 pod_ready doomed
check_true "flipper pod Running, not Ready" "status: $(pod_field flipper .status)" \
    wait_until 60 pod_not_ready flipper
doomed_pid=$(pod_field doomed '.status.containerStatuses[0].containerID')
doomed_pid=${doomed_pid#memstress://}

kn delete pod doomed --wait=false >/dev/null
kn apply -f "$tmp/newcomer.yaml" >/dev/null
check_true "deleted pod gets SIGTERM" "no $tmp/doomed.sigterm after 30s" \
    wait_until 30 test -e "$tmp/doomed.sigterm"
hack/local-up.sh restart-apiserver >"$tmp/restart.log" 2>&1 &
restart_pid=$!
# The doomed pod's process exits and the flipper's probe starts to pass
# while the apiserver is down, so the agent's first writes for both fail.
wait_until 60 apiserver_down_or_exited "$restart_pid"
touch "$tmp/doomed.release" "$tmp/flipper.ready"
wait "$restart_pid"
restart_status=$?
check_eq "apiserver restart succeeds" 0 "$restart_status"
[[ $restart_status -eq 0 ]] || tail -n 5 "$tmp/restart.log" | sed 's/^/     /'
check_true "apiserver ready after restart" "GET /readyz failed for 60s" wait_until 60 apiserver_up
restarted=$SECONDS
# Each wait is followed by a check of the final state, so that a failure
# shows the state after the wait.
ready_condition='.status.conditions[?(@.type=="Ready")].status'
wait_until 60 pod_gone doomed
check_eq "deleted pod removed after restart" "" \
    "$(kn get pod doomed -o name --ignore-not-found 2>&1)"
check_true "deleted pod's process gone" "PID $doomed_pid still exists" wait_until 10 pid_gone "$doomed_pid"
wait_until 60 pod_ready newcomer
check_eq "new pod Ready after restart" True "$(pod_field newcomer "$ready_condition")"
wait_until 60 pod_ready flipper
check_eq "readiness True reaches API after restart" True "$(pod_field flipper "$ready_condition")"
echo "     restart to converged: $((SECONDS - restarted))s"
rm -f "$tmp/flipper.ready"
wait_until 30 pod_not_ready flipper
check_eq "readiness False reaches API after restart" False "$(pod_field flipper "$ready_condition")"
kn delete pod newcomer flipper --wait=false >/dev/null
wait_until 30 pods_gone newcomer flipper
check_eq "pods deleted after restart removed" "" \
    "$(kn get pod newcomer flipper -o name --ignore-not-found 2>&1)"

# --- namespace clean-up and agent stop --------------------------------------

kn run last --image=busybox --restart=Never --command -- sleep 300 >/dev/null
wait_until 60 pod_phase_is last Running
last_pid=$(pod_field last '.status.containerStatuses[0].containerID')
last_pid=${last_pid#memstress://}
k delete namespace "$namespace" --wait=false >/dev/null
check_true "namespace deletion removes its pods" "namespace $namespace still exists" \
    wait_until 90 bash -c "! '$kubectl' --kubeconfig '$kubeconfig' get namespace '$namespace'"
check_true "namespace pods' processes gone" "PID $last_pid still exists" wait_until 10 pid_gone "$last_pid"

# Stopping an agent that was already running would kill the pods of other
# users of the cluster, so the stop is checked only on the suite's own agent.
if $agent_was_running; then
    echo "note: the node agent was running before the suite, so its stop and clean-up are not checked"
else
    agent_pid=$(<"$agent_pid_file")
    hack/agent-down.sh 2>/dev/null
    check_true "agent process exits on agent-down" "PID $agent_pid still exists" pid_gone "$agent_pid"
    leftover=$(find "$(cgroup_parent)" -mindepth 1 -maxdepth 1 -type d -name 'memstress-node-*' 2>/dev/null)
    check_eq "agent-down removes node cgroups" "" "$leftover"
    for node in $nodes; do
        check_eq "$node NotReady after agent-down" False \
            "$(k get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
    done
fi

finish
