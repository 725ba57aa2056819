#!/usr/bin/env bash
# Multi-host runs on one machine: every node gets its own network namespace
# with its own address on 10.213.0.0/24, joined through a bridge that sits
# in a namespace of its own, so the test changes nothing in the host's
# network. A planner, two loader nodes and two constructor nodes are
# started the way deploy/slurm/overlord-node starts them on a cluster
# (binding eth0's address), and two trainers pull from a fifth namespace.
# Checks that
#   - with TLS and CURVE from OVERLORD_TLS_DIR (made by scripts/gen-certs,
#     no subjectAltName for the namespace addresses), loader-1 is cut off
#     the network mid-run (its bridge port taken down). The trainers
#     finish, both ranks' digests equal those of one --role all process,
#     and loader-2 keeps its link. Unlike kill -9, a cut closes no TCP
#     connection and the process keeps running, so only missing heartbeats
#     reveal the loss;
#   - after kill -9 of the planner mid-run, starting it again with the same
#     command recovers the job from its checkpoints (overlord-planner-start
#     adds --resume --recover), and the digests are again unchanged; this
#     run passes --insecure and so covers the plain transport;
#   - nodes listen on their namespace addresses, not on loopback;
#   - overlord-node refuses to start without OVERLORD_TLS_DIR or --insecure.
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
gen_certs=$PWD/scripts/gen-certs
node_script=$PWD/deploy/slurm/overlord-node
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-netns.XXXXXX")

# overlord-node finds overlordd and overlord-planner-start in OVERLORD_BIN.
mkdir "$work/bin"
ln -s "$overlordd" "$work/bin/overlordd"
ln -s "$PWD/deploy/bin/overlord-planner-start" "$work/bin/overlord-planner-start"

# Namespace names are global on the host, so they carry this shell's pid
# and a random number. Interface names only need to be unique inside the
# test's own namespaces.
tag="ovl$$-$RANDOM"
switch_ns="$tag-switch"
namespaces=()
pids=()
passed=0
failed=0

# Stops every process this test started, SIGTERM first so that `timeout`
# passes it on to the client it runs.
stop_processes() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.2
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

