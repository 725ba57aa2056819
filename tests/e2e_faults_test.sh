#!/usr/bin/env bash
# Fault injection on a cluster of separate processes on loopback: a
# planner, two loader nodes and two constructor nodes, with checkpoints.
# A bounded loop runs over the victim (a loader node, a constructor node,
# the planner) and the step after which it is killed with kill -9, while
# both trainers pull 200 steps through the planner. Each run must finish within its timeout
# and give the digests of one uninterrupted --role all run. A killed
# planner is restarted with --resume --recover; nothing else is cleaned up
# by hand between runs.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-faults.XXXXXX")
write_demo_config "$work/job.yaml" "$data"
echo "checkpoint_every: 20" >>"$work/job.yaml"
steps=200
passed=0
failed=0
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT

# Reference: one uninterrupted process.
port=$(free_ports 2)
"$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" 2>"$work/reference.log" &
pids+=($!)
"$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps $steps >"$work/reference.rank1" &
p1=$!
"$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps $steps >"$work/reference.rank0"
wait "$p1"
cleanup

for victim in loader constructor planner; do
  for kill_after in 40 140; do
    name="$victim-$kill_after"
    base_port=$(free_ports 2)
    planner_port=$(free_ports 1)
    cluster=(--config "$work/job.yaml" --set base_port="$base_port"
      --set planner_port="$planner_port" --set loader_nodes=2 --set constructor_nodes=2
      --set checkpoint_dir="$work/$name.checkpoint")
    "$overlordd" --role planner "${cluster[@]}" 2>"$work/$name.planner.log" &
    planner=$!
    pids+=($planner)
    for _ in $(seq 100); do
      grep -q "planner listening" "$work/$name.planner.log" && break
      sleep 0.1
    done
    declare -A node_pid=()
    for node in loader-1 loader-2 constructor-1 constructor-2; do
      "$overlordd" --role "${node%-*}" --planner "127.0.0.1:$planner_port" --node-id "$node" \
        2>"$work/$name.$node.log" &
      node_pid[$node]=$!
      pids+=($!)
    done

    started=$(date +%s)
    "$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps $steps --step-ms 10 \
      --failover-timeout 1 --timeout 30 >"$work/$name.rank1" 2>"$work/$name.rank1.err" &
    p1=$!
    "$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps $steps --step-ms 10 \
      --failover-timeout 1 --timeout 30 >"$work/$name.rank0" 2>"$work/$name.rank0.err" &
    p0=$!
    for _ in $(seq 600); do
      [[ $(wc -l <"$work/$name.rank0") -ge $kill_after ]] && break
      sleep 0.05
    done

    case $victim in
      loader) kill -9 "${node_pid[loader-1]}" ;;
      constructor) kill -9 "${node_pid[constructor-1]}" ;;
      planner)
        kill -9 "$planner"
        wait "$planner" 2>/dev/null || true
        "$overlordd" --role planner "${cluster[@]}" --resume "$work/$name.checkpoint" \
          --recover 2>"$work/$name.planner2.log" &
        pids+=($!)
        ;;
    esac

    status=0
    wait "$p0" || status=1
    wait "$p1" || status=1
    elapsed=$(($(date +%s) - started))
    check "$name: trainers finish" test "$status" -eq 0
    if [[ $status -ne 0 ]]; then
      echo "rank 0 received $(wc -l <"$work/$name.rank0") steps," \
        "rank 1 $(wc -l <"$work/$name.rank1")" >&2
      for log in "$work/$name".*.log "$work/$name".rank*.err; do
        echo "--- $log" >&2
        tail -n 15 "$log" >&2
      done
    fi
    check "$name: no wait past the timeout ($elapsed s)" test "$elapsed" -lt 60
    for rank in 0 1; do
      check "$name: rank $rank digests unchanged" \
        cmp -s <(digests_of "$work/reference.rank$rank") <(digests_of "$work/$name.rank$rank")
    done
    cleanup
    unset node_pid
  done
done

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] && rm -rf "$work"
[[ $failed -eq 0 ]]
