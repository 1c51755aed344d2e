#!/usr/bin/env python3
"""Per-function instruction difference between two callgrind runs, per unit of work.

    python3 perf/callgrind_diff.py UNITS "BIG_FILES" "SMALL_FILES" [--top N] [--inclusive]

BIG_FILES and SMALL_FILES are space-separated globs of callgrind output files (e.g. the two
shard threads' files of a run at n = 100k and of one at n = 50k, `--separate-threads=yes`);
each side is summed over its files, the small run is subtracted from the big one, and every
function's difference is divided by UNITS (the work between the two runs: messages, round
trips). Prints the total and the largest differences, exclusive unless `--inclusive`.
Setup and teardown cancel out; timing-dependent work (polls, spins) does not.
Used for docs/PERFORMANCE.md, "Sharding, round 3". Needs `callgrind_annotate` (valgrind).
"""
import argparse
import glob
import re
import subprocess
from collections import Counter

LINE = re.compile(r"^\s*([\d,]+) \([ \d.]+%\)\s+(.*)$")


def load(spec, inclusive):
    """Instructions per function (and the program total) summed over the files of `spec`."""
    per_fn, total = Counter(), 0
    for pattern in spec.split():
        for path in sorted(glob.glob(pattern)):
            out = subprocess.run(
                ["callgrind_annotate", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", path],
                capture_output=True, text=True, check=True,
            ).stdout
            for line in out.splitlines():
                if "Auto-annotated source" in line:
                    break
                m = LINE.match(line)
                if not m:
                    continue
                count, name = int(m.group(1).replace(",", "")), m.group(2)
                if name.startswith("PROGRAM TOTALS"):
                    total += count
                    continue
                if name.startswith("=>") or name.startswith("events"):
                    continue
                name = re.sub(r" \[[^\]]*\]$", "", name)
                name = re.sub(r"^/rustc/[0-9a-f]+/library/", "std/", name)
                per_fn[name] += count
    return per_fn, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("units", type=float)
    ap.add_argument("big")
    ap.add_argument("small")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--inclusive", action="store_true")
    a = ap.parse_args()
    big, big_total = load(a.big, a.inclusive)
    small, small_total = load(a.small, a.inclusive)
    print(f"total per unit: {(big_total - small_total) / a.units:.1f}  (big {big_total:,}, small {small_total:,})")
    diff = {k: big.get(k, 0) - small.get(k, 0) for k in set(big) | set(small)}
    for name, d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: a.top]:
        print(f"{d / a.units:9.1f}  {name}")


if __name__ == "__main__":
    main()
