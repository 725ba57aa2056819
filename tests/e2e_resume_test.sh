#!/usr/bin/env bash
# Exact resume from differential checkpoints, with real processes:
#   - a chain of five kill -9 / --resume cycles gives the digests of one
#     uninterrupted run, on both ranks;
#   - kill -9 of the planner of a running cluster, restarted with
#     --resume --recover, loses and repeats nothing: the nodes keep serving
#     and re-register, and the trainers' digests equal the straight run's;
#   - a resume with another number of ranks (same global_rows) keeps the
#     global document stream: per step, the tokens and documents of each
#     source summed over all ranks are unchanged;
#   - a resume with a config that changes the stream is rejected with a
#     message naming the setting;
#   - a damaged snapshot is reported with its path;
#   - a fresh run into a used directory, a resume past the end of the log
#     and a resume from a missing directory are reported.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
ctl=tools/overlordctl
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-resume.XXXXXX")
write_demo_config "$work/job.yaml" "$data"
echo "checkpoint_every: 10" >>"$work/job.yaml"
passed=0
failed=0

# run_segment DIR FIRST COUNT [overlordd flags...]: serves steps
# FIRST..FIRST+COUNT-1 to both ranks, then kills the daemon with SIGKILL.
run_segment() {
  local dir=$1 first=$2 count=$3
  shift 3
  local port
  port=$(free_ports 2)
  "$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" \
    --set checkpoint_dir="$dir" "$@" 2>>"$dir.log" &
  local daemon=$!
  "$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --first-step "$first" \
    --steps "$count" --timeout 30 >>"$dir.rank1" &
  local other=$!
  local status=0
  "$pull" --endpoint "127.0.0.1:$port" --rank 0 --first-step "$first" \
    --steps "$count" --timeout 30 >>"$dir.rank0" || status=1
  wait "$other" || status=1
  kill -9 "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  return $status
}

run_segment "$work/straight" 0 80

# Resume points fall between snapshots (every 10 steps), so each resume
# replays a few steps from the snapshot before serving.
run_segment "$work/chain" 0 13
first=13
for count in 13 11 14 15 14; do
  run_segment "$work/chain" "$first" "$count" --resume "$work/chain" --from-step "$first" ||
    echo "segment from step $first failed" >&2
  first=$((first + count))
done

for rank in 0 1; do
  check "rank $rank digests equal after five resumes" \
    cmp -s <(digests_of "$work/straight.rank$rank") <(digests_of "$work/chain.rank$rank")
done
check "chain resumed from snapshots" grep -q "restored .*snapshot-" "$work/chain.log"
check "resumes inside the log do not warn" \
  bash -c "! grep -q 'past the end of the checkpoint' '$work/chain.log'"
check "a fresh run into a new directory does not warn" \
  bash -c "! grep -q 'already holds a checkpoint' '$work/straight.log'"

# Two set-weights commands between two planned steps take effect at the
# same step, each for the source it names. A resume from before that step
# replays both.
ports=$(free_ports 3)
"$overlordd" --role all --config "$work/job.yaml" --set base_port="$ports" \
  --set planner_port=$((ports + 2)) --set checkpoint_dir="$work/twice" \
  2>"$work/twice.log" &
daemon=$!
wait_for_planner "$work/twice.log" || echo "planner of the twice run did not start" >&2
"$ctl" --planner "127.0.0.1:$((ports + 2))" set-weights mail=1 >"$work/twice.set1"
"$ctl" --planner "127.0.0.1:$((ports + 2))" set-weights moby=7 >"$work/twice.set2"
"$pull" --endpoint "127.0.0.1:$((ports + 1))" --rank 1 --steps 30 --timeout 30 \
  >"$work/twice.rank1" &
