#!/usr/bin/env bash
# The worker on its own: builds it, starts it on 127.0.0.1, fills 256 MiB while
# printing its progress, shows the test log, and stops and clears.
#
# It stands on its own: it installs what is missing (hack/deps.sh) and
# builds first.  Set DEMO_PORT to choose the port (default 18080).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${DEMO_PORT:-18080}
url="http://127.0.0.1:$port"

hack/deps.sh
make --no-print-directory all

echo "==> Starting memstress-worker on 127.0.0.1:$port"
bin/memstress-worker --listen "127.0.0.1:$port" -v 1 &
worker_pid=$!
trap 'kill "$worker_pid" 2>/dev/null || true' EXIT
for ((i = 0; i < 100; i++)); do
    curl -sf "$url/healthz" >/dev/null 2>&1 && break
    sleep 0.05
done
curl -sf "$url/healthz" >/dev/null || {
    echo "demo: the worker did not answer on $url/healthz; is the port in use? Set DEMO_PORT." >&2
    exit 1
}

echo
echo "==> curl -X POST $url/start -d '{\"memory_mb\": 256, \"duration_seconds\": 5, \"ramp_mb_per_sec\": 128, \"log_interval_sec\": 1}'"
curl -s -X POST "$url/start" \
    -d '{"memory_mb": 256, "duration_seconds": 5, "ramp_mb_per_sec": 128, "log_interval_sec": 1}' | jq .

echo
echo "==> Progress from GET /status (ramped at 128 MiB/s so the build is visible)"
printf '%-10s %10s %10s %8s %12s\n' STATE MEMORY_MB TARGET_MB NODES SEARCHES
while :; do
    status=$(curl -s "$url/status")
    jq -r '[.state, .memory_mb, .target_mb, .nodes, .searches] | @tsv' <<<"$status" |
        awk -F'\t' '{ printf "%-10s %10s %10s %8s %12s\n", $1, $2, $3, $4, $5 }'
    [[ $(jq -r .is_running <<<"$status") == true ]] || break
    sleep 0.5
done

echo
echo "==> GET $url/logs"
curl -s "$url/logs" | jq -r '.logs[] | "\(.timestamp)  \(.operation)  \(.memory_use_mb) MiB  \(.message)"'

echo
echo "==> POST $url/clear"
curl -s -X POST "$url/clear" | jq .

cat <<EOT

Next:
  make test     run every suite: unit, worker API, real cgroup, Kubernetes
                client, local cluster, operator, end to end, image, sanitizers
  make bench    time to 1 GiB against stress-ng, idle RSS, /status latency
  bin/memstress-worker --help
EOT
