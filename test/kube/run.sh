#!/usr/bin/env bash
# Checks the libkube client (kube/) against a real kube-apiserver through
# the kubectl-lite driver.  It covers every verb on a ConfigMap and on a
# test custom resource, and server-side apply by two field managers sharing
# a list-map.  It also covers the status subresource, a token swapped on
# disk in in-cluster mode, a refused loopback port, a watch across an
# apiserver restart, a relist forced by an etcd compaction, and the client
# RSS while watching 5,000 objects.
#
# The suite runs its own control plane: hack/local-up.sh copied into a
# temporary directory, so its state (.local/) and its free loopback ports
# are private and an apiserver restart here cannot disturb a cluster that
# `make local-up` or another suite runs.  hack/build-kube.sh caches the
# binaries, so only the first run on a machine builds them (minutes).
set -uo pipefail
cd "$(dirname "$0")/../.."
source test/lib.sh

variant=${MEMSTRESS_VARIANT:-release}
lite=build/$variant/test/kube/kubectl-lite
namespace=memstress-kube-test
crd_group=test.memstress.dev
widgets=/apis/$crd_group/v1/namespaces/$namespace/widgets
configmaps=/api/v1/namespaces/$namespace/configmaps

work=$(mktemp -d /tmp/memstress-kube-suite.XXXXXX)
background_pids=()

