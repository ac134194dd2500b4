#!/usr/bin/env bash
# make run: the hub with the embedded store plus a small simulated fleet.
# Ctrl-C stops both.
set -euo pipefail
data="${1:-./data}" thermostats="${2:-5}" wearables="${3:-5}"
cd "$(dirname "$0")/.."
bin/telehub serve --data-dir "$data" &
hub=$!
sim=""
trap 'kill $sim $hub 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM
# Wait until the hub answers (the admin token exists by then).
for _ in $(seq 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && [[ -s "$data/admin.token" ]]; then break; fi
  if ! kill -0 "$hub" 2>/dev/null; then echo "the hub did not start" >&2; exit 1; fi
  sleep 0.1
done
bin/fleetsim --hub http://127.0.0.1:8080 --mqtt tcp://127.0.0.1:1883 --token-file "$data/admin.token" \
  --thermostats "$thermostats" --wearables "$wearables" --interval 1s --qos 1 2>/dev/null &
sim=$!
wait "$hub"
