#!/usr/bin/env bash
# Starts a local Kubernetes control plane for tests: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler built by hack/build-kube.sh, all
# listening on 127.0.0.1 only, then the node agent (MEMSTRESS_NODE_AGENT=0 skips
# it) and the operator from this checkout (MEMSTRESS_OPERATOR=0 skips it).
#
#   hack/local-up.sh                     start, or confirm that it is running
#   hack/local-up.sh restart-apiserver   stop and start only kube-apiserver
#   hack/local-up.sh status              print each component's PID and health
#   hack/local-up.sh env                 print export lines for KUBECONFIG, PATH
#
# State lives in .local/: certs and keys in pki/, etcd data in etcd/, logs in
# logs/, PIDs in pids/. Use the admin kubeconfig with the built kubectl:
#   .local/bin/kubectl --kubeconfig .local/kubeconfig get namespaces
# or `eval "$(hack/local-up.sh env)"`. Stop it with hack/local-down.sh.
# Ports and the readiness deadline come from MEMSTRESS_* variables, listed
# with their defaults in load_settings and ready_timeout in this script.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
local_dir=$repo_root/.local
pki_dir=$local_dir/pki
log_dir=$local_dir/logs
pid_dir=$local_dir/pids
settings_file=$local_dir/cluster.env

# Readiness deadline for each component, in seconds.
ready_timeout=${MEMSTRESS_READY_TIMEOUT:-120}

components=(etcd kube-apiserver kube-controller-manager kube-scheduler)

log() {
    printf '[local-up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# --- settings -------------------------------------------------------------

# Sets the ports, the service CIDR and the controller list. While any
# component is alive, the values saved when it started take precedence over
# the environment, so health checks reach the running processes.
load_settings() {
    local name
    if [[ -f "$settings_file" ]]; then
        for name in "${components[@]}"; do
            if component_alive "$name"; then
                # shellcheck source=/dev/null
                source "$settings_file"
                if env | grep -q '^MEMSTRESS_.*_PORT='; then
                    log "note: using the ports in $settings_file because $name is running; MEMSTRESS_*_PORT settings apply after hack/local-down.sh"
                fi
                return
            fi
        done
    fi
    # Defaults sit away from the standard ports (2379, 6443, 10257, 10259) so
    # that another cluster on the same machine does not clash.
    etcd_client_port=${MEMSTRESS_ETCD_CLIENT_PORT:-23790}
    etcd_peer_port=${MEMSTRESS_ETCD_PEER_PORT:-23800}
    apiserver_port=${MEMSTRESS_APISERVER_PORT:-26443}
    controller_manager_port=${MEMSTRESS_CONTROLLER_MANAGER_PORT:-20257}
    scheduler_port=${MEMSTRESS_SCHEDULER_PORT:-20259}
    # Configuration only: no kube-proxy runs and the node agent never uses
    # these addresses, so nothing ever sends traffic to them.
    service_cidr=${MEMSTRESS_SERVICE_CIDR:-10.0.0.0/24}
    controllers=${MEMSTRESS_CONTROLLERS:-garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller,resourcequota-controller,deployment-controller,replicaset-controller,job-controller,ttl-after-finished-controller}
}

save_settings() {
    local variable
    for variable in etcd_client_port etcd_peer_port apiserver_port \
        controller_manager_port scheduler_port service_cidr controllers; do
        printf '%s=%q\n' "$variable" "${!variable}"
    done >"$settings_file"
}

# --- processes ------------------------------------------------------------

# Succeeds when the PID file of a component names a live process that this
# script started: argv[0] ends in the component name and the command line
# contains the path of .local/. This guards against a reused PID.
component_alive() {
    local name=$1 pid_file=$pid_dir/$1.pid pid
    [[ -f "$pid_file" ]] || return 1
    pid=$(<"$pid_file")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    local -a argv
    mapfile -d '' argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [[ ${#argv[@]} -gt 0 && "$(basename "${argv[0]}")" == "$name" ]] || return 1
    [[ "${argv[*]}" == *"$local_dir/"* ]]
}

component_pid() {
    cat "$pid_dir/$1.pid"
}

# Fails when something already listens on 127.0.0.1:port.
ensure_port_free() {
    local port=$1 variable=$2
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port 127.0.0.1:$port is already in use by another process; set $variable to a free port, or stop that process"
    fi
}

# Starts a binary in a new session, records its PID and logs to
# .local/logs/NAME.log. A background job of a script without job control is
# not a process-group leader, so setsid calls setsid(2) and execs the program
# without forking, and $! is the component's own PID.
start_process() {
    local name=$1
    shift
    log "starting $name"
    {
        printf '\n=== %s: starting %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$name"
        printf '%q ' "$@"
        printf '\n'
    } >>"$log_dir/$name.log"
    setsid "$@" </dev/null >>"$log_dir/$name.log" 2>&1 &
    echo "$!" >"$pid_dir/$name.pid"
}

# Prints why a component is not ready, with the tail of its log, and exits.
fail_start() {
    local name=$1 reason=$2
    log "error: $name $reason"
    log "last 30 lines of $log_dir/$name.log:"
    tail -n 30 "$log_dir/$name.log" >&2 || true
    die "$name failed to start; read $log_dir/$name.log, fix the cause, then run hack/local-down.sh and hack/local-up.sh again"
}

# --- health checks --------------------------------------------------------

# Each probe prints the response body and succeeds when it is healthy.
probe_etcd() {
    local body
    body=$(curl -sS --max-time 3 "http://127.0.0.1:$etcd_client_port/health" 2>&1) || {
        echo "$body"
        return 1
    }
    echo "$body"
    [[ "$body" == *'"health":"true"'* ]]
}

# Queries an HTTPS health endpoint with the admin client certificate.
probe_https() {
    local url=$1 body
    body=$(curl -sS --max-time 3 --cacert "$pki_dir/ca.crt" \
        --cert "$pki_dir/admin.crt" --key "$pki_dir/admin.key" "$url" 2>&1) || {
        echo "$body"
        return 1
    }
    echo "$body"
    [[ "$body" == "ok" ]]
}

probe() {
    case $1 in
    etcd) probe_etcd ;;
    kube-apiserver) probe_https "https://127.0.0.1:$apiserver_port/readyz" ;;
    kube-controller-manager) probe_https "https://127.0.0.1:$controller_manager_port/healthz" ;;
    kube-scheduler) probe_https "https://127.0.0.1:$scheduler_port/healthz" ;;
    esac
}

