#!/usr/bin/env bash
# Multi-host run on one machine: every node gets its own network namespace
# with its own address on 10.213.0.0/24, joined through a bridge that sits
# in a namespace of its own, so the test changes nothing in the host's
# network. A planner, two loader nodes and two constructor nodes listen on
# those addresses (with --insecure, since nothing here uses TLS), and two
# trainers pull from a fifth namespace. Mid-run, loader-1 is cut off the
# network by taking its bridge port down: unlike kill -9, the process keeps
# running and no TCP connection closes, so only the missing heartbeats
# reveal the loss. Checks that
#   - the trainers finish, and both ranks' digests equal those of one
#     --role all process (the uncut reference);
#   - the planner took loader-1 as lost while its process still ran;
#   - nodes talked over the namespace addresses, not loopback.
# Needs root and `ip netns`; prints SKIPPED and passes without them.
set -euo pipefail
source tests/e2e_lib.sh

skip() {
  echo "SKIPPED: $*"
  exit 0
}

[[ $(id -u) -eq 0 ]] || skip "needs root to create network namespaces"
command -v ip >/dev/null 2>&1 || skip "the ip command (iproute2) is missing"

overlordd=$PWD/actors/overlordd
pull=$PWD/tools/overlord_pull
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-netns.XXXXXX")

# Namespace names are global on the host, so they carry this shell's pid
# and a random number. Interface names only need to be unique inside the
# test's own namespaces.
tag="ovl$$-$RANDOM"
switch_ns="$tag-switch"
namespaces=()
pids=()
passed=0
failed=0

cleanup() {
  local pid ns
  # SIGTERM first, so that `timeout` passes it on to the client it runs.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.2
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Deleting a namespace deletes the veth ends inside it and so their peers.
  for ns in "${namespaces[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

check() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name" >&2
    failed=$((failed + 1))
  fi
}

same_digests() {
  cmp -s <(digests_of "$1") <(digests_of "$2")
}

# Waits up to $1 tenths of a second for a file to contain a pattern.
wait_for_line() {
  local tenths=$1 pattern=$2 file=$3
  for _ in $(seq "$tenths"); do
    grep -q "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file" >&2
  return 1
}

# --- Network: one namespace per host, all on one bridge -----------------
ip netns add "$switch_ns" 2>/dev/null ||
  skip "cannot create a network namespace ('ip netns add' failed)"
namespaces+=("$switch_ns")
ip -n "$switch_ns" link add br0 type bridge
ip -n "$switch_ns" link set br0 up

