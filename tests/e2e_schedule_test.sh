#!/usr/bin/env bash
# Schedules and autoscaling end to end. The job draws each step's row
# length (256 or 1024 tokens, same token budget), and its mixture weights
# follow stepwise and piecewise-linear schedules. It runs three times: with
# one worker per source, with three, and with the autoscaler resizing
# pools while the trainers pull. The batch digests must be identical and
# the autoscaler must have resized at least one pool. Rows must follow the
# drawn lengths, and the mail source must be absent while its scheduled
# weight is zero (after pieces carried over).
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-schedule.XXXXXX")
steps=1500

cat >"$work/job.yaml" <<YAML
seed: 99
sequence_length: {draw: [[256, 0.7], [1024, 0.3]]}
rows_per_rank: 8
ranks: 2
buffer_documents: 64
tokenizer: $data/gpt2
autoscale:
  enabled: false
  headroom: 8
  interval_ms: 100
sources:
  - name: mail
    format: jsonl
    paths: $data/mail/*.jsonl
    weight: {stepwise: [[0, 5], [20, 0], [40, 5]]}
    workers: 1
    max_workers: 4
  - name: sotu
    format: text
    paths: $data/sotu/*.txt
    weight: {piecewise_linear: [[0, 1], [60, 4]]}
    workers: 1
    max_workers: 4
  - name: moby
    format: text
    paths: $data/moby/*.txt
    weight: 2
    workers: 1
    max_workers: 4
YAML

run_two_ranks one_worker "$work/job.yaml" $steps
run_two_ranks three_workers "$work/job.yaml" $steps --set sources.mail.workers=3 --set sources.sotu.workers=3 \
  --set sources.moby.workers=3
run_two_ranks autoscaled "$work/job.yaml" $steps --set autoscale.enabled=true

passed=0
failed=0
for rank in 0 1; do
  for other in three_workers autoscaled; do
    check "rank $rank digests equal between one_worker and $other" \
      cmp -s "$work/one_worker.rank$rank.digests" "$work/$other.rank$rank.digests"
  done
done

check "the autoscaler resized a pool" \
  grep -q "autoscale workers 1 -> " "$work/autoscaled.log"
grep -m3 "autoscale workers" "$work/autoscaled.log" >&2 || true

check "rows follow the drawn lengths; mail is off in steps 22-39" \
  /usr/bin/python3 - "$work/one_worker.rank0.jsonl" "$work/one_worker.rank1.jsonl" <<'PY'
import json, sys
ranks = [[json.loads(line) for line in open(path)] for path in sys.argv[1:]]
rows = {record["rows"] for record in ranks[0]}
# 8 rows of 256 or 2 rows of 1024 per rank: the same 2048 tokens.
assert rows == {8, 2}, rows
for record in ranks[0]:
    assert record["rows"] * record["sequence_length"] == 2048, record
# Pieces of mail documents drawn in step 19 may be carried into the next
# two steps; after that no mail until step 40.
for step in range(22, 40):
    mail = sum(r[step]["source_tokens"].get("mail", 0) for r in ranks)
    assert mail == 0, (step, mail)
assert any(r[step]["source_tokens"].get("mail", 0) > 0
           for r in ranks for step in range(40, 50))
PY

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
