#!/usr/bin/env bash
# The Python packing of bench/baseline against overlordd's batches on two
# demo jobs: the three text corpora, and State of the Union text mixed by
# tokens with the image-text shards. See tests/python/baseline_packing_test.py.
set -euo pipefail
source tests/e2e_lib.sh

export PYTHONPATH="$PWD/client/python:$PWD/bench/baseline"
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/baseline-packing.XXXXXX")

write_demo_config "$work/text.yaml" "$data"
cat >"$work/images.yaml" <<YAML
seed: 77
sequence_length: 1024
rows_per_rank: 3
ranks: 2
base_port: 5555
mix_by: tokens
buffer_documents: 64
image_token_id: 50257
tokenizer: $data/gpt2
sources:
  - name: sotu
    format: text
    paths: $data/sotu/*.txt
    weight: 1
  - name: images
    format: webdataset
    paths: $data/images/images-*.tar
    image_max_pixels: 147456
    patch_size: 16
    weight: 2
    workers: 2
YAML

daemon=
stop_daemon() {
  if [[ -n "$daemon" ]]; then
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
  fi
  daemon=
}
trap stop_daemon EXIT

status=0
for job in text images; do
  port=$(free_ports 4)
  sed -i "s/^base_port: .*/base_port: $port/" "$work/$job.yaml"
  actors/overlordd --role all --config "$work/$job.yaml" 2>"$work/$job.log" &
  daemon=$!
  job_status=0
  echo "job $job"
  timeout 120 /usr/bin/python3 tests/python/baseline_packing_test.py \
    --config "$work/$job.yaml" --base-port "$port" --steps 40 || job_status=$?
  stop_daemon
  if [[ $job_status -ne 0 ]]; then
    tail -n 20 "$work/$job.log" >&2
    status=1
  fi
done
exit $status