cleanup() {
    local pid
    for pid in "${background_pids[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    [[ ! -x "$work/hack/local-down.sh" ]] ||
        "$work/hack/local-down.sh" >>"$work/down.log" 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

log() {
    printf '[kube-suite %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# --- control plane ---------------------------------------------------------

start_control_plane() {
    mkdir -p "$work/hack"
    cp hack/local-up.sh hack/local-down.sh hack/build-kube.sh "$work/hack/"
    local ports
    mapfile -t ports < <(free_ports 5)
    export MEMSTRESS_ETCD_CLIENT_PORT=${ports[0]}
    export MEMSTRESS_ETCD_PEER_PORT=${ports[1]}
    export MEMSTRESS_APISERVER_PORT=${ports[2]}
    export MEMSTRESS_CONTROLLER_MANAGER_PORT=${ports[3]}
    export MEMSTRESS_SCHEDULER_PORT=${ports[4]}
    # A control plane only: no node agent and no operator in this copy.
    export MEMSTRESS_NODE_AGENT=0
    log "starting a private control plane in $work"
    "$work/hack/local-up.sh" >"$work/up.log" 2>&1
}

if [[ ! -x "$lite" ]]; then
    make --no-print-directory VARIANT="$variant" "$lite" >/dev/null ||
        { fail "kubectl-lite builds" "make $lite failed"; finish; exit; }
fi
# Ports are picked at random, so a start can lose a race for one; a second
# try with new ports separates that from a real failure.
if ! start_control_plane; then
    log "first start failed; retrying with new ports: $(tail -n 3 "$work/up.log")"
    "$work/hack/local-down.sh" >>"$work/down.log" 2>&1
    if ! start_control_plane; then
        fail "control plane starts" "$(tail -n 5 "$work/up.log")"
        finish
        exit
    fi
fi
pass "control plane starts"
kubeconfig=$work/.local/kubeconfig
kubectl=$work/.local/bin/kubectl
apiserver_port=$MEMSTRESS_APISERVER_PORT
etcd_url=http://127.0.0.1:$MEMSTRESS_ETCD_CLIENT_PORT

k() {
    "$kubectl" --kubeconfig "$kubeconfig" "$@"
}

lite() {
    "$lite" --kubeconfig "$kubeconfig" "$@"
}

# Polls COMMAND every half second until it succeeds or TIMEOUT seconds pass.
wait_until() {
    local timeout=$1 deadline=$((SECONDS + $1))
    shift
    while ((SECONDS < deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

file_has() {
    grep -q -- "$2" "$1"
}

k create namespace "$namespace" >/dev/null

# --- ConfigMap verbs -------------------------------------------------------

out=$(lite create "$configmaps" '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm1","annotations":{"example.com/url":"http://a/b"}},"data":{"k":"v1"}}')
check_eq "configmap create" "v1" "$(jq -r .data.k <<<"$out")"
out=$(lite get "$configmaps/cm1")
check_eq "configmap get" "http://a/b" "$(jq -r '.metadata.annotations["example.com/url"]' <<<"$out")"
out=$(lite create "$configmaps" '{"metadata":{"name":"cm1"}}' 2>&1)
check_match "configmap create twice gives 409" "status=409 reason=AlreadyExists" "$out"
out=$(lite create "$configmaps" '{"metadata":{"name":"Not_Valid"}}' 2>&1)
check_match "configmap invalid name gives 422" "status=422 reason=Invalid" "$out"

rv=$(lite get "$configmaps/cm1" | jq -r .metadata.resourceVersion)
out=$(lite update "$configmaps/cm1" "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cm1\",\"resourceVersion\":\"$rv\"},\"data\":{\"k\":\"v2\"}}")
check_eq "configmap update" "v2" "$(jq -r .data.k <<<"$out")"
out=$(lite update "$configmaps/cm1" "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cm1\",\"resourceVersion\":\"$rv\"},\"data\":{\"k\":\"v3\"}}" 2>&1)
check_match "configmap stale update gives 409 Conflict" "status=409 reason=Conflict" "$out"
out=$(lite patch merge "$configmaps/cm1" '{"data":{"m":"merged"}}')
check_eq "configmap merge patch" "v2 merged" "$(jq -r '"\(.data.k) \(.data.m)"' <<<"$out")"
out=$(lite patch json "$configmaps/cm1" '[{"op":"replace","path":"/data/k","value":"json"}]')
check_eq "configmap JSON patch" "json" "$(jq -r .data.k <<<"$out")"
out=$(lite apply "$configmaps/cm1" suite-apply force '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm1","annotations":{"example.com/link":"https://x/y/z"}},"data":{"applied":"yes"}}')
check_eq "configmap server-side apply keeps slashes" "https://x/y/z" "$(jq -r '.metadata.annotations["example.com/link"]' <<<"$out")"
check_match "configmap apply records the field manager" "suite-apply" "$(jq -c '[.metadata.managedFields[].manager]' <<<"$out")"

for i in 2 3 4 5 6; do
    lite create "$configmaps" "{\"metadata\":{\"name\":\"cm$i\",\"labels\":{\"page\":\"yes\"}}}" >/dev/null
done
out=$(lite list "$configmaps" 2 "page=yes")
check_eq "configmap list pages through limit 2" "cm2 cm3 cm4 cm5 cm6" "$(jq -r '[.items[].metadata.name] | join(" ")' <<<"$out")"
check_match "configmap list carries a resourceVersion" '^[0-9]+$' "$(jq -r .metadata.resourceVersion <<<"$out")"
lite delete "$configmaps/cm1" >/dev/null
check_eq "configmap delete" "0" "$?"
out=$(lite get "$configmaps/cm1" 2>&1)
check_match "configmap get after delete gives 404" "status=404 reason=NotFound rc=-2" "$out"

# --- a test CustomResourceDefinition ---------------------------------------

k apply -f - >/dev/null <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.$crd_group
spec:
  group: $crd_group
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 0, maximum: 100}
              entries:
                type: array
                maxItems: 16
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string, maxLength: 63}
                    value: {type: string, maxLength: 253}
          status:
            type: object
            properties:
              phase: {type: string, maxLength: 32}
EOF
check_true "CRD becomes established" "widgets CRD not Established in 60 s" \
    wait_until 60 k wait --for condition=Established --timeout=2s "crd/widgets.$crd_group"
# Discovery of a new group can lag behind Established for a moment.
wait_until 30 lite list "$widgets"

widget='{"apiVersion":"test.memstress.dev/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"size":1}}'
out=$(lite create "$widgets" "$widget")
check_eq "widget create" "1" "$(jq -r .spec.size <<<"$out")"
check_eq "widget get" "w1" "$(lite get "$widgets/w1" | jq -r .metadata.name)"
check_eq "widget list" "1" "$(lite list "$widgets" | jq '.items | length')"
check_eq "widget merge patch" "2" "$(lite patch merge "$widgets/w1" '{"spec":{"size":2}}' | jq -r .spec.size)"
check_eq "widget JSON patch" "3" "$(lite patch json "$widgets/w1" '[{"op":"replace","path":"/spec/size","value":3}]' | jq -r .spec.size)"
out=$(lite patch merge "$widgets/w1" '{"spec":{"size":1000}}' 2>&1)
check_match "widget out-of-range size gives 422" "status=422 reason=Invalid" "$out"

rv=$(lite get "$widgets/w1" | jq -r .metadata.resourceVersion)
out=$(lite update "$widgets/w1/status" "{\"apiVersion\":\"test.memstress.dev/v1\",\"kind\":\"Widget\",\"metadata\":{\"name\":\"w1\",\"resourceVersion\":\"$rv\"},\"status\":{\"phase\":\"Running\"}}")
check_eq "widget status update" "Running" "$(jq -r .status.phase <<<"$out")"
out=$(lite patch merge "$widgets/w1/status" '{"status":{"phase":"Done"},"spec":{"size":9}}')
check_eq "widget status patch changes status" "Done" "$(jq -r .status.phase <<<"$out")"
check_eq "widget status patch ignores spec" "3" "$(jq -r .spec.size <<<"$out")"
out=$(lite apply "$widgets/w1/status" status-writer force '{"apiVersion":"test.memstress.dev/v1","kind":"Widget","metadata":{"name":"w1"},"status":{"phase":"Applied"}}')
check_eq "widget status server-side apply" "Applied" "$(jq -r .status.phase <<<"$out")"

# Two field managers, each owning one entry of the list-map spec.entries.
apply_entries() {
    lite apply "$widgets/w2" "$1" "$2" "{\"apiVersion\":\"test.memstress.dev/v1\",\"kind\":\"Widget\",\"metadata\":{\"name\":\"w2\"},\"spec\":{\"entries\":$3}}"
}
apply_entries manager-a noforce '[{"name":"a","value":"1"}]' >/dev/null
out=$(apply_entries manager-b noforce '[{"name":"b","value":"2"}]')
check_eq "two managers share the list-map" "a=1 b=2" "$(jq -r '[.spec.entries[] | "\(.name)=\(.value)"] | join(" ")' <<<"$out")"
check_eq "both managers own fields" "manager-a manager-b" "$(jq -r '[.metadata.managedFields[].manager] | sort | join(" ")' <<<"$out")"
out=$(apply_entries manager-b noforce '[{"name":"b","value":"2"},{"name":"a","value":"9"}]' 2>&1)
check_match "taking another manager's entry gives 409" "status=409 reason=Conflict" "$out"
out=$(apply_entries manager-a noforce '[]')
check_eq "a manager drops only its own entry" "b=2" "$(jq -r '[.spec.entries[] | "\(.name)=\(.value)"] | join(" ")' <<<"$out")"
out=$(apply_entries manager-a force '[{"name":"b","value":"7"}]')
check_eq "force takes over an entry" "b=7" "$(jq -r '[.spec.entries[] | "\(.name)=\(.value)"] | join(" ")' <<<"$out")"
lite delete "$widgets/w1" >/dev/null
out=$(lite get "$widgets/w1" 2>&1)
check_match "widget delete" "status=404" "$out"

# --- in-cluster mode with a token swapped on disk -------------------------
#
# The client keeps a token file's contents for up to a minute, and re-reads
# the file at once after a 401.  Recreating the service account invalidates
# the tokens issued for the old one, which forces that 401.

sa_dir=$work/serviceaccount
sa_url=https://127.0.0.1:$apiserver_port/api/v1/namespaces/$namespace/configmaps

recreate_service_account() {
    k -n "$namespace" delete serviceaccount suite-reader --ignore-not-found >/dev/null
    k -n "$namespace" create serviceaccount suite-reader >/dev/null
}

# Succeeds when the apiserver rejects TOKEN with 401.
token_rejected() {
    [[ "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
        --cacert "$sa_dir/ca.crt" -H "Authorization: Bearer $1" "$sa_url")" == 401 ]]
}

# Lets kubectl-lite send request N and waits until it has.
run_step() {
    touch "$sa_dir/go.$1"
    wait_until 30 test -e "$sa_dir/done.$1"
}

mkdir -p "$sa_dir"
cp "$work/.local/pki/ca.crt" "$sa_dir/ca.crt"
printf '%s' "$namespace" >"$sa_dir/namespace"
recreate_service_account
k -n "$namespace" create rolebinding suite-reader --clusterrole=view \
    --serviceaccount="$namespace:suite-reader" >/dev/null
first_token=$(k -n "$namespace" create token suite-reader --duration=10m)
printf '%s' "$first_token" >"$sa_dir/token"
KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=$apiserver_port \
    "$lite" --in-cluster "$sa_dir" get-steps "$configmaps" "$sa_dir" 4 \
    >"$work/steps.out" 2>"$work/steps.err" &
background_pids+=($!)
run_step 1
printf 'not-a-valid-token' >"$sa_dir/token"
run_step 2
recreate_service_account
wait_until 30 token_rejected "$first_token"
second_token=$(k -n "$namespace" create token suite-reader --duration=10m)
printf '%s' "$second_token" >"$sa_dir/token"
run_step 3
printf 'not-a-valid-token' >"$sa_dir/token"
recreate_service_account
wait_until 30 token_rejected "$second_token"
run_step 4
check_eq "in-cluster token works" "step 1 status=200 rc=0" "$(sed -n 1p "$work/steps.out")"
check_eq "token file is cached within a minute" "step 2 status=200 rc=0" "$(sed -n 2p "$work/steps.out")"
check_eq "new token on disk is read after a 401" "step 3 status=200 rc=0" "$(sed -n 3p "$work/steps.out")"
check_eq "invalid token on disk gives 401 after one retry" "step 4 status=401 rc=-13" "$(sed -n 4p "$work/steps.out")"

# --- a loopback port with nothing listening --------------------------------

closed_port=$(free_port)
sed "s#server: https://127.0.0.1:$apiserver_port#server: https://127.0.0.1:$closed_port#" \
    "$kubeconfig" >"$work/closed.kubeconfig"
started=$SECONDS
out=$("$lite" --kubeconfig "$work/closed.kubeconfig" get /api/v1/namespaces 2>&1)
elapsed=$((SECONDS - started))
check_match "refused port gives a clear error" "status=0 .*rc=-111 message=GET https://127.0.0.1:$closed_port/api/v1/namespaces failed: .*" "$out"
check_range "refused port fails within the 5 s connect deadline" 0 5 "$elapsed"

# --- a watch across an apiserver restart -----------------------------------

lite create "$configmaps" '{"metadata":{"name":"r1","labels":{"app":"restart"}}}' >/dev/null
lite watch "$configmaps" --selector app=restart --until r2 --max-seconds 150 \
    --idle 20 >"$work/restart.out" 2>"$work/restart.err" &
watch_pid=$!
background_pids+=("$watch_pid")
check_true "restart watch lists r1" "no ADDED r1 in 30 s" \
    wait_until 30 file_has "$work/restart.out" "ADDED $namespace/r1"
log "restarting kube-apiserver"
"$work/hack/local-up.sh" restart-apiserver >"$work/restart-apiserver.log" 2>&1
check_eq "apiserver restarts" "0" "$?"
lite create "$configmaps" '{"metadata":{"name":"r2","labels":{"app":"restart"}}}' >/dev/null
check_true "watch sees an event after the restart" "no ADDED r2 in 90 s" \
    wait_until 90 file_has "$work/restart.out" "ADDED $namespace/r2"
wait "$watch_pid"
check_eq "restart watch exits cleanly" "0" "$?"
check_match "restart watch reports no error exit" "STOPPED rc=0" "$(tail -n 1 "$work/restart.out")"

# --- a relist forced by an etcd compaction ---------------------------------
#
# The watcher lists, then waits for a file before it starts watching.  Meanwhile objects change,
# etcd is compacted past the list's resourceVersion, and the apiserver is
# restarted.  The restart empties its watch cache, which could otherwise
# serve the old resourceVersion from memory, so the watch gets 410 Gone and
# the client must list again and report the vanished object as DELETED.

etcd_revision() {
    curl -sS --max-time 5 -X POST "$etcd_url/v3/kv/range" \
        -d '{"key":"AA==","range_end":"AA==","count_only":true}' |
        jq -r .header.revision
}

for name in c1 c2 c3; do
    lite create "$configmaps" "{\"metadata\":{\"name\":\"$name\",\"labels\":{\"app\":\"compact\"}}}" >/dev/null
done
hold=$work/compact.hold
lite watch "$configmaps" --selector app=compact --hold "$hold" --until c5 \
    --max-seconds 180 --idle 20 >"$work/compact.out" 2>"$work/compact.err" &
watch_pid=$!
background_pids+=("$watch_pid")
check_true "compaction watch lists" "no SYNCED 1 in 30 s" \
    wait_until 30 file_has "$work/compact.out" "SYNCED 1 "
lite delete "$configmaps/c2" >/dev/null
lite create "$configmaps" '{"metadata":{"name":"c4","labels":{"app":"compact"}}}' >/dev/null
lite patch merge "$configmaps/c1" '{"data":{"changed":"yes"}}' >/dev/null
revision=$(etcd_revision)
out=$(curl -sS --max-time 30 -X POST "$etcd_url/v3/kv/compaction" \
    -d "{\"revision\":\"$revision\",\"physical\":true}")
check_match "etcd compacts through its HTTP gateway" '"revision"' "$out"
"$work/hack/local-up.sh" restart-apiserver >"$work/restart-apiserver.log" 2>&1
touch "$hold"
check_true "compaction forces a relist" "no SYNCED 2 in 60 s" \
    wait_until 60 file_has "$work/compact.out" "SYNCED 2 "
lite create "$configmaps" '{"metadata":{"name":"c5","labels":{"app":"compact"}}}' >/dev/null
wait "$watch_pid"
out=$(cat "$work/compact.out")
check_match "relist reports the vanished object" "DELETED $namespace/c2 " "$out"
check_match "relist reports the new object" "ADDED $namespace/c4 " "$out"
check_match "relist reports the changed object" "MODIFIED $namespace/c1 " "$out"
check_match "watch continues after the relist" "ADDED $namespace/c5 " "$out"
check_match "compaction watch stops cleanly" "STOPPED rc=0 lists=2" "$out"

# --- RSS while watching 5,000 objects --------------------------------------

bulk_namespace=memstress-kube-bulk
k create namespace "$bulk_namespace" >/dev/null
out=$(lite bulk-create "/api/v1/namespaces/$bulk_namespace/configmaps" bulk 5000)
check_match "5,000 ConfigMaps created" "created=5000 failed=0" "$out"
log "bulk creation: $out"
out=$(lite watch "/api/v1/namespaces/$bulk_namespace/configmaps" --selector app=bulk \
    --exit-synced true)
rss_before=$(sed -n 's/^RSS //p' <<<"$out" | head -n 1)
rss_synced=$(sed -n 's/^RSS //p' <<<"$out" | tail -n 1)
check_match "watch store holds 5,000 objects" "SYNCED 1 [0-9]+ objects=5000" "$out"
log "client RSS: ${rss_before} kB before the list, ${rss_synced} kB holding 5,000 objects"
echo "kube client RSS holding 5,000 ConfigMaps: ${rss_synced} kB (${rss_before} kB before the list)"
check_range "client RSS with 5,000 objects stays under 200 MiB" 1 204800 "$rss_synced"

k delete namespace "$namespace" "$bulk_namespace" --wait=false >/dev/null 2>&1
finish
