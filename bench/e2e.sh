# End-to-end delivered tokens/s on the quickstart config: overlordd
# --role all and one overlord_pull per rank on loopback, pulling STEPS
# steps (default 2000) as fast as they can. The tokenizer-bound limit is
# the single-core tokenizer rate times the cores, since tokenizing is the
# loader's main work. Run through scripts/bench e2e.
set -euo pipefail

data="$OVERLORD_DATA_DIR"
steps="${STEPS:-2000}"
config=examples/quickstart.yaml
work=$(mktemp -d /tmp/overlord-bench-e2e.XXXXXX)
cores=$(nproc)
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

tokenizer=$("$BAZEL_BIN/bench/tokenizer_bench" "$data" | tail -n 1)

source tests/e2e_lib.sh
port=$(free_ports 2)
"$BAZEL_BIN/actors/overlordd" --role all --config "$config" \
  --set base_port="$port" --set planner_port=0 --set tokenizer="$data/gpt2" \
  --set "sources.mail.paths=$data/mail/*.jsonl" \
  --set "sources.sotu.paths=$data/sotu/*.txt" \
  --set "sources.moby.paths=$data/moby/*.txt" 2>"$work/overlordd.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true' EXIT

start=$(date +%s.%N)
"$BAZEL_BIN/tools/overlord_pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 \
  --steps "$steps" --prefetch 4 >"$work/rank1.jsonl" &
other=$!
"$BAZEL_BIN/tools/overlord_pull" --endpoint "127.0.0.1:$port" --rank 0 \
  --steps "$steps" --prefetch 4 >"$work/rank0.jsonl"
wait "$other"
end=$(date +%s.%N)
kill -TERM "$daemon"
wait "$daemon" || true
trap - EXIT

/usr/bin/python3 - "$tokenizer" "$start" "$end" "$cores" "$steps" "$work"/rank*.jsonl <<'PY'
import json, sys
tokenizer = json.loads(sys.argv[1])
start, end, cores, steps = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
tokens = padding = 0
for path in sys.argv[6:]:
    for line in open(path):
        record = json.loads(line)
        tokens += record["tokens"]
        padding += record["padding"]
seconds = end - start
rate = tokens / seconds
limit = tokenizer["tokens_per_s"] * cores
print(f"delivered {tokens:,} tokens in {seconds:.2f} s: {rate:,.0f} tokens/s")
print(f"tokenizer-bound limit: {tokenizer['tokens_per_s']:,.0f} tokens/s x {cores} cores = {limit:,.0f}")
print(json.dumps({
    "bench": "e2e",
    "steps": steps,
    "tokens": tokens,
    "seconds": round(seconds, 3),
    "tokens_per_s": round(rate),
    "padding_fraction": round(padding / (tokens + padding), 4),
    "tokenizer_tokens_per_s_one_core": tokenizer["tokens_per_s"],
    "tokenizer_bound_tokens_per_s": round(limit),
    "fraction_of_limit": round(rate / limit, 3),
}))
PY
rm -rf "$work"