# Creates namespace $tag-NAME with eth0 at ADDRESS/24, plugged into the
# bridge through port p-NAME.
add_host() {
  local name=$1 address=$2
  local ns="$tag-$name"
  ip netns add "$ns"
  namespaces+=("$ns")
  ip -n "$switch_ns" link add "p-$name" type veth peer name eth0 netns "$ns"
  ip -n "$switch_ns" link set "p-$name" master br0 up
  ip -n "$ns" addr add "$address/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

planner_ip=10.213.0.1
add_host planner "$planner_ip"
add_host loader-1 10.213.0.11
add_host loader-2 10.213.0.12
add_host constructor-1 10.213.0.21
add_host constructor-2 10.213.0.22
add_host trainer 10.213.0.100

# Starts a command in the background in the namespace of host $1 and
# records its pid, which is also in $! afterwards. `ip netns exec` execs
# the command, so that pid is the command's own.
spawn() {
  local ns="$tag-$1"
  shift
  ip netns exec "$ns" "$@" &
  pids+=($!)
}

write_demo_config "$work/job.yaml" "$data"
# At 20 ms per step, the run goes on for more than twice the node timeout
# after the cut.
steps=300

# --- Reference: one --role all process on the trainer's loopback ---------
spawn trainer "$overlordd" --role all --config "$work/job.yaml" 2>"$work/all.log"
all=$!
spawn trainer timeout 240 "$pull" --endpoint 127.0.0.1:5556 --rank 1 --steps $steps \
  --timeout 60 >"$work/all.rank1"
p1=$!
spawn trainer timeout 240 "$pull" --endpoint 127.0.0.1:5555 --rank 0 --steps $steps \
  --timeout 60 >"$work/all.rank0"
p0=$!
wait "$p0" || fail "reference run failed for rank 0; see $work/all.log"
wait "$p1" || fail "reference run failed for rank 1; see $work/all.log"
kill -TERM "$all"
wait "$all" || true

# --- Cluster: planner, 2 loaders, 2 constructors on their own hosts ------
# A short node_timeout_ms makes the planner give up on the cut loader after
# 2 s of missing heartbeats instead of the default 5 s.
spawn planner "$overlordd" --role planner --config "$work/job.yaml" --insecure \
  --set bind="$planner_ip" --set planner_port=7070 --set base_port=5555 \
  --set loader_nodes=2 --set constructor_nodes=2 --set node_timeout_ms=2000 \
  2>"$work/planner.log"
wait_for_line 100 "planner listening" "$work/planner.log" || fail "planner did not start"

declare -A node_pid
for node in loader-1:10.213.0.11 loader-2:10.213.0.12; do
  name=${node%%:*}
  spawn "$name" "$overlordd" --role loader --planner "$planner_ip:7070" --insecure \
    --bind "${node#*:}" --port 7071 --payload-port 7072 --node-id "$name" \
    2>"$work/$name.log"
  node_pid[$name]=$!
done
for node in constructor-1:10.213.0.21 constructor-2:10.213.0.22; do
  name=${node%%:*}
  spawn "$name" "$overlordd" --role constructor --planner "$planner_ip:7070" --insecure \
    --bind "${node#*:}" --port 7073 --node-id "$name" 2>"$work/$name.log"
  node_pid[$name]=$!
done

spawn trainer timeout 240 "$pull" --planner "$planner_ip:7070" --rank 1 --steps $steps \
  --timeout 60 --step-ms 20 >"$work/cut.rank1" 2>"$work/cut.rank1.err"
p1=$!
spawn trainer timeout 240 "$pull" --planner "$planner_ip:7070" --rank 0 --steps $steps \
  --timeout 60 --step-ms 20 >"$work/cut.rank0" 2>"$work/cut.rank0.err"
p0=$!

# Cut loader-1 off once rank 0 has received 40 batches.
for _ in $(seq 600); do
  [[ $(wc -l <"$work/cut.rank0") -ge 40 ]] && break
  sleep 0.1
done
check "rank 0 reached step 40 before the cut" test "$(wc -l <"$work/cut.rank0")" -ge 40
ip -n "$switch_ns" link set p-loader-1 down
status0=0
status1=0
wait "$p0" || status0=$?
wait "$p1" || status1=$?

check "trainers finish after a loader is cut off" test "$status0" -eq 0 -a "$status1" -eq 0
check "loader-1 still runs behind the cut" kill -0 "${node_pid[loader-1]}"
check "planner took the cut loader as lost" \
  grep -q "node=loader-1 role=loader left the job" "$work/planner.log"
check "loader-2 stayed in the job" \
  bash -c "! grep -q 'node=loader-2 role=loader left the job' '$work/planner.log'"
check "loader-1 served payloads on its own address" \
  grep -q "serves payloads at tcp://10.213.0.11:7072" "$work/loader-1.log"
check "constructors fetched from loaders directly" \
  grep -q "connected directly to node at 10.213.0.1[12]:7071" \
  "$work/constructor-1.log" "$work/constructor-2.log"
check "constructors served on their own addresses" \
  grep -qE "serving at tcp://10\.213\.0\.2[12]:5555" \
  "$work/constructor-1.log" "$work/constructor-2.log"
check "rank 0 received every step" test "$(wc -l <"$work/cut.rank0")" -eq $steps
check "rank 1 received every step" test "$(wc -l <"$work/cut.rank1")" -eq $steps
check "rank 0 stream unchanged by the cut" same_digests "$work/all.rank0" "$work/cut.rank0"
check "rank 1 stream unchanged by the cut" same_digests "$work/all.rank1" "$work/cut.rank1"

echo "$passed passed, $failed failed"
if [[ $failed -ne 0 ]]; then
  echo "logs kept in $work" >&2
  exit 1
fi
rm -rf "$work"
