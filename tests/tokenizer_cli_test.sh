#!/usr/bin/env bash
# Checks overlord_tokenize's command line: output format, standard input,
# JSON Lines, byte order marks, and the exit status and message of each
# error. Needs the GPT-2 vocabulary: $OVERLORD_GPT2_DIR, else
# $OVERLORD_DATA_DIR/gpt2, else data/demo/gpt2 in the repository.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tokenizer="${OVERLORD_TOKENIZE:-$root/tools/overlord_tokenize}"
# Under `bazel test`, this script is a symlink into the source tree.
repository_root="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
vocab_dir="${OVERLORD_GPT2_DIR:-${OVERLORD_DATA_DIR:-$repository_root/data/demo}/gpt2}"
work_dir="$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/tokenizer-cli.XXXXXX")"
trap 'rm -rf "$work_dir"' EXIT

passed=0
failed=0

check() {
  local description="$1" condition="$2"
  if eval "$condition"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $description"
    echo "  condition: $condition"
    echo "  exit status: $status"
    echo "  stdout: $(head -c 300 "$work_dir/out")"
    echo "  stderr: $(head -c 300 "$work_dir/err")"
  fi
}

# run ARGS...: runs overlord_tokenize with standard input from $work_dir/in.
run() {
  status=0
  "$tokenizer" "$@" <"$work_dir/in" >"$work_dir/out" 2>"$work_dir/err" || status=$?
}

if [[ ! -x "$tokenizer" ]]; then
  echo "overlord_tokenize not found at $tokenizer; set OVERLORD_TOKENIZE"
  echo "0 passed, 1 failed"
  exit 1
fi
if [[ ! -f "$vocab_dir/encoder.json" ]]; then
  echo "GPT-2 vocabulary not found in $vocab_dir; run scripts/fetch-demo-data or set OVERLORD_GPT2_DIR"
  echo "0 passed, 1 failed"
  exit 1
fi

printf 'Hello world' >"$work_dir/hello.txt"
printf '\xef\xbb\xbfHello world' >"$work_dir/bom.txt"
: >"$work_dir/empty.txt"
printf '{"text":"Hello world"}\n\n  \r\n{"text":"<|endoftext|>","id":2}\r\n' >"$work_dir/records.jsonl"
printf '{"text":"a"}\n{"body":"b"}\n' >"$work_dir/missing_field.jsonl"
printf '{"text":"a"}\n{"text":\n' >"$work_dir/invalid.jsonl"
printf 'Hello world' >"$work_dir/in"

printf '15496 995\n' >"$work_dir/expected_stdin"
printf '15496 995\n\n15496 995\n' >"$work_dir/expected_files"
printf '15496 995\n27 91 437 1659 5239 91 29\n' >"$work_dir/expected_records"

run --vocab "$vocab_dir"
check "standard input is one document" \
  '[[ $status -eq 0 ]] && cmp -s "$work_dir/out" "$work_dir/expected_stdin"'

run --vocab "$vocab_dir" "$work_dir/hello.txt" "$work_dir/empty.txt" "$work_dir/bom.txt"
check "one line per file, empty line for empty file, BOM dropped" \
  '[[ $status -eq 0 ]] && cmp -s "$work_dir/out" "$work_dir/expected_files"'

run --vocab "$vocab_dir" --jsonl-field text "$work_dir/records.jsonl"
check "one line per JSON Lines record, special token as text" \
  '[[ $status -eq 0 ]] && cmp -s "$work_dir/out" "$work_dir/expected_records"'

run --help
check "--help exits 0" '[[ $status -eq 0 ]] && grep -q "usage: overlord_tokenize" "$work_dir/out"'

run
check "missing --vocab is a usage error" '[[ $status -eq 2 ]] && grep -q -- "--vocab DIR is required" "$work_dir/err"'

run --vocab "$vocab_dir" --frobnicate
check "unknown option is a usage error" '[[ $status -eq 2 ]] && grep -q "unknown option" "$work_dir/err"'

run --vocab "$work_dir/no_such_vocab" "$work_dir/hello.txt"
check "missing vocabulary directory" \
  '[[ $status -eq 1 && ! -s "$work_dir/out" ]] && grep -q "no_such_vocab.* not found" "$work_dir/err"'

run --vocab "$vocab_dir" "$work_dir/no_such_file.txt"
check "missing input file" \
  '[[ $status -eq 1 ]] && grep -q "cannot open input file .*no_such_file.txt.*No such file" "$work_dir/err"'

run --vocab "$vocab_dir" "$work_dir"
check "directory as input" '[[ $status -eq 1 ]] && grep -q "is a directory" "$work_dir/err"'

run --vocab "$vocab_dir" --jsonl-field text "$work_dir/missing_field.jsonl"
check "JSON Lines record without the field" \
  '[[ $status -eq 1 ]] && grep -q "line 2 of .*missing_field.jsonl.* has no string field \"text\"" "$work_dir/err"'

run --vocab "$vocab_dir" --jsonl-field text "$work_dir/invalid.jsonl"
check "JSON Lines record with invalid JSON" \
  '[[ $status -eq 1 ]] && grep -q "line 2 of .*invalid.jsonl.* is not valid JSON" "$work_dir/err"'

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
