#!/usr/bin/env bash
# Fuzz smoke for CI (called by .ci/run): build the libFuzzer targets with
# coverage instrumentation on the stable toolchain, seed their corpora, run
# each for a bounded time, fail on any crash (the input is kept in
# fuzz/artifacts/<target>/).
#
# No cargo-fuzz install: the flags are the ones `cargo fuzz build -s none`
# passes (SanitizerCoverage through stable -C options, no sanitizer, which
# needs nightly), plus `--target` so build scripts and proc macros are not
# instrumented. `cargo fuzz run <target> -s none` works on this crate too.
#
#   FUZZ_SECONDS   seconds per target (default 40)
#   FUZZ_JOBS      targets run at once (default 2, one per core)
#   FUZZ_TARGETS   which targets (default: all four)
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-40}
jobs=${FUZZ_JOBS:-2}
targets=${FUZZ_TARGETS:-datagram control sdp http}
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=target/$triple/release

export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"

start=$(date +%s)
cargo build --locked --release --target "$triple" --bins
echo "fuzz build: $(($(date +%s) - start)) s"

mkdir -p logs
run() {
    local t=$1
    mkdir -p "artifacts/$t" "corpus/$t"
    # -rss_limit_mb: the engine never needs near this; a leak shows.
    # -timeout: one input taking 25 s of wall time is a hang worth a
    # failure (inputs take milliseconds; see docs/fuzzing.md on load).
    "$bin/$t" "corpus/$t" "seeds/$t" \
        -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1
}

failed=()
running=()
for t in $targets; do
    run "$t" &
    running+=("$!:$t")
    if ((${#running[@]} >= jobs)); then
        for r in "${running[@]}"; do
            wait "${r%%:*}" || failed+=("${r#*:}")
        done
        running=()
    fi
done
for r in "${running[@]}"; do
    wait "${r%%:*}" || failed+=("${r#*:}")
done

for t in $targets; do
    # The last status line and the final stats of each run.
    stats=$(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "logs/$t.log" |
        tr '\n' ' ')
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -n 1)
    echo "fuzz $t: ${last:-no status line} ${stats}"
done
if ((${#failed[@]})); then
    for t in "${failed[@]}"; do
        echo "=== fuzz target $t failed; its log ends:"
        tail -n 60 "logs/$t.log"
        ls -l "artifacts/$t"
    done
    echo "Reproduce: fuzz/$bin/<target> fuzz/artifacts/<target>/<crash file>;" \
        "add the input to fuzz/regressions/<target>/ and a test in engine/tests/fuzz_regressions.rs."
    exit 1
fi
echo "fuzz smoke: ${targets} for ${seconds} s each, no crash ($(($(date +%s) - start)) s in all)"