# Polls a component's health endpoint until it reports ready, the process
# exits, or ready_timeout seconds pass.
wait_ready() {
    local name=$1 deadline=$((SECONDS + ready_timeout)) started=$SECONDS body=""
    while ((SECONDS < deadline)); do
        if body=$(probe "$name"); then
            log "$name is ready after $((SECONDS - started))s"
            return 0
        fi
        component_alive "$name" || fail_start "$name" "exited before it became ready; last probe: ${body:0:200}"
        sleep 0.5
    done
    fail_start "$name" "was not ready within ${ready_timeout}s (MEMSTRESS_READY_TIMEOUT); last probe: ${body:0:200}"
}

# --- certificates and kubeconfigs -------------------------------------------

# Creates a self-signed CA as NAME.crt and NAME.key.
make_ca() {
    local name=$1 common_name=$2
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
        -subj "/CN=$common_name" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$pki_dir/$name.key" -out "$pki_dir/$name.crt" 2>/dev/null
}

# Signs a certificate for NAME with the CA named CA. SUBJECT is an openssl
# -subj string and EXTENSIONS the x509v3 lines to add.
sign_cert() {
    local name=$1 ca=$2 subject=$3 extensions=$4
    openssl req -new -newkey rsa:2048 -nodes -subj "$subject" \
        -keyout "$pki_dir/$name.key" -out "$pki_dir/$name.csr" 2>/dev/null
    printf '%s\n' "$extensions" >"$pki_dir/$name.ext"
    openssl x509 -req -in "$pki_dir/$name.csr" -CA "$pki_dir/$ca.crt" \
        -CAkey "$pki_dir/$ca.key" -CAcreateserial -days 3650 -sha256 \
        -extfile "$pki_dir/$name.ext" -out "$pki_dir/$name.crt" 2>/dev/null
    rm -f "$pki_dir/$name.csr" "$pki_dir/$name.ext"
}

