#!/usr/bin/env bash
# Converts the demo mail corpus to an indexed dataset with
# overlord_to_indexed and checks that overlordd serves the same batches
# from it as from the JSON Lines it came from. The content digests must
# match, because only the sample keys differ. The indexed source must give
# equal full digests with 1 and 3 workers and after a kill -9 and resume,
# and a truncated copy must stop a job under on_bad_input: fail.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
convert=tools/overlord_to_indexed
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-indexed.XXXXXX")
steps=130
passed=0
failed=0

# One JSON Lines shard with every mail record. A source's shards are
# shuffled per epoch and an indexed dataset is one shard, so only a
# one-shard source has the same document order after conversion.
for shard in "$data"/mail/*.jsonl; do
  cat "$shard"
  [[ -z $(tail -c 1 "$shard") ]] || echo
done >"$work/mail.jsonl"

# Writes a job that draws mail (format $2, paths $3) and sotu 4:1 into
# 16 rows of 1024 tokens per rank for 2 ranks.
write_job() {
  local path=$1 format=$2 paths=$3
  cat >"$path" <<YAML
seed: 99
sequence_length: 1024
global_rows: 32
ranks: 2
buffer_documents: 256
tokenizer: $data/gpt2
sources:
  - name: mail
    format: $format
    paths: $paths
    weight: 4
  - name: sotu
    format: text
    paths: $data/sotu/*.txt
    weight: 1
YAML
}

write_job "$work/jsonl.yaml" jsonl "$work/mail.jsonl"
write_job "$work/indexed.yaml" indexed "$work/tokens/mail.idx"

"$convert" --config "$work/jsonl.yaml" --source mail --output "$work/tokens/mail" \
  >"$work/convert.json" 2>"$work/convert.log" ||
  { cat "$work/convert.log" >&2; fail "overlord_to_indexed failed"; }

# An image-text source has no place in the token-only layout.
cat >"$work/images.yaml" <<YAML
sequence_length: 1024
rows_per_rank: 4
ranks: 1
tokenizer: $data/gpt2
sources:
  - name: images
    format: webdataset
    paths: $data/images/*.tar
YAML
set +e
"$convert" --config "$work/images.yaml" --source images --output "$work/tokens/images" \
  >"$work/images.out" 2>"$work/images.err"
images_status=$?
set -e
check "image-text source is rejected" test $images_status -eq 2
check "rejection names the source and format" \
  grep -q "source 'images' is an image-text (webdataset) source" "$work/images.err"
check "no image-text dataset is written" test ! -e "$work/tokens/images.bin"

# Every non-blank record of the corpus is written or counted as skipped.
check "converter counts every record" /usr/bin/python3 - "$work/convert.json" "$work/mail.jsonl" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
records = sum(1 for line in open(sys.argv[2], "rb") if line.strip())
assert summary["dtype"] == "uint16", summary
assert summary["documents"] + summary["skipped"] == records, (summary, records)
assert summary["documents"] > 6000, summary
PY

# The files follow the MMIDIDX layout as Megatron-LM reads it with NumPy:
# header, then int32 lengths, int64 pointers and int64 document indices.
check "files follow the layout" /usr/bin/python3 - "$work/tokens/mail" "$work/convert.json" <<'PY'
import json, struct, sys
prefix = sys.argv[1]
summary = json.load(open(sys.argv[2]))
idx = open(prefix + ".idx", "rb").read()
assert idx[:9] == b"MMIDIDX\x00\x00"
version, code, sequences, indices = struct.unpack_from("<QBQQ", idx, 9)
assert (version, code) == (1, 8), (version, code)
assert indices == summary["documents"] + 1
assert len(idx) == 34 + sequences * 12 + indices * 8
lengths = struct.unpack_from(f"<{sequences}i", idx, 34)
pointers = struct.unpack_from(f"<{sequences}q", idx, 34 + 4 * sequences)
documents = struct.unpack_from(f"<{indices}q", idx, 34 + 12 * sequences)
assert documents[0] == 0, documents[0]
assert documents[-1] == sequences, (documents[-1], sequences)
assert sum(lengths) == summary["tokens"]
bin_size = len(open(prefix + ".bin", "rb").read())
assert pointers[-1] + 2 * lengths[-1] == bin_size == 2 * summary["tokens"]
PY

# run_job NAME CONFIG FIRST COUNT SIGNAL [overlordd flags...]: serves
# steps FIRST..FIRST+COUNT-1 to both ranks, then stops the daemon with
# SIGNAL (TERM must give exit status 0).
run_job() {
  local name=$1 config=$2 first=$3 count=$4 signal=$5
  shift 5
  local port
  port=$(free_ports 2)
  "$overlordd" --role all --config "$config" --set base_port="$port" "$@" \
    2>>"$work/$name.log" &
  local daemon=$!
  local status=0
  "$pull" --endpoint "127.0.0.1:$port" --rank 0 --first-step "$first" \
    --steps "$count" --timeout 60 >>"$work/$name.rank0.jsonl" &
  local pull0=$!
  "$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --first-step "$first" \
    --steps "$count" --timeout 60 >>"$work/$name.rank1.jsonl" || status=1
  wait "$pull0" || status=1
  local running=yes
  kill "-$signal" "$daemon" 2>/dev/null || running=no
  local daemon_status=0
  wait "$daemon" 2>/dev/null || daemon_status=$?
  if [[ $running == no || $status -ne 0 ]]; then
    cat "$work/$name.log" >&2
    fail "$name: overlord_pull failed (overlordd still running: $running, exit status $daemon_status)"
  fi
  if [[ $signal == TERM && $daemon_status -ne 0 ]]; then
    fail "$name: overlordd exited with $daemon_status after SIGTERM"
  fi
}

# Prints field $2 of every line of an overlord_pull output file.
field_of() {
  /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    print(json.loads(line)[sys.argv[2]])' "$1" "$2"
}

run_job jsonl "$work/jsonl.yaml" 0 $steps TERM
run_job indexed_one "$work/indexed.yaml" 0 $steps TERM --set sources.mail.workers=1
run_job indexed_three "$work/indexed.yaml" 0 $steps TERM --set sources.mail.workers=3

# Killed at step 93 and resumed from the snapshot of step 90, by which
# more than 1024 mail documents were drawn. The new pool therefore starts
# inside the second range of the dataset.
resume=93
run_job resumed "$work/indexed.yaml" 0 $resume KILL --set sources.mail.workers=3 \
  --set checkpoint_every=10 --set checkpoint_dir="$work/checkpoints"
run_job resumed "$work/indexed.yaml" $resume $((steps - resume)) TERM \
  --set sources.mail.workers=3 --set checkpoint_every=10 \
  --resume "$work/checkpoints" --from-step $resume

for rank in 0 1; do
  for name in jsonl indexed_one indexed_three resumed; do
    field_of "$work/$name.rank$rank.jsonl" content_digest >"$work/$name.rank$rank.content"
    field_of "$work/$name.rank$rank.jsonl" digest >"$work/$name.rank$rank.digest"
  done
  check "rank $rank receives $steps batches" \
    test "$(wc -l <"$work/jsonl.rank$rank.content")" -eq $steps
  check "rank $rank indexed content equals jsonl" \
    cmp "$work/jsonl.rank$rank.content" "$work/indexed_one.rank$rank.content"
  check "rank $rank indexed 1 and 3 workers agree" \
    cmp "$work/indexed_one.rank$rank.digest" "$work/indexed_three.rank$rank.digest"
  check "rank $rank resumed run agrees" \
    cmp "$work/indexed_one.rank$rank.digest" "$work/resumed.rank$rank.digest"
done
check "resume restored a snapshot" grep -q "restored .*snapshot-" "$work/resumed.log"
check "resumed pool starts past the first range" /usr/bin/python3 - "$work/resumed.log" <<'PY'
import re, sys
starts = re.findall(r"source=mail pool started: .* record (\d+)\)", open(sys.argv[1]).read())
assert len(starts) == 2, starts
assert int(starts[-1]) >= 1024, f"resumed at record {starts[-1]}"
PY

# The mail documents started before step 90 are more than the first range
# of 1024, so the runs read several ranges and the resume started past
# the first one.
check "more than one range read" /usr/bin/python3 - "$work"/indexed_three.rank*.jsonl <<'PY'
import json, sys
mail = sum(json.loads(line)["sources"].get("mail", 0)
           for path in sys.argv[1:] for line in list(open(path))[:90])
assert mail > 1024, f"only {mail} mail documents started before step 90"
PY

check "pool logs format indexed" grep -q "format indexed" "$work/indexed_one.log"

# A token id outside the vocabulary in document 0 is skipped under
# on_bad_input: skip, and the job goes on.
mkdir -p "$work/bad"
cp "$work/tokens/mail.idx" "$work/bad/mail.idx"
cp "$work/tokens/mail.bin" "$work/bad/mail.bin"
printf '\xff\xff' | dd of="$work/bad/mail.bin" bs=1 seek=0 conv=notrunc status=none
write_job "$work/bad.yaml" indexed "$work/bad/mail.idx"
run_job bad "$work/bad.yaml" 0 2 TERM
check "bad document is logged" \
  grep -q "skipped bad_document mail:0: token 65535 in sequence 0 is outside the vocabulary" \
  "$work/bad.log"

# A truncated data file stops a job with on_bad_input: fail, naming the file.
mkdir -p "$work/cut"
cp "$work/tokens/mail.idx" "$work/cut/mail.idx"
head -c 1000000 "$work/tokens/mail.bin" >"$work/cut/mail.bin"
write_job "$work/cut.yaml" indexed "$work/cut/mail.idx"
port=$(free_ports 2)
status=0
timeout 60 "$overlordd" --role all --config "$work/cut.yaml" --set base_port="$port" \
  --set on_bad_input=fail 2>"$work/cut.log" || status=$?
check "truncated data file fails the job" test $status -eq 1
check "failure names the truncated file" \
  grep -q "$work/cut/mail.bin: truncated" "$work/cut.log"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
rm -rf "$work"
