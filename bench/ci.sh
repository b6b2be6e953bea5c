#!/usr/bin/env bash
# The benchmark part of CI, called by .ci/run: a smoke run of every
# benchmark, the regression gate against the merge base (or HEAD~1 on main,
# or the committed baseline), and the gate's self-test with the planted
# slowdown. Budget: about 15 minutes on 2 cores from a cold target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n--- bench: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
start=$(date +%s)

if ! command -v valgrind >/dev/null 2>&1; then
  step "installing valgrind"
  apt-get update -qq && apt-get install -y -qq valgrind
fi

# The smoke run uses the bench (release) profile, so the gate below reuses
# its build; the gate's unit tests run in `cargo test --workspace`.
step "cargo bench -p piazza-bench --bench hot_path -- --test (every benchmark once)"
cargo bench -p piazza-bench --bench hot_path -- --test

step "bench-gate (tier 1: callgrind instructions, tier 2: paired criterion rounds)"
cargo run --release -q -p piazza-bench --bin bench-gate -- --json target/bench-gate/report.json

step "bench-gate --self-test (planted 2x and +15 % slowdowns must fail the gate)"
cargo run --release -q -p piazza-bench --bin bench-gate -- --self-test --reuse-counts --json target/bench-gate/self-test.json

printf '\n--- bench: done in %d s\n' "$(( $(date +%s) - start ))"