cleanup() {
  local ns
  stop_processes
  # Deleting a namespace deletes the veth ends inside it and so their peers.
  for ns in "${namespaces[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
# Bazel stops a test that runs out of time with SIGTERM; exiting on it runs
# the EXIT trap, so no namespace outlives the test.
trap 'exit 143' TERM
trap 'exit 130' INT

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

# Waits up to 60 s until file $2 has at least $1 lines.
wait_for_lines() {
  local count=$1 file=$2
  for _ in $(seq 600); do
    [[ $(wc -l <"$file") -ge $count ]] && return 0
    sleep 0.1
  done
  return 1
}

# --- Network: one namespace per host, all on one bridge -----------------
# Namespaces of earlier runs whose shell was killed outright (SIGKILL runs
# no trap) are named ovlPID-...; delete those whose PID is gone.
for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
  if [[ $ns =~ ^ovl([0-9]+)-[0-9]+- ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then
    ip netns delete "$ns" 2>/dev/null || true
  fi
done

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

# Credentials of the current run: with tls_dir empty, nodes get --insecure,
# else overlord-node reads them from OVERLORD_TLS_DIR. Trainers add
# trainer_security to their flags.
tls_dir=""
trainer_security=()

# Starts an Overlord process with deploy/slurm/overlord-node on host $2,
# for run $1, with role $3; further arguments go to overlordd.
spawn_node() {
  local run=$1 host=$2 role=$3
  local insecure=(--insecure)
  shift 3
  [[ -z $tls_dir ]] || insecure=()
  spawn "$host" env OVERLORD_BIN="$work/bin" OVERLORD_IFACE=eth0 OVERLORD_NODE_ID="$host" \
    OVERLORD_PLANNER="$planner_ip:7070" OVERLORD_JOB="$work/job.yaml" \
    OVERLORD_STATE="$work/$run.state" OVERLORD_TLS_DIR="$tls_dir" \
    "$node_script" "$role" ${insecure[@]+"${insecure[@]}"} "$@" 2>>"$work/$run.$host.log"
}

# Succeeds when overlord-node, given neither OVERLORD_TLS_DIR nor
# --insecure, exits with status 2 and names OVERLORD_TLS_DIR.
node_needs_credentials() {
  local status=0
  ip netns exec "$tag-loader-1" env OVERLORD_BIN="$work/bin" OVERLORD_IFACE=eth0 \
    OVERLORD_PLANNER="$planner_ip:7070" timeout 30 "$node_script" loader \
    2>"$work/no-credentials.log" || status=$?
  [[ $status -eq 2 ]] && grep -q "set OVERLORD_TLS_DIR" "$work/no-credentials.log"
}

# The planner of run $1. A short node_timeout_ms makes it give up on a cut
# loader after 2 s of missing heartbeats instead of the default 5 s.
spawn_planner() {
  spawn_node "$1" planner planner --set planner_port=7070 --set base_port=5555 \
    --set loader_nodes=2 --set constructor_nodes=2 --set node_timeout_ms=2000
}

# Starts the planner and four nodes of run $1.
start_cluster() {
  local run=$1 host
  # overlord-node and overlord-planner-start exec overlordd, so $! is the
  # daemon's pid.
  spawn_planner "$run"
  eval "${run}_planner=$!"
  wait_for_line 100 "planner listening" "$work/$run.planner.log" ||
    fail "planner did not start; see $work/$run.planner.log"
  for host in loader-1 loader-2; do
    spawn_node "$run" "$host" loader
    eval "${run}_${host/-/_}=$!"
  done
  for host in constructor-1 constructor-2; do
    spawn_node "$run" "$host" constructor
  done
}

# Starts both trainers of run $1 against the planner; sets p0 and p1.
start_trainers() {
  local run=$1
  spawn trainer timeout 240 "$pull" --planner "$planner_ip:7070" --rank 1 --steps $steps \
    --timeout 60 --step-ms 20 ${trainer_security[@]+"${trainer_security[@]}"} \
    >"$work/$run.rank1" 2>"$work/$run.rank1.err"
  p1=$!
  spawn trainer timeout 240 "$pull" --planner "$planner_ip:7070" --rank 0 --steps $steps \
    --timeout 60 --step-ms 20 ${trainer_security[@]+"${trainer_security[@]}"} \
    >"$work/$run.rank0" 2>"$work/$run.rank0.err"
  p0=$!
}

# Succeeds when GET http://$1/healthz from the trainer's namespace returns
# 200, as a Kubernetes readiness probe would see it.
healthz_ok() {
  ip netns exec "$tag-trainer" /usr/bin/python3 -c '
import sys, urllib.request
with urllib.request.urlopen("http://" + sys.argv[1] + "/healthz", timeout=5) as reply:
    sys.exit(0 if reply.status == 200 else 1)
' "$1"
}

# Waits for both trainers; sets status0 and status1.
wait_trainers() {
  status0=0
  status1=0
  wait "$p0" || status0=$?
  wait "$p1" || status1=$?
}

write_demo_config "$work/job.yaml" "$data"
# At 20 ms per step, a run goes on for more than twice the node timeout
# after its failure.
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

# --- Run 1: TLS and CURVE, loader-1 cut off the network mid-run -----------
check "overlord-node rejects missing credentials" node_needs_credentials
"$gen_certs" "$work/tls" >/dev/null
tls_dir=$work/tls
trainer_security=(--tls-cert "$tls_dir/client.pem" --tls-key "$tls_dir/client-key.pem"
  --tls-ca "$tls_dir/ca.pem" --curve-secret "$tls_dir/client.curve-secret"
  --curve-server-public "$tls_dir/node.curve-public")
start_cluster cut
start_trainers cut
check "cut: rank 0 reached step 40 first" wait_for_lines 40 "$work/cut.rank0"
ip -n "$switch_ns" link set p-loader-1 down
wait_trainers

check "cut: trainers finish" test "$status0" -eq 0 -a "$status1" -eq 0
check "cut: loader-1 still runs behind the cut" kill -0 "$cut_loader_1"
check "cut: planner took loader-1 as lost" \
  grep -q "node=loader-1 role=loader left the job" "$work/cut.planner.log"
check "cut: loader-2 stayed in the job" \
  bash -c "! grep -q 'node=loader-2 role=loader left the job' '$work/cut.planner.log'"
check "cut: constructors kept their planner links" \
  bash -c "! grep -q 'lost the planner' '$work/cut.constructor-1.log' '$work/cut.constructor-2.log'"
check "cut: planner listened on its address" \
  grep -q "planner listening on $planner_ip:7070" "$work/cut.planner.log"
check "cut: loader-1 served payloads on its address" \
  grep -q "serves payloads at tcp://10.213.0.11:7072" "$work/cut.loader-1.log"
check "cut: constructors fetched from loaders directly" \
  grep -q "connected directly to node at 10.213.0.1[12]:7071" \
  "$work/cut.constructor-1.log" "$work/cut.constructor-2.log"
check "cut: constructors served on their addresses" \
  grep -qE "serving at tcp://10\.213\.0\.2[12]:5555" \
  "$work/cut.constructor-1.log" "$work/cut.constructor-2.log"
check "cut: rank 0 received every step" test "$(wc -l <"$work/cut.rank0")" -eq $steps
check "cut: rank 1 received every step" test "$(wc -l <"$work/cut.rank1")" -eq $steps
check "cut: rank 0 stream unchanged" same_digests "$work/all.rank0" "$work/cut.rank0"
check "cut: rank 1 stream unchanged" same_digests "$work/all.rank1" "$work/cut.rank1"
check "cut: planner /healthz returns 200" healthz_ok "$planner_ip:9400"
check "cut: loader-2 /healthz returns 200" healthz_ok 10.213.0.12:9401
check "cut: constructor-1 /healthz returns 200" healthz_ok 10.213.0.21:9402

stop_processes
ip -n "$switch_ns" link set p-loader-1 up
tls_dir=""
trainer_security=()

# --- Run 2: planner killed mid-run and started again ----------------------
start_cluster restart
start_trainers restart
check "restart: rank 0 reached step 40 first" wait_for_lines 40 "$work/restart.rank0"
kill -9 "$restart_planner"
wait "$restart_planner" 2>/dev/null || true
spawn_planner restart
wait_trainers

check "restart: trainers finish" test "$status0" -eq 0 -a "$status1" -eq 0
check "restart: second start recovered" \
  grep -q "holds a snapshot; recovering the running job" "$work/restart.planner.log"
check "restart: planner adopted the constructors" \
  grep -q "recovered: .* constructors adopted" "$work/restart.planner.log"
check "restart: rank 0 received every step" test "$(wc -l <"$work/restart.rank0")" -eq $steps
check "restart: rank 1 received every step" test "$(wc -l <"$work/restart.rank1")" -eq $steps
check "restart: rank 0 stream unchanged" same_digests "$work/all.rank0" "$work/restart.rank0"
check "restart: rank 1 stream unchanged" same_digests "$work/all.rank1" "$work/restart.rank1"

stop_processes

echo "$passed passed, $failed failed"
if [[ $failed -ne 0 ]]; then
  echo "logs kept in $work" >&2
  exit 1
fi
rm -rf "$work"
