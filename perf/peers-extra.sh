#!/usr/bin/env bash
# The anchors outside Rust for `percore-perf --peers-extra`: CAF (C++ Actor Framework) and
# Erlang/BEAM benchmark programs for pingpong, counting, ring and spawn.
#
#   bash perf/peers-extra.sh                 # install if missing, build, run both beside percore
#   bash perf/peers-extra.sh --build-only    # install if missing and build, nothing else
#   bash perf/peers-extra.sh -- ARGS...      # ARGS go to percore-perf (e.g. --n 500000 --out DIR)
#
# Installs the Debian packages libcaf-dev and erlang-base with apt-get when they are missing
# (as root, or through sudo), compiles perf/peers-extra/caf_bench.cpp and peers_bench.erl
# into target/peers-extra/ (where percore-perf looks for them; PERCORE_PEERS_EXTRA_DIR
# overrides), runs each program once as a smoke test, then runs
# `percore-perf pingpong,counting,ring,spawn --peers-extra` (release build), which runs them
# again beside percore, actix, ractor, kameo and stakker and puts all in one table.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/perf/peers-extra"
out="${PERCORE_PEERS_EXTRA_DIR:-$root/target/peers-extra}"

build_only=false
perf_args=()
while (($#)); do
    case "$1" in
        --build-only) build_only=true ;;
        --) shift; perf_args=("$@"); break ;;
        *) echo "peers-extra.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
    shift
done

missing=()
dpkg -s libcaf-dev >/dev/null 2>&1 || missing+=(libcaf-dev)
command -v erl >/dev/null 2>&1 || missing+=(erlang-base)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if ((${#missing[@]})); then
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    echo "peers-extra.sh: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$out"
echo "peers-extra.sh: building $out/caf-bench and $out/peers_bench.beam" >&2
g++ -O2 -std=c++17 -o "$out/caf-bench" "$src/caf_bench.cpp" -lcaf_core -pthread
erlc -o "$out" "$src/peers_bench.erl"

# Smoke test: each program, each workload, small sizes.
for w in pingpong counting ring spawn; do
    caf=$("$out/caf-bench" "$w" 10000 1)
    erl=$(erl +S 2:2 -noshell -pa "$out" -run peers_bench main "$w" 10000)
    echo "  $w: caf: $caf; erlang: $erl" >&2
done
$build_only && exit 0

cd "$root"
cargo run --release -p percore-perf -- pingpong,counting,ring,spawn --peers-extra "${perf_args[@]}"
