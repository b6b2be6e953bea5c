#!/usr/bin/env bash
# Best-of-N native timings in the count mode: the least-disturbed run of a
# benchmark on a shared machine. usage: bench/best_of.sh [N] [ids...]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}; shift || true
exe=$(cargo bench -q -p piazza-bench --bench hot_path --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*hot_path[^"]*\)".*/\1/p' | tail -1)
ids=("$@")
if [ ${#ids[@]} -eq 0 ]; then
  mapfile -t ids < <("$exe" --count-list | tr '{' '\n' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
fi
printf '%-40s %14s %8s\n' bench "ns/iter(best)" "items"
for id in "${ids[@]}"; do
  best=""
  for _ in $(seq "$n"); do
    line=$("$exe" --count "$id" --iters "${ITERS:-2000}" 2>/dev/null | tail -1)
    v=$(echo "$line" | sed -n 's/.*"iters":\([0-9]*\).*"items_per_iter":\([0-9]*\).*"wall_ns":\([0-9]*\).*/\3 \1 \2/p')
    set -- $v
    per=$(( $1 / $2 )); items=$3
    if [ -z "$best" ] || [ "$per" -lt "$best" ]; then best=$per; fi
  done
  printf '%-40s %14d %8d\n' "$id" "$best" "$items"
done
