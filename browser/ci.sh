#!/usr/bin/env bash
# Browser end-to-end tests: installs Debian's chromium, node and
# redis-server (if absent; Redis for the cluster failover scenario) and the
# npm packages (playwright-core, from package-lock.json), then runs the
# ignored Rust tests that start the server (or a cluster of nodes) and drive
# headless Chromium: e2e.mjs, e2ee.mjs, h264.mjs (an H.264 simulcast camera
# decoded in another page) and cluster.mjs. Takes about four minutes once
# chromium is installed.
# Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "browser/ci.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund --loglevel=error

cd ..
cargo test -p piazza --test server_browser -- --ignored --nocapture --test-threads=1
