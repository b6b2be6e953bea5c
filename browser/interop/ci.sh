#!/usr/bin/env bash
# Interop suite: aiortc (Python), Firefox ESR and a TURN relay (coturn), each
# in a room with headless Chromium, through the reference server. Installs
# what it needs (Debian: chromium, firefox-esr, coturn, nodejs, npm,
# python3-venv; npm: playwright-core and puppeteer-core from
# package-lock.json; PyPI: aiortc in browser/interop/.venv), then runs the
# ignored tests of engine/tests/server_interop.rs. About 2-3 minutes once
# the packages are installed. Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  echo "browser/interop/ci.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi
# Debian's coturn package starts a system turnserver on 3478; the tests start
# their own on a free port and do not need it.

npm ci --no-audit --no-fund --loglevel=error

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import aiortc' >/dev/null 2>&1; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
fi

cd ../..
cargo test -p piazza --test server_interop -- --ignored --nocapture --test-threads=1
