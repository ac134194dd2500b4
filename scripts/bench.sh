#!/usr/bin/env bash
# make bench / make bench-full: installs the peers (Debian's mosquitto,
# Telegraf built with go install into the cache folder, influxd 1.8.10),
# builds the load generator and the bare-broker peer (make has built
# bin/telehub), starts a throwaway influxd on loopback, runs the suite
# (loadgen bench) and writes BENCHMARKS.md.
#   scripts/bench.sh quick|full [more `loadgen bench` flags, e.g. -only ingest]
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-quick}"
shift || true
TELEGRAF_VERSION=1.36.4
CACHE="${TELEHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/telehub}"
TELEGRAF="$CACHE/telegraf-$TELEGRAF_VERSION/telegraf"

if [[ ! -x /usr/sbin/mosquitto ]]; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
  echo "installing Debian's mosquitto" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto curl >/dev/null
fi
if [[ ! -x "$TELEGRAF" ]]; then
  echo "building telegraf $TELEGRAF_VERSION into $(dirname "$TELEGRAF") (many minutes on 2 cores)..." >&2
  mkdir -p "$(dirname "$TELEGRAF")"
  (cd /tmp && GOBIN="$(dirname "$TELEGRAF")" GOFLAGS= go install \
    -tags "custom,inputs.mqtt_consumer,outputs.influxdb_v2,parsers.json_v2,parsers.json" \
    "github.com/influxdata/telegraf/cmd/telegraf@v$TELEGRAF_VERSION")
fi
scripts/influxd.sh install
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -o bin/loadgen ./cmd/loadgen
CGO_ENABLED=0 go build -trimpath -o bin/benchpeer ./cmd/benchpeer

tmp="$(mktemp -d)"
cleanup() { scripts/influxd.sh stop "$tmp/influxd"; rm -rf "$tmp"; }
trap cleanup EXIT
while IFS='=' read -r k v; do export "$k=$v"; done < <(scripts/influxd.sh start "$tmp/influxd")
echo "benchmarks ($mode) against influxd at $TELEHUB_TEST_INFLUX_URL; load now: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
bin/loadgen bench -mode "$mode" -out BENCHMARKS.md -dir "$tmp/run" \
  -telehub bin/telehub -benchpeer bin/benchpeer -mosquitto /usr/sbin/mosquitto \
  -telegraf "$TELEGRAF" -telegraf-config configs/telegraf-bench.conf \
  -influx-url "$TELEHUB_TEST_INFLUX_URL" -influxd "$TELEHUB_TEST_INFLUXD" "$@"
echo "wrote BENCHMARKS.md" >&2
