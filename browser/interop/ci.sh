#!/usr/bin/env bash
# Interop suite: aiortc (Python), Firefox ESR, a TURN relay (coturn) and a
# Chromium page whose network drops UDP (ICE-TCP), each in a room with
# headless Chromium, through the reference server. Installs what it needs
# (Debian: chromium, firefox-esr, coturn, nodejs, npm, python3-venv,
# iproute2, nftables; npm: playwright-core and puppeteer-core from
# package-lock.json; PyPI: aiortc in browser/interop/.venv), then runs the
# ignored tests of engine/tests/server_interop.rs (the ICE-TCP one makes its
# own network namespaces and firewall rules: it needs root). About 3 minutes
# once the packages are installed. Called by .ci/run.
#
# chromium_behind_a_narrow_downlink (issue 14's narrow-link rules in
# Chromium behind a tc token bucket, about 2 minutes a run) runs last. On
# 2026-12-07 it passed 8 of 8 runs on the development machine (load 1.5-4.5);
# its tightest check is the recovery after the 250 kbit/s limit lifts
# (goal 5 s, measured 2.5-4.8 s), and a run that fails is reported with
# its failed checks and run once more; the suite fails if both fail.
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
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
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
cargo test -p piazza --test server_interop -- --ignored --nocapture --test-threads=1 \
  --skip firefox_and_chromium --skip chromium_behind_a_narrow_downlink

# Firefox's ICE pairs nothing with a loopback address, so the Firefox room
# runs in a network namespace made here: a veth pair with 198.18.0.1 and
# 198.18.0.2 (RFC 2544 benchmarking addresses) and a default route (Firefox
# gathers no host candidate without one); the engine binds 198.18.0.1, the
# HTTP API stays on the namespace's loopback (a secure context).
ns="piazza-interop-ff-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip -n "$ns" link set lo up
ip -n "$ns" link add v0 type veth peer name v1
ip -n "$ns" addr add 198.18.0.1/24 dev v0
ip -n "$ns" addr add 198.18.0.2/24 dev v1
ip -n "$ns" link set v0 up
ip -n "$ns" link set v1 up
ip -n "$ns" route add default via 198.18.0.2 dev v0
ip netns exec "$ns" env PIAZZA_INTEROP_UDP_BIND=198.18.0.1 \
  cargo test -p piazza --test server_interop -- --ignored --nocapture --test-threads=1 firefox_and_chromium

# The narrow link last (it makes its own namespaces and token bucket).
narrow() {
  cargo test -p piazza --test server_interop -- --ignored --nocapture --exact \
    chromium_behind_a_narrow_downlink
}
if ! narrow; then
  echo "browser/interop/ci.sh: chromium_behind_a_narrow_downlink failed (attempt 1 of 2; its failed checks are above); running it again"
  narrow
fi
