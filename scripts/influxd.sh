#!/usr/bin/env bash
# Installs influxd 1.8.10 into a cache folder (once) and starts or stops a
# throwaway instance on a free loopback port for the tests.
#   scripts/influxd.sh install
#   scripts/influxd.sh start DIR   -> prints TELEHUB_TEST_INFLUX_URL=... ; pid in DIR/influxd.pid
#   scripts/influxd.sh stop DIR
set -euo pipefail
VERSION=1.8.10
CACHE="${TELEHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/telehub}"
BIN="$CACHE/influxd-$VERSION/influxd"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

install() {
  if [[ -x "$BIN" ]]; then return; fi
  echo "installing influxd $VERSION into $(dirname "$BIN") (about a minute)..." >&2
  mkdir -p "$(dirname "$BIN")"
  (cd /tmp && GOBIN="$(dirname "$BIN")" GOFLAGS= go install "github.com/influxdata/influxdb/cmd/influxd@v$VERSION")
}

free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; return 1
}

start() {
  local dir="$1"
  install
  mkdir -p "$dir"
  local port rpc
  port=$(free_port); rpc=$(free_port)
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@RPCPORT@|$rpc|g" \
    "$ROOT/configs/influxdb-test.conf" > "$dir/influxdb.conf"
  "$BIN" -config "$dir/influxdb.conf" > "$dir/influxd.log" 2>&1 &
  echo $! > "$dir/influxd.pid"
  for _ in $(seq 300); do
    if curl -fsS "http://127.0.0.1:$port/ping" >/dev/null 2>&1; then
      echo "TELEHUB_TEST_INFLUX_URL=http://127.0.0.1:$port"
      echo "TELEHUB_TEST_INFLUXD=$BIN"
      return
    fi
    if ! kill -0 "$(cat "$dir/influxd.pid")" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "influxd did not start; its log:" >&2; cat "$dir/influxd.log" >&2; return 1
}

stop() {
  local dir="$1"
  if [[ -f "$dir/influxd.pid" ]]; then
    kill "$(cat "$dir/influxd.pid")" 2>/dev/null || true
    rm -f "$dir/influxd.pid"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?dir}" ;;
  stop) stop "${2:?dir}" ;;
  *) echo "usage: $0 install|start DIR|stop DIR" >&2; exit 2 ;;
esac
