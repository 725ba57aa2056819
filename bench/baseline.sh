# Overlord against one PyTorch DataLoader per rank (bench/baseline/run.py):
# loading-fleet memory, delivered tokens/s and rank imbalance for 2, 4 and
# 8 simulated ranks, with the ratios last as one JSON line and a plot in
# bench/baseline.png. Run through scripts/bench baseline.
#
# Environment, with defaults in brackets:
#   RANKS             rank counts [2,4,8]
#   STEPS             measured steps per run [60]
#   STEP_MS           simulated step of full rows at the linear cost [50]
#   WORKERS           DataLoader workers per rank [2]
#   BUFFER_DOCUMENTS  buffer_documents of Overlord's pools [64]
#   BUFFER_BYTES      buffer_bytes of Overlord's pools [16777216]
#   IMAGES            auto adds the image-text source when the demo images
#                     and overlord.decode_image exist; on or off [auto]
#   PLOT              where the PNG goes; empty for none [bench/baseline.png]
set -euo pipefail

data="$OVERLORD_DATA_DIR"
work=$(mktemp -d /tmp/overlord-bench-baseline.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# The trainers import the overlord package built with --config=bench from
# a private folder, so the run leaves the installed package alone.
OVERLORD_PYTHON_SITE="$work/site" scripts/install-python --config=bench >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; exit 1; }

plot="${PLOT-bench/baseline.png}"
PYTHONPATH="$work/site" /usr/bin/python3 bench/baseline/run.py \
  --overlordd "$BAZEL_BIN/actors/overlordd" --data "$data" --work "$work" \
  --ranks "${RANKS:-2,4,8}" --steps "${STEPS:-60}" --step-ms "${STEP_MS:-50}" \
  --workers "${WORKERS:-2}" --set "buffer_documents=${BUFFER_DOCUMENTS:-64}" \
  --set "buffer_bytes=${BUFFER_BYTES:-16777216}" \
  --images "${IMAGES:-auto}" \
  ${plot:+--plot "$plot"} 2>"$work/trainers.log" || {
  tail -n 30 "$work/trainers.log" >&2
  for log in "$work"/*.log; do echo "== $log" >&2; tail -n 5 "$log" >&2; done
  exit 1
}
