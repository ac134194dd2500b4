#!/usr/bin/env bash
# Build-time assets of the dashboard: installs web/package.json's npm
# packages (npm ci, only when package-lock.json changed) and copies the chart
# library's dist files into web/static/vendor/, which `go build` embeds. The
# vendor folder is git-ignored. Without npm the hub still builds and works;
# the dashboard then says that charts need `make build`.
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v npm >/dev/null; then
  # make test installs npm (scripts/deps.sh) and runs this again; the browser
  # test fails in CI when the assets are still missing.
  echo "web-assets: npm not found; the dashboard is built without charts" >&2
  exit 0
fi
stamp=node_modules/.telehub-lock
if [[ ! -f "$stamp" ]] || ! cmp -s package-lock.json "$stamp"; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
mkdir -p static/vendor
for f in uPlot.iife.min.js uPlot.min.css; do
  src="node_modules/uplot/dist/$f"
  if ! cmp -s "$src" "static/vendor/$f"; then
    cp "$src" "static/vendor/$f"
  fi
done
cp node_modules/uplot/LICENSE static/vendor/uPlot.LICENSE 2>/dev/null || true
