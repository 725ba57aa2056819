# Load: CLIENTS simulated trainers (default 64) pull batches from one
# constructor node for SECONDS seconds (default 60), on loopback. The job
# has one data-parallel rank per client (ranks = CLIENTS, one packed row of
# 1024 tokens per rank and step), so the constructor node runs one
# constructor per client; a planner and one loader node run as separate
# overlordd processes. Reports batches/s, p50/p99 of the time a client's
# next() call waits, and the constructor process's RSS over time.
# Run through scripts/bench load [--seconds S] [--clients N]
# [--warmup-seconds W] [--prefetch K].
set -euo pipefail

seconds=60
clients=64
warmup=20
prefetch=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --warmup-seconds) warmup=$2; shift 2 ;;
    --prefetch) prefetch=$2; shift 2 ;;
    *) echo "usage: scripts/bench load [--seconds S] [--clients N] [--warmup-seconds W] [--prefetch K]" >&2
       exit 2 ;;
  esac
done
if [[ $warmup -ge $seconds && $seconds -gt 1 ]]; then
  warmup=$((seconds / 6))
fi

data="$OVERLORD_DATA_DIR"
overlordd="$BAZEL_BIN/actors/overlordd"
work=$(mktemp -d /tmp/overlord-bench-load.XXXXXX)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

source tests/e2e_lib.sh
base_port=$(free_ports "$clients")
planner_port=$(free_ports 1)
cat >"$work/job.yaml" <<YAML
seed: 2024
sequence_length: 1024
rows_per_rank: 1
ranks: $clients
base_port: $base_port
planner_port: $planner_port
loader_nodes: 1
constructor_nodes: 1
plan_ahead: 4
buffer_documents: 1024
tokenizer: $data/gpt2
sources:
  - name: mail
    format: jsonl
    paths: $data/mail/*.jsonl
    weight: 5
  - name: sotu
    format: text
    paths: $data/sotu/*.txt
    weight: 3
  - name: moby
    format: text
    paths: $data/moby/*.txt
    weight: 2
YAML

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

"$overlordd" --role planner --config "$work/job.yaml" 2>"$work/planner.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q "planner listening" "$work/planner.log" && break
  sleep 0.1
done
"$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id loader-1 \
  2>"$work/loader-1.log" &
pids+=($!)
"$overlordd" --role constructor --planner "127.0.0.1:$planner_port" \
  --node-id constructor-1 2>"$work/constructor-1.log" &
constructor=$!
pids+=("$constructor")

echo "cluster: planner, loader-1, constructor-1 (pid $constructor) on 127.0.0.1; logs in $work"
"$BAZEL_BIN/bench/load_bench" --base-port "$base_port" --pid "$constructor" \
  --ranks "$clients" --clients "$clients" --seconds "$seconds" \
  --warmup-seconds "$warmup" --prefetch "$prefetch"
