#!/usr/bin/env bash
# Large JSON Lines shards read in byte ranges: the demo mail corpus joined
# into one 33 MB shard runs read whole, in 1 MiB ranges by one worker, and
# in 1 MiB ranges by three workers. Digests (which cover sample keys) must
# be identical, so ranges change neither order nor keys.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-ranges.XXXXXX")
steps=150

mkdir -p "$work/big"
cat "$data"/mail/*.jsonl >"$work/big/mail.jsonl"
cat >"$work/job.yaml" <<YAML
seed: 5
sequence_length: 1024
rows_per_rank: 4
ranks: 2
buffer_documents: 128
tokenizer: $data/gpt2
sources:
  - name: mail
    format: jsonl
    paths: $work/big/mail.jsonl
    weight: 3
  - name: sotu
    format: text
    paths: $data/sotu/*.txt
    weight: 1
YAML

run_two_ranks whole "$work/job.yaml" $steps --set read_range_bytes=1073741824
run_two_ranks ranged "$work/job.yaml" $steps --set read_range_bytes=1048576 --log-level debug
run_two_ranks ranged_three "$work/job.yaml" $steps --set read_range_bytes=1048576 --set sources.mail.workers=3

passed=0
failed=0
for rank in 0 1; do
  for other in ranged ranged_three; do
    if cmp -s "$work/whole.rank$rank.digests" "$work/$other.rank$rank.digests"; then
      passed=$((passed + 1))
    else
      echo "FAILED: rank $rank digests differ between whole and $other" >&2
      diff "$work/whole.rank$rank.digests" "$work/$other.rank$rank.digests" | head -5 >&2
      failed=$((failed + 1))
    fi
  done
done
# The mail shard must really have been read in several ranges: each read
# logs one debug line.
reads=$(grep -c "source=mail shard=mail.jsonl epoch=0 read" "$work/ranged.log" || true)
if [[ $reads -ge 2 ]]; then
  passed=$((passed + 1))
else
  echo "FAILED: the mail shard was read in $reads range(s)" >&2
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
