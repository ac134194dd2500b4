#!/usr/bin/env bash
# make lint, for docs/openapi.yaml: Redocly CLI (@redocly/cli, pinned in
# web/package.json) with the recommended rules (redocly.yaml; the accepted
# exceptions, each with its reason, in .redocly.lint-ignore.yaml). Installs
# what it needs when missing, as `make test` runs lint first on a fresh
# machine: npm (Debian packages), then the npm packages from the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
  echo "installing Debian packages: nodejs npm" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
scripts/web-assets.sh # npm ci when package-lock.json changed
exec web/node_modules/.bin/redocly lint --format=stylish docs/openapi.yaml
