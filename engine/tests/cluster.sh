#!/usr/bin/env bash
# The cluster suite (docs/cluster.md): a real redis-server and three piazza
# nodes as processes on loopback. Installs Redis from Debian if it is
# missing, then runs the ignored tests of engine/tests/cluster.rs (one runs
# the load generator against the cluster) and the directory throughput
# measurement. Bounded: 15 minutes at most; about 3 minutes once built.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server"
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 redis-server
fi
redis-server --version

# The load generator's binary, for the test that runs it against the
# cluster; the same build as loadgen/janus-ci.sh's, so CI builds it once.
cargo build -p piazza-loadgen -p piazza --features piazza/server --bins
# One test at a time: each starts its own Redis and three nodes, and the
# failover and drain tests time what clients see.
timeout 900 cargo test -p piazza --test cluster -- --ignored --test-threads=1 --nocapture
# Directory operations per second with the real client (docs/cluster.md).
timeout 300 cargo test -p piazza --lib server::cluster::directory -- --ignored --nocapture
