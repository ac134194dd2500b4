#!/usr/bin/env bash
# Installs nats-server 2.15.3 into a cache folder (once) and starts or stops a
# throwaway three-server JetStream cluster on free loopback ports for the tests.
#   scripts/nats.sh install
#   scripts/nats.sh start DIR   -> prints TELEHUB_TEST_NATS_URLS=... ; pids in DIR/nats-N.pid
#   scripts/nats.sh stop DIR
# Each server has its own server_name (n0, n1, n2), store directory DIR/nN,
# log DIR/nN.log and configuration DIR/nN.conf, made from
# configs/nats-test.conf.
set -euo pipefail
VERSION=2.15.3
CACHE="${TELEHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/telehub}"
BIN="$CACHE/nats-server-$VERSION/nats-server"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N=3

install() {
  if [[ -x "$BIN" ]]; then return; fi
  echo "installing nats-server $VERSION into $(dirname "$BIN") (a minute or two)..." >&2
  mkdir -p "$(dirname "$BIN")"
  (cd /tmp && GOBIN="$(dirname "$BIN")" GOFLAGS= go install "github.com/nats-io/nats-server/v2@v$VERSION")
}

taken=" "
# Sets FREE to a free loopback port below the kernel's ephemeral range (32768
# and up), so that no outgoing connection holds it, and not set before.
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((10000 + RANDOM % 22000))
    if [[ "$taken" == *" $p "* ]]; then continue; fi
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then taken+="$p "; FREE=$p; return; fi
  done
  echo "no free port found" >&2; return 1
}

start() {
  local dir="$1"
  install
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local i j port=() http=() cluster=() routes urls=""
  for ((i = 0; i < N; i++)); do
    free_port; port[i]=$FREE
    free_port; http[i]=$FREE
    free_port; cluster[i]=$FREE
  done
  for ((i = 0; i < N; i++)); do
    routes=""
    for ((j = 0; j < N; j++)); do
      if ((j != i)); then routes+="${routes:+, }\"nats-route://127.0.0.1:${cluster[j]}\""; fi
    done
    sed -e "s|@NAME@|n$i|g" -e "s|@DIR@|$dir/n$i|g" -e "s|@PORT@|${port[i]}|g" \
      -e "s|@HTTPPORT@|${http[i]}|g" -e "s|@CLUSTERPORT@|${cluster[i]}|g" -e "s|@ROUTES@|$routes|g" \
      "$ROOT/configs/nats-test.conf" > "$dir/n$i.conf"
    "$BIN" -c "$dir/n$i.conf" > "$dir/n$i.log" 2>&1 &
    echo $! > "$dir/nats-$i.pid"
    urls+="${urls:+,}nats://127.0.0.1:${port[i]}"
  done
  # /healthz answers 200 once JetStream has a meta leader and this server is
  # current with it.
  local healthy
  for _ in $(seq 600); do
    healthy=0
    for ((i = 0; i < N; i++)); do
      if curl -fsS "http://127.0.0.1:${http[i]}/healthz" >/dev/null 2>&1; then healthy=$((healthy + 1)); fi
      if ! kill -0 "$(cat "$dir/nats-$i.pid")" 2>/dev/null; then
        echo "nats-server n$i exited while starting; its log:" >&2; cat "$dir/n$i.log" >&2
        stop "$dir"; return 1
      fi
    done
    if ((healthy == N)); then
      echo "TELEHUB_TEST_NATS_URLS=$urls"
      echo "TELEHUB_TEST_NATS_SERVER=$BIN"
      echo "TELEHUB_TEST_NATS_DIR=$dir"
      return
    fi
    sleep 0.1
  done
  echo "the NATS cluster did not become healthy within 60s; the logs:" >&2
  for ((i = 0; i < N; i++)); do echo "--- n$i" >&2; tail -n 20 "$dir/n$i.log" >&2; done
  stop "$dir"; return 1
}

# Stops the servers (SIGTERM, SIGKILL after 10 s) and waits until they have
# exited, so that none outlives the run.
stop() {
  local dir="$1" f pid pids=()
  for f in "$dir"/nats-*.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    pids+=("$pid")
    rm -f "$f"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  done
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?dir}" ;;
  stop) stop "${2:?dir}" ;;
  *) echo "usage: $0 install|start DIR|stop DIR" >&2; exit 2 ;;
esac
