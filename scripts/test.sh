#!/usr/bin/env bash
# make test: installs what the tests need, starts influxd and a three-server
# NATS JetStream cluster, runs every test, stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/web-assets.sh # again, now that deps.sh has installed npm
tmp="$(mktemp -d)"
cleanup() { scripts/nats.sh stop "$tmp/nats"; scripts/influxd.sh stop "$tmp/influxd"; rm -rf "$tmp"; }
trap cleanup EXIT
while IFS='=' read -r k v; do export "$k=$v"; done < <(scripts/influxd.sh start "$tmp/influxd")
echo "influxd for tests at $TELEHUB_TEST_INFLUX_URL" >&2
while IFS='=' read -r k v; do export "$k=$v"; done < <(scripts/nats.sh start "$tmp/nats")
echo "NATS cluster for tests at $TELEHUB_TEST_NATS_URLS" >&2
# Strict as CI: a test whose tool is missing fails instead of skipping
# (testenv.Missing), so a newcomer's make test proves what CI proves.
export CI=true
go test -race -count=1 -p 2 -timeout 15m "$@" ./...
