# Tokenizer throughput on one core: Overlord's C++ tokenizer against
# js-tiktoken (gpt2 ranks) under node, on the same text in the same run.
# Run through scripts/bench tokenizer.
set -euo pipefail

data="$OVERLORD_DATA_DIR"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
ours=$(taskset -c 0 "$BAZEL_BIN/bench/tokenizer_bench" "$data" | tee /dev/stderr | tail -n 1)
reference=$(taskset -c 0 node bench/tokenizer_reference.mjs "$data" | tail -n 1)
echo "$reference"

/usr/bin/python3 - "$ours" "$reference" <<'PY'
import json, sys
ours, reference = (json.loads(text) for text in sys.argv[1:3])
if ours["tokens"] != reference["tokens"]:
    sys.exit(f"token counts differ: overlord {ours['tokens']}, "
             f"js-tiktoken {reference['tokens']}")
ratio = ours["mb_per_s"] / reference["mb_per_s"]
print(f"overlord {ours['mb_per_s']:.2f} MB/s, js-tiktoken "
      f"{reference['mb_per_s']:.2f} MB/s: {ratio:.1f}x")
print(json.dumps({
    "bench": "tokenizer",
    "bytes": ours["bytes"],
    "tokens": ours["tokens"],
    "overlord_mb_per_s": ours["mb_per_s"],
    "reference_mb_per_s": reference["mb_per_s"],
    "speedup": round(ratio, 2),
    "prose_1mb_s": ours["prose_1mb_s"],
    "no_space_1mb_s": ours["no_space_1mb_s"],
    "no_space_ratio": ours["no_space_ratio"],
}))
PY
