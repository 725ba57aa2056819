# Image-text reader throughput on one core over the demo image shards:
# tar reading alone, and reading with JPEG/PNG decoding, resizing and
# normalisation at 224x224 (patch 14) and 384x384 (patch 16) budgets.
# Run through scripts/bench image_decode.
set -euo pipefail

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
taskset -c 0 "$BAZEL_BIN/bench/image_decode_bench" "$OVERLORD_DATA_DIR"
