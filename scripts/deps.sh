#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine with Go: Debian
# packages (when missing), influxd 1.8.10 and nats-server 2.15.3 (built with
# go install, cached).
set -euo pipefail
need=()
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v curl >/dev/null || need+=(curl)
command -v npm >/dev/null || need+=(nodejs npm)
[[ -x /usr/bin/chromium ]] || need+=(chromium) # the dashboard's browser tests
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static) # the arm64 build's test
command -v promtool >/dev/null || need+=(prometheus) # promtool check metrics on the hub's /metrics
if ((${#need[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
  echo "installing Debian packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# MQTT.js and the other npm packages of web/package.json (the MQTT
# interoperability and browser tests), from the lock file, when missing.
web="$(dirname "$0")/../web"
if [[ ! -d "$web/node_modules/mqtt" ]]; then
  npm ci --prefix "$web" --no-audit --no-fund --loglevel=error
fi
"$(dirname "$0")/influxd.sh" install
"$(dirname "$0")/nats.sh" install
