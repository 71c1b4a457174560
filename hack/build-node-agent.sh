#!/usr/bin/env bash
# Builds the node agent (hack/node-agent/, a development harness that plays
# the kubelet for the local cluster) into
# ${MEMSTRESS_CACHE:-$HOME/.cache/memstress}/node-agent-<hash>/node-agent.
# The hash covers the agent's go.mod, go.sum and Go sources and the Go
# version, so the binary is rebuilt only when one of them changes.
# `go build` runs under `nice -n 10`. The last line printed is the binary's
# path.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source_dir=$repo_root/hack/node-agent
cache_root=${MEMSTRESS_CACHE:-$HOME/.cache/memstress}

log() {
    printf '[build-node-agent %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]] ||
    die "go not found on PATH or at /usr/local/go/bin/go; install Go 1.25 or newer"
command -v go >/dev/null || PATH=/usr/local/go/bin:$PATH
command -v flock >/dev/null || die "flock not found; install util-linux"

hash=$(cd "$source_dir" && { go version; cat go.mod go.sum ./*.go; } | sha256sum | cut -c1-16)
out_dir=$cache_root/node-agent-$hash
binary=$out_dir/node-agent

if [[ -x "$binary" ]]; then
    echo "$binary"
    exit 0
fi

mkdir -p "$out_dir"
exec {lock_fd}>"$out_dir/.lock"
flock "$lock_fd"
if [[ -x "$binary" ]]; then
    echo "$binary"
    exit 0
fi

started=$SECONDS
log "building the node agent from $source_dir with $(go version)"
cd "$source_dir"
GOWORK=off CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod" \
    nice -n 10 go build -trimpath -ldflags "-s -w" -o "$binary.new" . ||
    die "go build of $source_dir failed (see the output above); fix it and run hack/build-node-agent.sh again"
mv -f "$binary.new" "$binary"
log "built $binary in $((SECONDS - started))s"
# Older builds are removed. A running agent is not affected, because it
# starts containers through /proc/self/exe.
for old_dir in "$cache_root"/node-agent-*; do
    [[ "$old_dir" != "$out_dir" && -d "$old_dir" ]] && rm -rf "$old_dir"
done
echo "$binary"
