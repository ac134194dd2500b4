#!/usr/bin/env bash
# make run: the hub with the embedded store plus a small simulated fleet.
set -euo pipefail
data="${1:-./data}" thermostats="${2:-5}" wearables="${3:-5}"
cd "$(dirname "$0")/.."
bin/telehub serve --data-dir "$data" &
hub=$!
trap 'kill $hub $sim 2>/dev/null; wait $hub 2>/dev/null' EXIT INT TERM
sim=""
for _ in $(seq 100); do
  if [[ -s "$data/admin.token" ]] && bin/fleetsim --help >/dev/null 2>&1 && (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then break; fi
  sleep 0.1
done
bin/fleetsim --hub http://127.0.0.1:8080 --mqtt tcp://127.0.0.1:1883 --token-file "$data/admin.token" \
  --thermostats "$thermostats" --wearables "$wearables" --interval 1s --qos 1 &
sim=$!
wait $hub
