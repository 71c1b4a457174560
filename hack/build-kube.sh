#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
# kubectl from the upstream Go modules, because no release binaries can be
# downloaded here and the cluster tests need a real control plane.
#
# Output: ${MEMSTRESS_CACHE:-$HOME/.cache/memstress}/kube-<version>/bin/, shared
# by every clone on the machine. A stamp file records the pinned versions, so
# a second run with the same pins only checks the stamp and exits. A cold
# build, module downloads included, took 4 to 6 minutes on a 2-core machine,
# depending on other load. `go build` runs under `nice -n 10`.
# The last line printed is the bin directory.
set -euo pipefail

# Kubernetes release and the etcd release that its build/dependencies.yaml
# names. Kubernetes v1.35.4 declares `go 1.25.0` in its go.mod.
# MEMSTRESS_KUBE_VERSION and MEMSTRESS_ETCD_VERSION override them.
KUBE_VERSION=${MEMSTRESS_KUBE_VERSION:-v1.35.4}
ETCD_VERSION=${MEMSTRESS_ETCD_VERSION:-v3.6.6}
# Bump when the build recipe changes, so cached binaries get rebuilt.
RECIPE_REVISION=2

cache_root=${MEMSTRESS_CACHE:-$HOME/.cache/memstress}
out_dir=$cache_root/kube-$KUBE_VERSION
bin_dir=$out_dir/bin
stamp_file=$out_dir/stamp
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)
stamp="kubernetes=$KUBE_VERSION etcd=$ETCD_VERSION recipe=$RECIPE_REVISION"

log() {
    printf '[build-kube %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

binaries_present() {
    local name
    for name in "${binaries[@]}"; do
        [[ -x "$bin_dir/$name" ]] || return 1
    done
}

up_to_date() {
    [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] && binaries_present
}

if up_to_date; then
    echo "$bin_dir"
    exit 0
fi

command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]] ||
    die "go not found on PATH or at /usr/local/go/bin/go; install Go 1.25 or newer"
command -v go >/dev/null || PATH=/usr/local/go/bin:$PATH
command -v flock >/dev/null || die "flock not found; install util-linux"

mkdir -p "$out_dir"
# Serializes concurrent runs, for example two clones starting tests at once.
exec {lock_fd}>"$out_dir/.lock"
if ! flock -n "$lock_fd"; then
    log "another build holds $out_dir/.lock; waiting for it"
    flock "$lock_fd"
fi
if up_to_date; then
    echo "$bin_dir"
    exit 0
fi

# Settings for every go command below: the generated modules stand alone, so
# an enclosing go.work must not apply, and -mod=mod lets go fill in go.sum.
export GOWORK=off
export GOFLAGS="-buildvcs=false -mod=mod"
export CGO_ENABLED=0

started=$SECONDS
log "building Kubernetes $KUBE_VERSION and etcd $ETCD_VERSION with $(go version)"
log "output: $bin_dir"

# Prints the replace lines that map each staging module of k8s.io/kubernetes
# to its published v0.Y.Z copy. Upstream's go.mod lists them as
# `k8s.io/x => ./staging/src/k8s.io/x`, and that path exists only in the
# kubernetes repository, not in the module download.
staging_replaces() {
    local upstream_mod=$1 staging_version=$2
    awk -v version="$staging_version" \
        '$2 == "=>" && $3 ~ /^\.\/staging\/src\// { print "\t" $1 " => " $1 " " version }' \
        "$upstream_mod"
}

# Runs go build for one binary under nice. A background loop prints the
# elapsed time every 30 seconds, and it ends by itself if this script dies.
build_one() {
    local name=$1 package=$2 ldflags=$3 step=$4 step_started=$SECONDS
    local ticker build_status=0
    log "[$step/${#binaries[@]}] building $name from $package"
    (
        while sleep 30 && kill -0 "$$" 2>/dev/null; do
            log "[$step/${#binaries[@]}] still building $name: $((SECONDS - step_started))s so far, $((SECONDS - started))s in total"
        done
    ) &
    ticker=$!
    nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$bin_dir/$name.new" "$package" ||
        build_status=$?
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    if [[ $build_status -ne 0 ]]; then
        die "go build of $package failed with status $build_status (see the output above); rerun hack/build-kube.sh once the cause is fixed"
    fi
    mv -f "$bin_dir/$name.new" "$bin_dir/$name"
    log "[$step/${#binaries[@]}] built $name in $((SECONDS - step_started))s (total $((SECONDS - started))s)"
}

rm -f "$stamp_file"
mkdir -p "$bin_dir" "$out_dir/src/kubernetes" "$out_dir/src/etcd"

# --- Kubernetes ---------------------------------------------------------
log "downloading k8s.io/kubernetes $KUBE_VERSION"
kube_mod_file=$(cd "$out_dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    awk -F'"' '$2 == "GoMod" { print $4 }')
[[ -f "$kube_mod_file" ]] ||
    die "go mod download of k8s.io/kubernetes@$KUBE_VERSION returned no go.mod; check that the Go module proxy serves that version"
kube_release_time=$(cd "$out_dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    awk -F'"' '$2 == "Info" { print $4 }' | xargs cat | sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')

kube_minor=${KUBE_VERSION#v1.}
kube_minor=${kube_minor%%.*}
staging_version="v0.${KUBE_VERSION#v1.}"
replaces=$(staging_replaces "$kube_mod_file" "$staging_version")
[[ -n "$replaces" ]] ||
    die "no staging replace lines found in $kube_mod_file; the layout of k8s.io/kubernetes changed, so update staging_replaces"
kube_go_directive=$(awk '$1 == "go" { print $2; exit }' "$kube_mod_file")

# The godebug line copies upstream's, so the binaries keep the runtime
# defaults their release was tested with.
cat >"$out_dir/src/kubernetes/go.mod" <<EOF
module memstress.local/kube-build

go $kube_go_directive

godebug default=go${kube_go_directive%.*}

require k8s.io/kubernetes $KUBE_VERSION

replace (
$replaces
)
EOF

kube_ldflags="-s -w"
for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X $package.gitVersion=$KUBE_VERSION"
    kube_ldflags+=" -X $package.gitMajor=1 -X $package.gitMinor=$kube_minor"
    kube_ldflags+=" -X $package.gitTreeState=clean"
    # The module proxy does not record the release commit, so neither
    # binary can report it.
    kube_ldflags+=" -X $package.gitCommit=unknown"
    kube_ldflags+=" -X $package.buildDate=${kube_release_time:-1970-01-01T00:00:00Z}"
done

cd "$out_dir/src/kubernetes"
step=1
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    build_one "$name" "k8s.io/kubernetes/cmd/$name" "$kube_ldflags" "$step"
    step=$((step + 1))
done

# --- etcd ---------------------------------------------------------------
# go.etcd.io/etcd/server/v3 has a main package at its root that calls
# etcdmain.Main, the same entry point as the released etcd binary.
cat >"$out_dir/src/etcd/go.mod" <<EOF
module memstress.local/etcd-build

go $kube_go_directive

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
cd "$out_dir/src/etcd"
build_one etcd go.etcd.io/etcd/server/v3 \
    "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=unknown" "$step"

echo "$stamp" >"$stamp_file"
log "done in $((SECONDS - started))s"
echo "$bin_dir"
