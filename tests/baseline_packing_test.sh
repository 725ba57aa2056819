#!/usr/bin/env bash
# The Python packing of bench/baseline against overlordd's batches on the
# demo job; see tests/python/baseline_packing_test.py.
set -euo pipefail
source tests/e2e_lib.sh

export PYTHONPATH="$PWD/client/python:$PWD/bench/baseline"
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/baseline-packing.XXXXXX")
write_demo_config "$work/job.yaml" "$data"
port=$(free_ports 4)

actors/overlordd --role all --config "$work/job.yaml" --set base_port="$port" \
  2>"$work/overlordd.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true; wait $daemon 2>/dev/null || true' EXIT

sed -i "s/^base_port: .*/base_port: $port/" "$work/job.yaml"
status=0
timeout 120 /usr/bin/python3 tests/python/baseline_packing_test.py \
  --config "$work/job.yaml" --base-port "$port" --steps 40 || status=$?
if [[ $status -ne 0 ]]; then
  tail -n 20 "$work/overlordd.log" >&2
fi
exit $status
