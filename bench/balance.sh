# Rank balance per step on the synthetic long/short mix and on the demo
# corpora's real document lengths. Run through scripts/bench balance.
set -euo pipefail
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$BAZEL_BIN/bench/balance_bench" "$OVERLORD_DATA_DIR"