other=$!
"$pull" --endpoint "127.0.0.1:$ports" --rank 0 --steps 30 --timeout 30 >"$work/twice.rank0" || true
wait "$other" || true
kill -9 "$daemon" 2>/dev/null || true
wait "$daemon" 2>/dev/null || true
check "both changes take effect at one step" \
  test "$(cat "$work/twice.set1")" = "$(cat "$work/twice.set2")"
# Step 8 lies between the snapshots of steps 0 and 10, so the resume
# replays the logged changes instead of reading them from a snapshot.
run_segment "$work/twice" 8 5 --resume "$work/twice" --from-step 8 ||
  echo "resume after two changes at one step failed" >&2
# Each rank's file contains steps 0 to 29 of the first run, then steps 8 to
# 12 of the resumed one.
for rank in 0 1; do
  check "rank $rank received 35 batches over both runs" \
    test "$(wc -l <"$work/twice.rank$rank")" -eq 35
  check "rank $rank digests equal after two changes at one step" \
    cmp -s <(digests_of "$work/twice.rank$rank" | sed -n '9,13p') \
    <(digests_of "$work/twice.rank$rank" | sed -n '31,35p')
done
check "the resume replays both changes" \
  grep -q "weights changed from step=[0-9]*: mail=1.000000 moby=7.000000" "$work/twice.log"

# A fresh run into a directory that contains a checkpoint warns, and so does
# a resume past the end of the log; both still serve.
run_segment "$work/reused" 0 12 || echo "first run into reused failed" >&2
run_segment "$work/reused" 0 2 || echo "second run into reused failed" >&2
check "a fresh run into a used directory warns" \
  grep -q "already holds a checkpoint (newest snapshot at step 10)" "$work/reused.log"
run_segment "$work/chain" 150 2 --resume "$work/chain" --from-step 150 ||
  echo "resume past the log failed" >&2
check "a resume past the log warns" \
  grep -q "resume at step=150 is past the end of the checkpoint's log" "$work/chain.log"
check "a resume past the log serves its steps" \
  test "$(grep -c '"step":15[01],' "$work/chain.rank0")" -eq 2

# A resume from a directory that does not exist names it.
status=0
"$overlordd" --role all --config "$work/job.yaml" --resume "$work/missing" \
  2>"$work/missing.err" || status=$?
check "missing checkpoint directory exits 2" test "$status" -eq 2
check "missing checkpoint directory is named" \
  grep -q "$work/missing: no such checkpoint directory" "$work/missing.err"
check "missing checkpoint directory is not created" test ! -e "$work/missing"

# A cluster whose planner dies mid-run and comes back with --recover.
planner_port=$(free_ports 1)
base_port=$(free_ports 2)
cluster=(--config "$work/job.yaml" --set base_port="$base_port"
  --set planner_port="$planner_port" --set checkpoint_dir="$work/cluster")
"$overlordd" --role planner "${cluster[@]}" 2>"$work/cluster.planner1.log" &
planner=$!
for _ in $(seq 100); do
  grep -q "planner listening" "$work/cluster.planner1.log" && break
  sleep 0.1
done
"$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id loader-1 \
  2>"$work/cluster.loader.log" &
loader=$!
"$overlordd" --role constructor --planner "127.0.0.1:$planner_port" --node-id constructor-1 \
  2>"$work/cluster.constructor.log" &
constructor=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps 80 --step-ms 20 --timeout 60 \
  >"$work/cluster.rank1" 2>"$work/cluster.rank1.err" &
p1=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps 80 --step-ms 20 --timeout 60 \
  >"$work/cluster.rank0" 2>"$work/cluster.rank0.err" &
p0=$!
for _ in $(seq 300); do
  [[ $(wc -l <"$work/cluster.rank0") -ge 30 ]] && break
  sleep 0.05
done
kill -9 "$planner"
wait "$planner" 2>/dev/null || true
"$overlordd" --role planner "${cluster[@]}" --resume "$work/cluster" --recover \
  2>"$work/cluster.planner2.log" &
