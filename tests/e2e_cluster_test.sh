#!/usr/bin/env bash
# Separate processes on loopback: a planner, two loader nodes and two
# constructor nodes. Checks that
#   - the digests equal those of one --role all process (placement does
#     not change the stream), with trainers finding their endpoints
#     through the planner;
#   - kill -9 of a loader node mid-run hangs nothing and, because its
#     pools resume on the other loader from the oldest needed document,
#     leaves the stream unchanged;
#   - kill -9 of a constructor node mid-run makes its trainer fail over to
#     the rank's shadow on the other constructor node, with no batch lost
#     or repeated;
#   - a trainer whose only constructor node dies gets an error naming its
#     rank and the node within its timeout;
#   - overlordctl status --json reports nodes, sources, ranks, imbalance,
#     and set-weights and drain work or fail with a clear message.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
ctl=tools/overlordctl
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-cluster.XXXXXX")
passed=0
failed=0
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

same_digests() {
  cmp -s <(digests_of "$1") <(digests_of "$2")
}

write_demo_config "$work/job.yaml" "$data"
steps=120

# --- Reference: one process -------------------------------------------
port=$(free_ports 2)
"$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" 2>"$work/all.log" &
all=$!
pids+=("$all")
"$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps $steps --timeout 60 >"$work/all.rank1" &
p1=$!
"$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps $steps --timeout 60 >"$work/all.rank0"
wait "$p1"
kill -TERM "$all"
wait "$all" || true

# Starts a planner with `loaders` and `constructors` nodes of each role;
# sets planner_port and base_port.
start_cluster() {
  local name=$1 loaders=$2 constructors=$3
  base_port=$(free_ports 4)  # two ranks and their shadows
  planner_port=$(free_ports 1)
  "$overlordd" --role planner --config "$work/job.yaml" --set base_port="$base_port" \
    --set planner_port="$planner_port" --set loader_nodes="$loaders" \
    --set constructor_nodes="$constructors" 2>"$work/$name.planner.log" &
  pids+=($!)
  wait_for_planner "$work/$name.planner.log" || fail "planner did not start; see $work/$name.planner.log"
  for i in $(seq "$loaders"); do
    "$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id "loader-$i" \
      2>"$work/$name.loader-$i.log" &
    pids+=($!)
    eval "${name}_loader_$i=$!"
  done
  for i in $(seq "$constructors"); do
    "$overlordd" --role constructor --planner "127.0.0.1:$planner_port" \
      --node-id "constructor-$i" 2>"$work/$name.constructor-$i.log" &
    pids+=($!)
    eval "${name}_constructor_$i=$!"
  done
}

# --- Placement: planner + 2 loaders + 2 constructors -------------------
start_cluster split 2 2
"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps $steps --timeout 60 \
  >"$work/split.rank1" 2>"$work/split.rank1.err" &
p1=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps $steps --timeout 60 \
  >"$work/split.rank0" 2>"$work/split.rank0.err" || true
wait "$p1" || true
check "rank 0 digests equal across placement" same_digests "$work/all.rank0" "$work/split.rank0"
check "rank 1 digests equal across placement" same_digests "$work/all.rank1" "$work/split.rank1"

# Payloads travel between constructor and loader nodes directly, over
# the loader nodes' ZeroMQ payload servers on loopback.
check "constructors connect to loaders directly" \
  grep -q "connected directly to node" "$work/split.constructor-1.log"
check "loader nodes serve payloads over ZeroMQ" \
  grep -q "serves payloads at tcp://127.0.0.1:" "$work/split.loader-1.log"

# The admin console on the same cluster.
"$ctl" --planner "127.0.0.1:$planner_port" status --json >"$work/status.json"
check "status json has the documented keys" /usr/bin/python3 - "$work/status.json" <<'PY'
import json, sys
status = json.load(open(sys.argv[1]))
assert {"nodes", "sources", "ranks", "imbalance"} <= status.keys(), status.keys()
assert len(status["nodes"]) == 4
for node in status["nodes"]:
    assert {"id", "role", "pid", "address"} <= node.keys(), node
assert {n["role"] for n in status["nodes"]} == {"loader", "constructor"}
for name in ("mail", "sotu", "moby"):
    source = status["sources"][name]
    assert {"workers", "docs_per_s", "latency_ms", "buffered"} <= source.keys(), source
assert [r["rank"] for r in status["ranks"]] == [0, 1]
assert all(r["step"] >= 1 for r in status["ranks"]), status["ranks"]
assert status["imbalance"] >= 1.0
PY
"$ctl" --planner "127.0.0.1:$planner_port" set-weights mail=1 sotu=1 >"$work/set.out"
check "set-weights names the step" grep -q "weights apply from step" "$work/set.out"
"$ctl" --planner "127.0.0.1:$planner_port" status --json >"$work/status2.json"
check "set-weights is recorded" /usr/bin/python3 -c '
import json, sys
changes = json.load(open(sys.argv[1]))["weight_changes"]
assert len(changes) == 1, changes
assert changes[0]["weights"]["mail"] == 1.0, changes' "$work/status2.json"
check "unknown source is rejected" bash -c \
  "! '$ctl' --planner 127.0.0.1:$planner_port set-weights news=1 2>&1 | grep -v . ; \
   '$ctl' --planner 127.0.0.1:$planner_port set-weights news=1 2>&1 | grep -q \"unknown source 'news'\""
check "negative weight is rejected" bash -c \
  "'$ctl' --planner 127.0.0.1:$planner_port set-weights mail=-1 2>&1 | grep -q 'finite number >= 0'"