# Creates the CA, the serving certificate, one client certificate per
# identity and the service-account key pair. Existing files are kept, so
# tokens and kubeconfigs stay valid across restarts.
ensure_pki() {
    local client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    mkdir -p "$pki_dir"
    chmod 700 "$pki_dir"
    if [[ ! -f "$pki_dir/ca.crt" ]]; then
        log "generating the CA and certificates in $pki_dir"
        make_ca ca memstress-local-ca
    fi
    # The request-header (front-proxy) CA: kube-apiserver publishes it in the
    # extension-apiserver-authentication ConfigMap, and the controller-manager
    # and scheduler log an error every few seconds while it is missing there.
    [[ -f "$pki_dir/front-proxy-ca.crt" ]] ||
        make_ca front-proxy-ca memstress-local-front-proxy-ca
    [[ -f "$pki_dir/front-proxy-client.crt" ]] ||
        sign_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" "$client_ext"
    [[ -f "$pki_dir/serving.crt" ]] || sign_cert serving ca "/CN=memstress-local-serving" \
        "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
    # system:masters bypasses RBAC, as for a cluster administrator.
    [[ -f "$pki_dir/admin.crt" ]] ||
        sign_cert admin ca "/O=system:masters/CN=memstress-admin" "$client_ext"
    # These user names match the bootstrap RBAC roles of the two components.
    [[ -f "$pki_dir/kube-controller-manager.crt" ]] ||
        sign_cert kube-controller-manager ca "/CN=system:kube-controller-manager" "$client_ext"
    [[ -f "$pki_dir/kube-scheduler.crt" ]] ||
        sign_cert kube-scheduler ca "/CN=system:kube-scheduler" "$client_ext"
    if [[ ! -f "$pki_dir/service-account.key" ]]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
            -out "$pki_dir/service-account.key" 2>/dev/null
        openssl pkey -in "$pki_dir/service-account.key" -pubout \
            -out "$pki_dir/service-account.pub"
    fi
    chmod 600 "$pki_dir"/*.key
}

base64_file() {
    base64 -w0 "$1"
}

# Writes a kubeconfig with the CA, client certificate and key embedded, so
# it works from any directory.
write_kubeconfig() {
    local path=$1 identity=$2
    cat >"$path.new" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: memstress-local
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority-data: $(base64_file "$pki_dir/ca.crt")
users:
- name: $identity
  user:
    client-certificate-data: $(base64_file "$pki_dir/$identity.crt")
    client-key-data: $(base64_file "$pki_dir/$identity.key")
contexts:
- name: memstress-local
  context:
    cluster: memstress-local
    user: $identity
current-context: memstress-local
EOF
    chmod 600 "$path.new"
    mv -f "$path.new" "$path"
}

# --- component command lines ------------------------------------------------

etcd_args() {
    local peer_url=http://127.0.0.1:$etcd_peer_port
    local client_url=http://127.0.0.1:$etcd_client_port
    argv=("$bin_dir/etcd"
        --name=memstress-local
        --data-dir="$local_dir/etcd"
        --listen-client-urls="$client_url"
        --advertise-client-urls="$client_url"
        --listen-peer-urls="$peer_url"
        --initial-advertise-peer-urls="$peer_url"
        --initial-cluster="memstress-local=$peer_url"
        --initial-cluster-state=new
        --log-level=warn)
}

# --endpoint-reconciler-type=none: the default reconciler writes the
# advertise address into the `kubernetes` Endpoints object, and Endpoints
# validation rejects loopback addresses such as 127.0.0.1.
apiserver_args() {
    argv=("$bin_dir/kube-apiserver"
        --bind-address=127.0.0.1
        --advertise-address=127.0.0.1
        --secure-port="$apiserver_port"
        --etcd-servers="http://127.0.0.1:$etcd_client_port"
        --endpoint-reconciler-type=none
        --service-cluster-ip-range="$service_cidr"
        --tls-cert-file="$pki_dir/serving.crt"
        --tls-private-key-file="$pki_dir/serving.key"
        --client-ca-file="$pki_dir/ca.crt"
        --authorization-mode=RBAC
        --service-account-issuer="https://127.0.0.1:$apiserver_port"
        --service-account-key-file="$pki_dir/service-account.pub"
        --service-account-signing-key-file="$pki_dir/service-account.key"
        --enable-admission-plugins=ServiceAccount
        --requestheader-client-ca-file="$pki_dir/front-proxy-ca.crt"
        --requestheader-allowed-names=front-proxy-client
        --requestheader-username-headers=X-Remote-User
        --requestheader-group-headers=X-Remote-Group
        --requestheader-extra-headers-prefix=X-Remote-Extra-
        --proxy-client-cert-file="$pki_dir/front-proxy-client.crt"
        --proxy-client-key-file="$pki_dir/front-proxy-client.key"
        --profiling=false)
}

controller_manager_args() {
    local kubeconfig=$local_dir/kube-controller-manager.kubeconfig
    argv=("$bin_dir/kube-controller-manager"
        --bind-address=127.0.0.1
        --secure-port="$controller_manager_port"
        --kubeconfig="$kubeconfig"
        --authentication-kubeconfig="$kubeconfig"
        --authorization-kubeconfig="$kubeconfig"
        --tls-cert-file="$pki_dir/serving.crt"
        --tls-private-key-file="$pki_dir/serving.key"
        --client-ca-file="$pki_dir/ca.crt"
        --controllers="$controllers"
        --use-service-account-credentials=true
        --service-account-private-key-file="$pki_dir/service-account.key"
        --root-ca-file="$pki_dir/ca.crt"
        --service-cluster-ip-range="$service_cidr"
        --leader-elect=false
        --profiling=false)
}

scheduler_args() {
    local kubeconfig=$local_dir/kube-scheduler.kubeconfig
    argv=("$bin_dir/kube-scheduler"
        --bind-address=127.0.0.1
        --secure-port="$scheduler_port"
        --kubeconfig="$kubeconfig"
        --authentication-kubeconfig="$kubeconfig"
        --authorization-kubeconfig="$kubeconfig"
        --tls-cert-file="$pki_dir/serving.crt"
        --tls-private-key-file="$pki_dir/serving.key"
        --client-ca-file="$pki_dir/ca.crt"
        --leader-elect=false
        --profiling=false)
}

# Sets argv to the command line of a component.
component_args() {
    case $1 in
    etcd) etcd_args ;;
    kube-apiserver) apiserver_args ;;
    kube-controller-manager) controller_manager_args ;;
    kube-scheduler) scheduler_args ;;
    esac
}

component_port_variable() {
    case $1 in
    etcd) echo "$etcd_client_port MEMSTRESS_ETCD_CLIENT_PORT" ;;
    kube-apiserver) echo "$apiserver_port MEMSTRESS_APISERVER_PORT" ;;
    kube-controller-manager) echo "$controller_manager_port MEMSTRESS_CONTROLLER_MANAGER_PORT" ;;
    kube-scheduler) echo "$scheduler_port MEMSTRESS_SCHEDULER_PORT" ;;
    esac
}

# Checks the ports of every component that is not running yet, so a clash
# is reported before anything starts.
ensure_ports_free() {
    local name port variable
    for name in "${components[@]}"; do
        component_alive "$name" && continue
        read -r port variable <<<"$(component_port_variable "$name")"
        ensure_port_free "$port" "$variable"
        [[ "$name" != etcd ]] || ensure_port_free "$etcd_peer_port" MEMSTRESS_ETCD_PEER_PORT
    done
}

# Starts one component unless it is already running, then waits for it.
ensure_component() {
    local name=$1
    if component_alive "$name"; then
        log "$name is already running (PID $(component_pid "$name"))"
    else
        rm -f "$pid_dir/$name.pid"
        local -a argv
        component_args "$name"
        start_process "$name" "${argv[@]}"
    fi
    wait_ready "$name"
}

# --- subcommands ------------------------------------------------------------

# Builds or reuses the binaries and sets bin_dir.
ensure_binaries() {
    bin_dir=$("$repo_root/hack/build-kube.sh" | tail -n 1)
    [[ -x "$bin_dir/kube-apiserver" ]] ||
        die "hack/build-kube.sh printed '$bin_dir', which has no kube-apiserver; run hack/build-kube.sh by itself to see why"
}

command_up() {
    local started=$SECONDS name
    ensure_binaries
    mkdir -p "$log_dir" "$pid_dir" "$local_dir/bin"
    save_settings
    ensure_pki
    write_kubeconfig "$local_dir/kubeconfig" admin
    write_kubeconfig "$local_dir/kube-controller-manager.kubeconfig" kube-controller-manager
    write_kubeconfig "$local_dir/kube-scheduler.kubeconfig" kube-scheduler
    ln -sfn "$bin_dir/kubectl" "$local_dir/bin/kubectl"
    ensure_ports_free
    for name in "${components[@]}"; do
        ensure_component "$name"
    done
    log "control plane ready in $((SECONDS - started))s: https://127.0.0.1:$apiserver_port"
    log "use: $local_dir/bin/kubectl --kubeconfig $local_dir/kubeconfig get namespaces"
    # --- node agent (hack/node-agent/): Ready nodes that run pods as local
    # processes. MEMSTRESS_NODE_AGENT=0 leaves the cluster without nodes.
    if [[ ${MEMSTRESS_NODE_AGENT:-1} != 0 ]]; then
        "$repo_root/hack/agent-up.sh"
    fi
    # --- end of the node agent addition
    # The operator runs as a pod on the agent's nodes, so it needs them.
    # MEMSTRESS_OPERATOR=0 leaves it out.
    if [[ ${MEMSTRESS_NODE_AGENT:-1} != 0 && ${MEMSTRESS_OPERATOR:-1} != 0 ]]; then
        "$repo_root/hack/operator-up.sh"
    fi
}

# Stops kube-apiserver and starts it again with the same command line, leaving
# etcd and the other components running.
command_restart_apiserver() {
    local -a argv
    component_alive etcd ||
        die "etcd is not running, so kube-apiserver cannot be restarted alone; run hack/local-up.sh first"
    if component_alive kube-apiserver; then
        mapfile -d '' argv <"/proc/$(component_pid kube-apiserver)/cmdline"
    else
        ensure_binaries
        apiserver_args
    fi
    "$repo_root/hack/local-down.sh" kube-apiserver
    ensure_port_free "$apiserver_port" MEMSTRESS_APISERVER_PORT
    start_process kube-apiserver "${argv[@]}"
    wait_ready kube-apiserver
}

command_status() {
    local name body state=0
    for name in "${components[@]}"; do
        if ! component_alive "$name"; then
            printf '%-24s not running\n' "$name"
            state=1
        elif body=$(probe "$name"); then
            printf '%-24s PID %s, healthy\n' "$name" "$(component_pid "$name")"
        else
            printf '%-24s PID %s, unhealthy: %s\n' "$name" "$(component_pid "$name")" "${body:0:200}"
            state=1
        fi
    done
    return "$state"
}

command_env() {
    printf 'export KUBECONFIG=%q\n' "$local_dir/kubeconfig"
    # shellcheck disable=SC2016 # $PATH expands where the output is eval'ed
    printf 'export PATH=%q:"$PATH"\n' "$local_dir/bin"
}

command -v openssl >/dev/null || die "openssl not found; install the openssl package"
command -v curl >/dev/null || die "curl not found; install it with hack/deps.sh"
command -v setsid >/dev/null || die "setsid not found; install util-linux"

load_settings
case ${1:-up} in
up) command_up ;;
restart-apiserver) command_restart_apiserver ;;
status) command_status ;;
env) command_env ;;
-h | --help | help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
*) die "unknown subcommand '$1'; expected up, restart-apiserver, status or env" ;;
esac
