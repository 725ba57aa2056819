#!/usr/bin/env bash
# Exact resume from differential checkpoints, with real processes:
#   - a chain of five kill -9 / --resume cycles gives the digests of one
#     uninterrupted run, on both ranks;
#   - a resume with a config that changes the stream is rejected with a
#     message naming the setting;
#   - a damaged snapshot is reported with its path.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-resume.XXXXXX")
write_demo_config "$work/job.yaml" "$data"
echo "checkpoint_every: 10" >>"$work/job.yaml"
passed=0
failed=0

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
