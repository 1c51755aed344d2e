#!/usr/bin/env bash
# Instructions per `pingpong` round trip and per `ring` hop of the stakker peer, on its
# thread, by the same yardstick as perf/callgrind-same-shard.sh uses for percore
# (docs/PERFORMANCE.md, "Same-shard path, round 9").
#
#   bash perf/callgrind-stakker.sh [BINARY] [OUTDIR]
#
# Runs `pingpong --n N` (N = 200k, 400k) and `ring --n N` (N = 200k, 600k) with only the
# stakker peer (PERCORE_PERF_PEERS=stakker) under callgrind, collecting only inside
# `stakker::core::Stakker::run`, which runs the timed part (percore's own run and stakker's
# set-up are not counted; valgrind may give the stakker thread the number, and so the
# file, of percore's finished shard thread). Prints (Ir(N2) - Ir(N1)) / (N2 - N1) by
# function and in total. Needs valgrind, callgrind_annotate and python3.
set -euo pipefail
BIN=${1:-target/release/percore-perf}
OUT=${2:-/tmp/cg-stakker}
rm -rf "$OUT"; mkdir -p "$OUT"
for run in "pingpong 200000" "pingpong 400000" "ring 200000" "ring 600000"; do
  set -- $run
  mkdir -p "$OUT/$1-$2"
  PERCORE_PERF_PEERS=stakker valgrind --tool=callgrind --separate-threads=yes \
    --toggle-collect='stakker::core::Stakker::run*' --callgrind-out-file="$OUT/$1-$2/cg.%p" \
    "$BIN" "$1" --n "$2" --no-pin >"$OUT/$1-$2/out.txt" 2>"$OUT/$1-$2/valgrind.txt"
done
python3 - "$OUT" <<'PY'
import re, subprocess, sys, glob
def by_function(d):
    # the thread file with the most collected instructions (the others collect nothing)
    best = max(glob.glob(d + "/cg.*-*"), key=lambda f: int((re.search(r"^summary: (\d+)", open(f).read(), re.M) or [0, 0])[1]))
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", best], capture_output=True, text=True).stdout
    fns, on = {}, False
    for line in out.splitlines():
        if "file:function" in line:
            on = True
            continue
        m = re.match(r"\s*([\d,]+)\s+(\([^)]*\)\s+)?(.*)$", line) if on else None
        if m:
            name = re.sub(r" \[[^\]]*\]$", "", m.group(3)).split(":", 1)[-1]
            fns[name] = fns.get(name, 0) + int(m.group(1).replace(",", ""))
    return fns
out = sys.argv[1]
for w, n1, n2, unit in (("pingpong", 200000, 400000, "round trip"), ("ring", 200000, 600000, "hop")):
    a, b = by_function(f"{out}/{w}-{n1}"), by_function(f"{out}/{w}-{n2}")
    rows = sorted(((b.get(k, 0) - a.get(k, 0)) / (n2 - n1), k) for k in set(a) | set(b))
    print(f"stakker {w}: instructions per {unit}")
    for v, k in reversed(rows):
        if abs(v) >= 0.05:
            print(f"{v:9.2f}  {k[:120]}")
    print(f"{sum(v for v, _ in rows):9.2f}  total\n")
PY
