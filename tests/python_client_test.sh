#!/usr/bin/env bash
# The Python client (client/python) against real overlordd processes:
#   1. reference: overlord_pull pulls 20 steps of both ranks;
#   2. stream: a new job of the same config is read by tests/python/client_test.py,
#      which compares digests with step 1 and checks arrays, errors and state;
#   3. resume: the job of 2 restarted with --resume at the step saved in 2,
#      where new clients continue from the saved state.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
python=/usr/bin/python3
export PYTHONPATH="$PWD/client/python"
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/python-client.XXXXXX")
write_demo_config "$work/job.yaml" "$data"
steps=20

daemon=
stop_daemon() {
  if [[ -n "$daemon" ]] && kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon"
    wait "$daemon" || true
  fi
  daemon=
}
trap stop_daemon EXIT

# Starts overlordd --role all on the job with extra flags; sets $daemon.
start_daemon() {
  local name=$1
  shift
  "$overlordd" --role all --config "$work/job.yaml" "$@" 2>"$work/$name.log" &
  daemon=$!
}

# Each job reserves base_port .. base_port + 3 for its 2 ranks and their
# shadow constructors.

# 1. Reference digests from the C++ tool.
port=$(free_ports 4)
start_daemon reference --set base_port="$port"
status=0
timeout 60 "$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps $steps --timeout 60 \
  >"$work/reference.rank0.jsonl" &
pull0=$!
timeout 60 "$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps $steps --timeout 60 \
  >"$work/reference.rank1.jsonl" || status=1
wait "$pull0" || status=1
stop_daemon
if [[ $status -ne 0 ]]; then
  cat "$work/reference.log" >&2
  fail "overlord_pull failed on the reference job"
fi

# 2. The Python client on a new job; rank 1 finds its endpoint via the planner.
port=$(free_ports 5)
planner_port=$((port + 4))
idle_port=$(free_ports 1)
start_daemon stream --set base_port="$port" --set planner_port="$planner_port" \
  --set checkpoint_dir="$work/checkpoints"
stream_status=0
timeout 150 "$python" tests/python/client_test.py stream \
  --base-port "$port" --planner "127.0.0.1:$planner_port" --free-port "$idle_port" \
  --reference-rank0 "$work/reference.rank0.jsonl" \
  --reference-rank1 "$work/reference.rank1.jsonl" \
  --state-file "$work/state.json" | tee "$work/stream.out" || stream_status=$?
stop_daemon
if [[ $stream_status -ne 0 ]]; then
  echo "stream run exited with $stream_status; daemon log:" >&2
  tail -n 20 "$work/stream.log" >&2
fi

# 3. Restart the job from its checkpoints at the saved step.
resume_status=0
if [[ -f "$work/state.json" ]]; then
  from_step=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["next_step"])' \
    "$work/state.json")
  port=$(free_ports 4)
  start_daemon resume --set base_port="$port" --resume "$work/checkpoints" --from-step "$from_step"
  timeout 90 "$python" tests/python/client_test.py resume \
    --base-port "$port" --reference-rank0 "$work/reference.rank0.jsonl" \
    --reference-rank1 "$work/reference.rank1.jsonl" --state-file "$work/state.json" | tee "$work/resume.out" || resume_status=$?
  stop_daemon
  if [[ $resume_status -ne 0 ]]; then
    echo "resume run exited with $resume_status; daemon log:" >&2
    tail -n 20 "$work/resume.log" >&2
  fi
else
  echo "FAIL resume: the stream run saved no state" >&2
fi

# Add up the "N passed, M failed" lines of both runs.
read -r passed failed < <(
  cat "$work"/stream.out "$work"/resume.out 2>/dev/null |
    awk '/^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 } END { print p + 0, f + 0 }')
for run_status in "$stream_status" "$resume_status"; do
  # A run that crashed before its summary line counts as one failure.
  if [[ $run_status -ne 0 && $failed -eq 0 ]]; then
    failed=1
  fi
done
[[ -f "$work/state.json" ]] || failed=$((failed + 1))
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] && rm -rf "$work"
[[ $failed -eq 0 ]]
