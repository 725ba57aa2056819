#!/usr/bin/env bash
# Starts overlordd with 1 and with 4 workers per source, pulls 50 steps on
# both ranks each time, and checks that the digests are identical across
# runs and worker counts, and that the daemon shuts down cleanly. In the
# run with 4 workers, each constructor also keeps its first batch back
# until 3 steps are built (startup_prefetch_steps), which must not change
# the stream.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e.XXXXXX")
write_demo_config "$work/job.yaml" "$data"
steps=50

run_job() {
  local name=$1
  shift
  local port
  port=$(free_ports 2)
  # The trainers start before the daemon, as a job's trainers may, and
  # connect once the constructors bind their ports.
  local status=0
  "$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps $steps --timeout 60 \
    >"$work/$name.rank0.jsonl" &
  local pull0=$!
  "$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps $steps --timeout 60 \
    >"$work/$name.rank1.jsonl" &
  local pull1=$!
  "$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" "$@" \
    2>"$work/$name.log" &
  local daemon=$!
  wait "$pull0" || status=1
  wait "$pull1" || status=1
  kill -TERM "$daemon"
  local daemon_status=0
  wait "$daemon" || daemon_status=$?
  if [[ $status -ne 0 ]]; then
    cat "$work/$name.log" >&2
    fail "$name: overlord_pull failed"
  fi
  [[ $daemon_status -eq 0 ]] || fail "$name: overlordd exited with $daemon_status after SIGTERM"
  grep -q "node stopped" "$work/$name.log" || fail "$name: no clean shutdown in the log"
  for rank in 0 1; do
    digests_of "$work/$name.rank$rank.jsonl" >"$work/$name.rank$rank.digests"
    [[ $(wc -l <"$work/$name.rank$rank.digests") -eq $steps ]] ||
      fail "$name: rank $rank received $(wc -l <"$work/$name.rank$rank.digests") of $steps batches"
  done
}

run_job one_worker
run_job four_workers --set sources.mail.workers=4 --set sources.sotu.workers=4 \
  --set sources.moby.workers=4 --set startup_prefetch_steps=3 --log-level debug
run_job one_worker_again

passed=0
failed=0

# With startup_prefetch_steps, a constructor releases its first batch only
# once it has built steps 0 to 2, and sends step 0 only after that. Without
# the setting, no constructor keeps its first batch back.
for rank in 0 1; do
  check "rank $rank first batch held" first_batch_held "$work/four_workers.log" $rank 3
done
if grep -q -E "first (batch released|request served at once)" "$work/one_worker.log"; then
  echo "one_worker: a constructor held its first batch without startup_prefetch_steps" >&2
  failed=$((failed + 1))
else
  passed=$((passed + 1))
fi
for rank in 0 1; do
  for other in four_workers one_worker_again; do
    if cmp -s "$work/one_worker.rank$rank.digests" "$work/$other.rank$rank.digests"; then
      passed=$((passed + 1))
    else
      echo "rank $rank digests differ between one_worker and $other:" >&2
      diff "$work/one_worker.rank$rank.digests" "$work/$other.rank$rank.digests" | head -5 >&2
      failed=$((failed + 1))
    fi
  done
done

# The two ranks must receive different batches.
if cmp -s "$work/one_worker.rank0.digests" "$work/one_worker.rank1.digests"; then
  echo "rank 0 and rank 1 received the same batches" >&2
  failed=$((failed + 1))
else
  passed=$((passed + 1))
fi

# Every line carries the documented keys.
/usr/bin/python3 - "$work/one_worker.rank0.jsonl" <<'PY' && passed=$((passed + 1)) || failed=$((failed + 1))
import json, sys
keys = {"step", "rank", "rows", "sequence_length", "tokens", "documents",
        "sources", "source_tokens", "padding", "digest"}
for number, line in enumerate(open(sys.argv[1])):
    record = json.loads(line)
    missing = keys - record.keys()
    assert not missing, f"line {number}: missing {missing}"
    assert record["step"] == number, f"line {number}: step {record['step']}"
    assert record["rows"] == 4
    assert record["sequence_length"] == 512
    assert record["tokens"] + record["padding"] == 4 * 512
    assert set(record["sources"]) == {"mail", "sotu", "moby"}
    assert sum(record["source_tokens"].values()) == record["tokens"]
PY

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
rm -rf "$work"
