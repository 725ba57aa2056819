# Range reads of one large WebDataset shard with and without the cache of
# its tar headers that each source worker keeps. Run through
# scripts/bench tar_index (SAMPLES and RANGE_BYTES change the shard).
set -euo pipefail

work=$(mktemp -d /tmp/overlord-bench-tar-index.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
taskset -c 0 "$BAZEL_BIN/bench/tar_index_bench" "$work" "${SAMPLES:-2000}" "${RANGE_BYTES:-1048576}"
