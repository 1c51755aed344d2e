#!/usr/bin/env bash
# Instructions per same-shard `pingpong` round trip on the shard thread, by step
# (docs/PERFORMANCE.md, "The same-shard path, step by step").
#
#   bash perf/callgrind-same-shard.sh [BINARY] [OUTDIR]
#
# Runs `pingpong --n N --no-peers --no-pin` under callgrind for N = 200k and 400k, takes the
# shard thread's file (the one with the most instructions) from each, and prints
# (Ir(400k) - Ir(200k)) / 200k per step (perf/callgrind_steps.py; `--lines` there lists
# the source lines of each step). Extra arguments for the workload go in PERF_ARGS
# (`PERF_ARGS=--metrics bash perf/callgrind-same-shard.sh`). Needs valgrind and python3.
set -euo pipefail
BIN=${1:-target/release/percore-perf}
OUT=${2:-/tmp/cg-same}
rm -rf "$OUT"; mkdir -p "$OUT"
for N in 200000 400000; do
  mkdir -p "$OUT/$N"
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/$N/cg.%p" \
    "$BIN" pingpong --n "$N" --no-peers --no-pin ${PERF_ARGS:-} >"$OUT/$N/out.txt" 2>"$OUT/$N/valgrind.txt"
done
shard_file() {
  for f in "$1"/cg.*; do echo "$(grep -m1 '^summary:\|^totals:' "$f" | awk '{print $2}') $f"; done | sort -n | tail -1 | cut -d' ' -f2
}
python3 "$(dirname "$0")/callgrind_steps.py" "$(shard_file "$OUT/200000")" "$(shard_file "$OUT/400000")" "${@:3}"
