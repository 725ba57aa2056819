#!/usr/bin/env bash
# Start-up and client errors: each must end with a clear message and a
# non-zero exit, never a hang.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-errors.XXXXXX")
passed=0
failed=0

expect() {
  local name=$1 want_status=$2 want_text=$3
  shift 3
  local status=0
  timeout 60 "$@" >"$work/out" 2>"$work/err" || status=$?
  if [[ $status -ne $want_status ]]; then
    echo "$name: exit status $status, expected $want_status" >&2
    cat "$work/err" >&2
    failed=$((failed + 1))
  elif ! grep -qF -- "$want_text" "$work/err"; then
    echo "$name: stderr lacks '$want_text':" >&2
    cat "$work/err" >&2
    failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
}

write_demo_config "$work/job.yaml" "$data"
sed 's/^sequence_length: 512/sequence_length: 0/' "$work/job.yaml" >"$work/zero.yaml"
expect "sequence length zero" 2 "zero.yaml:2: sequence_length" \
  "$overlordd" --role all --config "$work/zero.yaml"

sed 's/weight: 5/weight: -5/' "$work/job.yaml" >"$work/negative.yaml"
expect "negative weight" 2 "negative.yaml:13: sources.mail.weight" \
  "$overlordd" --role all --config "$work/negative.yaml"

expect "unknown source in --set" 2 "no source named 'news'" \
  "$overlordd" --role all --config "$work/job.yaml" --set sources.news.workers=2

expect "missing config" 2 "cannot read the config file" \
  "$overlordd" --role all --config "$work/absent.yaml"

expect "unknown flag" 2 "unknown flag '--bogus'" \
  "$overlordd" --bogus

port=$(free_ports 1)
expect "pull without server" 1 "sent no batch for step 0 within 1000 ms" \
  "$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps 1 --timeout 1

expect "pull missing flags" 2 "--endpoint (or --planner), --rank and --steps are required" \
  "$pull" --rank 0

# A second daemon on a taken port stops with a message naming the port.
port=$(free_ports 2)
"$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" 2>"$work/first.log" &
first=$!
for _ in $(seq 50); do
  grep -q "constructor serving" "$work/first.log" 2>/dev/null && break
  sleep 0.1
done
expect "port in use" 1 "cannot bind tcp://127.0.0.1:$port" \
  "$overlordd" --role all --config "$work/job.yaml" --set base_port="$port"
kill -TERM "$first"
wait "$first" || true

echo "$passed passed, $failed failed"
rm -rf "$work"
[[ $failed -eq 0 ]]