planner=$!
status=0
wait "$p0" || status=1
wait "$p1" || status=1
kill -TERM "$planner" "$loader" "$constructor" 2>/dev/null || true
wait 2>/dev/null || true
check "trainers finish across a planner restart" test "$status" -eq 0
check "restarted planner adopted the constructors" \
  grep -q "recovered: 2 constructors adopted" "$work/cluster.planner2.log"
for rank in 0 1; do
  check "rank $rank digests equal across a planner restart" \
    cmp -s <(digests_of "$work/straight.rank$rank") <(digests_of "$work/cluster.rank$rank")
done

# Another data-parallel size: 2 ranks for steps 0..29, then 4 ranks from
# step 20 on, with the same 8 global rows.
sed -e 's/^rows_per_rank: 4/global_rows: 8/' "$work/job.yaml" >"$work/global.yaml"
elastic_run() {
  local dir=$1 ranks=$2 first=$3 count=$4
  shift 4
  local port
  port=$(free_ports "$ranks")
  "$overlordd" --role all --config "$work/global.yaml" --set base_port="$port" \
    --set ranks="$ranks" --set checkpoint_dir="$dir" "$@" 2>>"$dir.log" &
  local daemon=$!
  local pulls=()
  for ((rank = 0; rank < ranks; rank++)); do
    "$pull" --endpoint "127.0.0.1:$((port + rank))" --rank "$rank" --first-step "$first" \
      --steps "$count" --timeout 30 >"$dir.ranks$ranks.rank$rank" &
    pulls+=($!)
  done
  local status=0
  for pid in "${pulls[@]}"; do wait "$pid" || status=1; done
  kill -9 "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  return $status
}
elastic_run "$work/elastic" 2 0 30 || echo "2-rank run failed" >&2
elastic_run "$work/elastic" 4 20 10 --resume "$work/elastic" --from-step 20 ||
  echo "4-rank resume failed" >&2
check "resume with 4 ranks keeps the global stream" /usr/bin/python3 - "$work/elastic" <<'PY'
import glob, json, sys
from collections import defaultdict
def totals(pattern):
    per_step = defaultdict(lambda: defaultdict(int))
    for path in glob.glob(pattern):
        for line in open(path):
            r = json.loads(line)
            for name, n in r["source_tokens"].items():
                per_step[r["step"]]["tokens:" + name] += n
            for name, n in r["sources"].items():
                per_step[r["step"]]["documents:" + name] += n
    return per_step
two = totals(sys.argv[1] + ".ranks2.rank*")
four = totals(sys.argv[1] + ".ranks4.rank*")
assert sorted(four) == list(range(20, 30)), sorted(four)
for step in range(20, 30):
    assert dict(two[step]) == dict(four[step]), (step, dict(two[step]), dict(four[step]))
PY

# A resume whose config changes the stream is rejected.
status=0
"$overlordd" --role all --config "$work/job.yaml" --set sequence_length=256 \
  --resume "$work/chain" --from-step 75 2>"$work/changed.err" || status=$?
check "changed config exits 2" test "$status" -eq 2
check "changed config names the setting" \
  grep -q "sequence_length was 512 when the checkpoint was written and is 256 now" \
  "$work/changed.err"

# A damaged snapshot is reported with its path.
snapshot=$(ls "$work/chain"/snapshot-*.ovck | tail -n 1)
/usr/bin/python3 - "$snapshot" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
data[len(data) // 2] ^= 0x40
open(path, "wb").write(bytes(data))
PY
status=0
"$overlordd" --role all --config "$work/job.yaml" --resume "$work/chain" \
  2>"$work/corrupt.err" || status=$?
check "damaged snapshot is rejected" test "$status" -ne 0
check "damaged snapshot is named" grep -q "$(basename "$snapshot").*checksum mismatch" "$work/corrupt.err"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] && rm -rf "$work"
[[ $failed -eq 0 ]]
