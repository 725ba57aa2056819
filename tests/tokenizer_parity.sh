#!/usr/bin/env bash
# Compares overlord_tokenize with the reference tokenizer (js-tiktoken, via
# tools/reference/tokenize.mjs) on every document of the three demo corpora:
# each record's "text" field in mail/*.jsonl, and each file in sotu/*.txt and
# moby/*.txt. Prints the first mismatching document of each corpus and a
# closing "N passed, M failed" line; exits 1 on any mismatch or error.
#
#   tests/tokenizer_parity.sh [DATA_DIR]
#
# DATA_DIR defaults to $OVERLORD_DATA_DIR, else data/demo in the repository
# (scripts/fetch-demo-data fills it). Other settings:
#   OVERLORD_TOKENIZE       overlord_tokenize binary (default: the one in Bazel's
#                           runfiles, else bazel-bin/tools/overlord_tokenize)
#   OVERLORD_GPT2_DIR       GPT-2 vocabulary (default: DATA_DIR/gpt2)
#   OVERLORD_REFERENCE_DIR  directory with node_modules/js-tiktoken
#                           (default: DATA_DIR/reference)
set -euo pipefail

# Under `bazel test`, $root is the runfiles tree, whose files link back to
# the source tree; data/demo is found next to the real tokenize.mjs.
root="$(cd "$(dirname "$0")/.." && pwd)"
reference_script="$root/tools/reference/tokenize.mjs"
repository_root="$(cd "$(dirname "$(readlink -f "$reference_script")")/../.." && pwd)"
data_dir="${1:-${OVERLORD_DATA_DIR:-$repository_root/data/demo}}"
vocab_dir="${OVERLORD_GPT2_DIR:-$data_dir/gpt2}"
export OVERLORD_REFERENCE_DIR="${OVERLORD_REFERENCE_DIR:-$data_dir/reference}"

fail() {
  echo "tokenizer_parity: error: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

tokenizer="${OVERLORD_TOKENIZE:-}"
if [[ -z "$tokenizer" ]]; then
  for candidate in "$root/tools/overlord_tokenize" "$root/bazel-bin/tools/overlord_tokenize"; do
    if [[ -x "$candidate" ]]; then
      tokenizer="$candidate"
      break
    fi
  done
fi
[[ -n "$tokenizer" && -x "$tokenizer" ]] ||
  fail "overlord_tokenize not found; run 'bazel build //tools:overlord_tokenize' or set OVERLORD_TOKENIZE"
[[ -d "$data_dir" ]] ||
  fail "demo data directory '$data_dir' not found; run scripts/fetch-demo-data or pass DATA_DIR"
[[ -f "$vocab_dir/encoder.json" ]] ||
  fail "GPT-2 vocabulary '$vocab_dir/encoder.json' not found; run scripts/fetch-demo-data"
command -v node >/dev/null || fail "node not found; run scripts/setup"

work_dir="$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/tokenizer-parity.XXXXXX")"
trap 'rm -rf "$work_dir"' EXIT

total_passed=0
total_failed=0

# Prints one label per document of the given files, in output order.
label_documents() {
  local jsonl="$1"
  shift
  if [[ "$jsonl" == yes ]]; then
    # Both tools skip lines of only spaces, tabs and CRs.
    awk '!/^[ \t\r]*$/ { print FILENAME " line " FNR }' "$@"
  else
    printf '%s\n' "$@"
  fi
}

# compare_corpus NAME JSONL(yes|no) FILE...
compare_corpus() {
  local name="$1" jsonl="$2"
  shift 2
  local field_args=()
  [[ "$jsonl" == yes ]] && field_args=(--jsonl-field text)

  local ours="$work_dir/$name.ours" reference="$work_dir/$name.reference"
  local labels="$work_dir/$name.labels"
  label_documents "$jsonl" "$@" >"$labels"

  if ! "$tokenizer" --vocab "$vocab_dir" "${field_args[@]}" "$@" >"$ours" 2>"$work_dir/$name.ours.err"; then
    echo "$name: overlord_tokenize failed:" >&2
    cat "$work_dir/$name.ours.err" >&2
    total_failed=$((total_failed + 1))
    return
  fi
  if ! node "$reference_script" "${field_args[@]}" "$@" >"$reference" 2>"$work_dir/$name.reference.err"; then
    echo "$name: tokenize.mjs failed:" >&2
    cat "$work_dir/$name.reference.err" >&2
    total_failed=$((total_failed + 1))
    return
  fi

  # Line i of each output is document i. awk prints "passed failed" and
  # writes a description of the first mismatch, if any, to $mismatch.
  local counts mismatch="$work_dir/$name.mismatch"
  counts="$(awk -v name="$name" -v mismatch="$mismatch" '
    FILENAME == ARGV[1] { label[FNR] = $0; next }
    FILENAME == ARGV[2] { ours[FNR] = $0; ours_count = FNR; next }
    {
      reference_count = FNR
      if ((ours[FNR] "") == ($0 "")) { passed++; next }
      failed++
      if (failed > 1) next
      ours_size = split(ours[FNR], ours_ids, " ")
      reference_size = split($0, reference_ids, " ")
      position = 1
      while (position <= ours_size && position <= reference_size &&
             (ours_ids[position] "") == (reference_ids[position] "")) position++
      printf "%s: first mismatch in %s (document %d): %d ids from overlord_tokenize, %d from js-tiktoken, first difference at id index %d: %s vs %s\n",
        name, label[FNR], FNR, ours_size, reference_size, position - 1,
        (position <= ours_size ? ours_ids[position] : "(end)"),
        (position <= reference_size ? reference_ids[position] : "(end)") > mismatch
    }
    END {
      if (ours_count != reference_count) {
        printf "%s: overlord_tokenize printed %d lines, js-tiktoken %d\n", name, ours_count, reference_count > mismatch
        failed += (ours_count > reference_count ? ours_count - reference_count : reference_count - ours_count)
      }
      print passed + 0, failed + 0
    }' "$labels" "$ours" "$reference")"

  local passed failed
  read -r passed failed <<<"$counts"
  local documents
  documents=$(wc -l <"$labels")
  echo "$name: $passed of $documents documents match"
  if [[ -f "$mismatch" ]]; then
    cat "$mismatch"
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
}

shopt -s nullglob
mail_files=("$data_dir"/mail/*.jsonl)
sotu_files=("$data_dir"/sotu/*.txt)
moby_files=("$data_dir"/moby/*.txt)
((${#mail_files[@]} > 0)) || fail "no mail/*.jsonl under '$data_dir'; run scripts/fetch-demo-data"
((${#sotu_files[@]} > 0)) || fail "no sotu/*.txt under '$data_dir'; run scripts/fetch-demo-data"
((${#moby_files[@]} > 0)) || fail "no moby/*.txt under '$data_dir'; run scripts/fetch-demo-data"

compare_corpus mail yes "${mail_files[@]}"
compare_corpus sotu no "${sotu_files[@]}"
compare_corpus moby no "${moby_files[@]}"

echo "$total_passed passed, $total_failed failed"
[[ $total_failed -eq 0 ]]
