# Documents per second read from an indexed dataset against reading and
# tokenizing the JSON Lines it came from (demo mail corpus), on one core.
# Run through scripts/bench indexed.
set -euo pipefail

work=$(mktemp -d /tmp/overlord-bench-indexed.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
taskset -c 0 "$BAZEL_BIN/bench/indexed_bench" "$OVERLORD_DATA_DIR" "$work"
