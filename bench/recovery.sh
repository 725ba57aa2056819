# Recovery figures on loopback: (1) the trainer-visible gap when the
# constructor node serving a rank is killed with SIGKILL (planner, one
# loader node, two constructor nodes, the rank's shadow on the other
# node); (2) checkpoint snapshot and delta sizes and write times from the
# planner's status; (3) restore time: from starting overlordd --resume to
# the first batch of the resume step, against a cold start to step 0.
# Run through scripts/bench recovery. STEP_MS sets the simulated step (100).
set -euo pipefail
source tests/e2e_lib.sh

data="$OVERLORD_DATA_DIR"
step_ms="${STEP_MS:-100}"
work=$(mktemp -d /tmp/overlord-bench-recovery.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

write_demo_config "$work/job.yaml" "$data"
cat >>"$work/job.yaml" <<YAML
checkpoint_every: 50
checkpoint_dir: $work/checkpoint
YAML
base_port=$(free_ports 4)
planner_port=$(free_ports 1)
bin="$BAZEL_BIN"

"$bin/actors/overlordd" --role planner --config "$work/job.yaml" --set base_port="$base_port" \
  --set planner_port="$planner_port" --set constructor_nodes=2 2>"$work/planner.log" &
pids+=($!)
sleep 0.5
"$bin/actors/overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id loader-1 \
  2>"$work/loader.log" &
pids+=($!)
"$bin/actors/overlordd" --role constructor --planner "127.0.0.1:$planner_port" \
  --node-id constructor-1 2>"$work/constructor-1.log" &
first=$!
pids+=($first)
"$bin/actors/overlordd" --role constructor --planner "127.0.0.1:$planner_port" \
  --node-id constructor-2 2>"$work/constructor-2.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q "shadow assigned" "$work/planner.log" && grep -q "rank=1 shadow" "$work/planner.log" && break
  sleep 0.1
done

# Rank 1 keeps the other rank's pace so the plan window moves.
"$bin/tools/overlord_pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps 120 \
  --step-ms "$step_ms" --failover-timeout 1 >/dev/null 2>"$work/rank1.err" &
pids+=($!)
# Rank 0 is served by constructor-1 (the first constructor node to join
# gets rank 0); kill it after step 60.
owner=$(grep -o "rank=0 assigned to node=[a-z0-9-]*" "$work/planner.log" | head -n 1 | sed 's/.*node=//')
owner_pid=$(pgrep -f -- "--node-id $owner" | head -n 1)
gap=$("$bin/bench/recovery_bench" --planner "127.0.0.1:$planner_port" --rank 0 --steps 120 \
  --step-ms "$step_ms" --kill-after 60 --kill-pid "$owner_pid" | tail -n 1)
echo "$gap"

status=$("$bin/tools/overlordctl" --planner "127.0.0.1:$planner_port" status --json)
cleanup
pids=()
sleep 0.5

# Restore: resume at step 120 (snapshot at 100, 20 steps replayed).
port=$(free_ports 2)
start=$(date +%s.%N)
"$bin/actors/overlordd" --role all --config "$work/job.yaml" --set base_port="$port" \
  --set planner_port=0 --resume "$work/checkpoint" --from-step 120 2>"$work/resume.log" &
pids+=($!)
"$bin/tools/overlord_pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --first-step 120 \
  --steps 1 >/dev/null &
"$bin/tools/overlord_pull" --endpoint "127.0.0.1:$port" --rank 0 --first-step 120 --steps 1 >/dev/null
restored=$(date +%s.%N)
cleanup
pids=()
sleep 0.5

# Cold start to step 0 on the same job, for comparison.
port=$(free_ports 2)
start_cold=$(date +%s.%N)
"$bin/actors/overlordd" --role all --config "$work/job.yaml" --set base_port="$port" \
  --set planner_port=0 --set checkpoint_dir="$work/cold" 2>"$work/cold.log" &
pids+=($!)
"$bin/tools/overlord_pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps 1 >/dev/null &
"$bin/tools/overlord_pull" --endpoint "127.0.0.1:$port" --rank 0 --steps 1 >/dev/null
cold=$(date +%s.%N)
cleanup

/usr/bin/python3 - "$gap" "$status" "$start" "$restored" "$start_cold" "$cold" <<'PY'
import json, sys
gap = json.loads(sys.argv[1])
status = json.loads(sys.argv[2])
start, restored, start_cold, cold = map(float, sys.argv[3:7])
checkpoint = status["checkpoint"]
restore_ms = (restored - start) * 1000
cold_ms = (cold - start_cold) * 1000
print(f"gap after a constructor kill: {gap['gap_ms']:.1f} ms extra wait "
      f"(normal step {gap['step_ms']:.1f} ms; batch {gap['kill_to_batch_ms']:.1f} ms after the kill)")
print(f"snapshot {checkpoint['snapshot_bytes']} bytes in {checkpoint['snapshot_ms']:.2f} ms; "
      f"delta {checkpoint['delta_bytes']} bytes in {checkpoint['delta_ms_mean']:.2f} ms mean "
      f"({100 * checkpoint['delta_bytes'] / max(1, checkpoint['snapshot_bytes']):.2f}% of a snapshot)")
print(f"restore to the first batch of step 120: {restore_ms:.0f} ms (cold start to step 0: {cold_ms:.0f} ms)")
print(json.dumps({
    "bench": "recovery",
    "gap_ms": round(gap["gap_ms"], 2),
    "step_ms": round(gap["step_ms"], 2),
    "kill_to_batch_ms": round(gap["kill_to_batch_ms"], 2),
    "failovers": gap["failovers"],
    "snapshot_bytes": checkpoint["snapshot_bytes"],
    "snapshot_ms": round(checkpoint["snapshot_ms"], 3),
    "delta_bytes": checkpoint["delta_bytes"],
    "delta_ms": round(checkpoint["delta_ms_mean"], 3),
    "delta_fraction": round(checkpoint["delta_bytes"] / max(1, checkpoint["snapshot_bytes"]), 4),
    "restore_ms": round(restore_ms),
    "cold_start_ms": round(cold_ms),
}))
PY
rm -rf "$work"