# CAF's network encoding of an infinite double never ends, so an infinite
# weight must be rejected before it is sent.
check "infinite weight is rejected" bash -c \
  "timeout 20 '$ctl' --planner 127.0.0.1:$planner_port set-weights mail=inf 2>&1 | grep -q 'finite number >= 0'"
check "a source named twice is rejected" bash -c \
  "'$ctl' --planner 127.0.0.1:$planner_port set-weights mail=1 mail=2 2>&1 | grep -q \"source 'mail' is named twice\""
"$ctl" --planner "127.0.0.1:$planner_port" drain loader-2 >"$work/drain.out"
check "drain reports the node" grep -q "node loader-2 drained" "$work/drain.out"
check "unreachable planner is reported" bash -c \
  "'$ctl' --planner 127.0.0.1:$(free_ports 1) status 2>&1 | grep -q 'cannot reach the planner'"
cleanup
pids=()

# --- kill -9 of a loader node mid-run -----------------------------------
start_cluster kill_loader 2 2
"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps $steps --timeout 30 --step-ms 20 \
  >"$work/kill_loader.rank1" 2>"$work/kill_loader.rank1.err" &
p1=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps $steps --timeout 30 --step-ms 20 \
  >"$work/kill_loader.rank0" 2>"$work/kill_loader.rank0.err" &
p0=$!
for _ in $(seq 300); do
  [[ $(wc -l <"$work/kill_loader.rank0") -ge 40 ]] && break
  sleep 0.05
done
kill -9 "$kill_loader_loader_1"
status0=0
status1=0
wait "$p0" || status0=$?
wait "$p1" || status1=$?
check "trainers finish after a loader dies" test "$status0" -eq 0 -a "$status1" -eq 0
check "planner noticed the dead loader" \
  grep -q "node=loader-1 role=loader left the job" "$work/kill_loader.planner.log"
check "rank 0 stream unchanged by the loader death" \
  same_digests "$work/all.rank0" "$work/kill_loader.rank0"
check "rank 1 stream unchanged by the loader death" \
  same_digests "$work/all.rank1" "$work/kill_loader.rank1"
cleanup
pids=()

# --- kill -9 of a constructor node: trainers fail over to the shadow ----
start_cluster kill_primary 2 2
"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps $steps --timeout 30 --step-ms 20 \
  --failover-timeout 1 >"$work/kill_primary.rank1" 2>"$work/kill_primary.rank1.err" &
p1=$!
# Rank 0 pulls through the Python client, which looks the rank up again
# over a new planner connection when it fails over. The node killed below
# is the one that serves rank 0.
PYTHONPATH="$PWD/client/python" /usr/bin/python3 - "127.0.0.1:$planner_port" $steps \
  >"$work/kill_primary.rank0" 2>"$work/kill_primary.rank0.err" <<'PY' &
import json, sys, time
import overlord
client = overlord.Client(planner=sys.argv[1], rank=0, timeout=30, failover_timeout=1.0)
for _ in range(int(sys.argv[2])):
    batch = next(client)
    print(json.dumps({"step": batch["step"], "digest": batch["digest"]}), flush=True)
    time.sleep(0.02)
print(f"python client failovers: {client.failovers}", file=sys.stderr)
print(f"python client node: {client.node}", file=sys.stderr)
PY
p0=$!
for _ in $(seq 300); do
  [[ $(wc -l <"$work/kill_primary.rank0") -ge 40 ]] && break
  sleep 0.05
done
primary=$(node_serving_rank "$ctl" "$planner_port" 0)
case $primary in
  constructor-1) kill -9 "$kill_primary_constructor_1"; survivor=constructor-2 ;;
  constructor-2) kill -9 "$kill_primary_constructor_2"; survivor=constructor-1 ;;
  *) fail "rank 0 is served by '$primary', not by a constructor node" ;;
esac
status0=0
status1=0
wait "$p0" || status0=$?
wait "$p1" || status1=$?
check "trainers finish after a constructor dies" test "$status0" -eq 0 -a "$status1" -eq 0
check "rank 0 failed over to its shadow" \
  grep -q "python client failovers: [1-9]" "$work/kill_primary.rank0.err"
check "planner promoted the shadow" grep -q "promoted its shadow" "$work/kill_primary.planner.log"
check "python client names the shadow's node" \
  grep -q "python client node: $survivor\$" "$work/kill_primary.rank0.err"
check "rank 0 stream unchanged by the constructor death" \
  same_digests "$work/all.rank0" "$work/kill_primary.rank0"
check "rank 1 stream unchanged by the constructor death" \
  same_digests "$work/all.rank1" "$work/kill_primary.rank1"
cleanup
pids=()

# --- kill -9 of the only constructor node --------------------------------
start_cluster kill_constructor 1 1
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps 100000 --timeout 3 --step-ms 10 \
  >"$work/kill_constructor.rank0" 2>"$work/kill_constructor.rank0.err" &
p0=$!
for _ in $(seq 300); do
  [[ $(wc -l <"$work/kill_constructor.rank0") -ge 20 ]] && break
  sleep 0.05
done
killed_at=$(date +%s.%N)
kill -9 "$kill_constructor_constructor_1"
status0=0
wait "$p0" || status0=$?
elapsed=$(echo "$(date +%s.%N) - $killed_at" | bc -l)
check "trainer fails instead of hanging" test "$status0" -eq 1
check "error names rank and node" \
  grep -q "rank 0 at tcp://127.0.0.1:$base_port (node constructor-1) sent no batch" \
  "$work/kill_constructor.rank0.err"
check "error arrives within the timeout" test "$(echo "$elapsed < 6" | bc -l)" -eq 1

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] && rm -rf "$work"
[[ $failed -eq 0 ]]
