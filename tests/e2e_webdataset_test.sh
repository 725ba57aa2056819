#!/usr/bin/env bash
# Runs overlordd on a text source plus the image-text demo shards with 1
# and with 3 workers per source and pulls 30 steps on both ranks. Checks
# that images arrive with their patch positions and that the Python client
# views them. Digests must be identical across worker counts, with shards
# read whole, in 1 MiB byte ranges (the default) or in the most ranges a
# shard is cut into (64), and with separate
# planner, loader and constructor processes, also when a constructor node
# dies mid-run. A truncated shard is quarantined or stops the daemon, per
# on_bad_input.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
ctl=tools/overlordctl
data=$(demo_data_dir)
compgen -G "$data/images/images-*.tar" >/dev/null ||
  fail "no image shards in $data/images; run scripts/fetch-demo-data"
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e.XXXXXX")
steps=30

cat >"$work/job.yaml" <<YAML
seed: 77
sequence_length: 1024
rows_per_rank: 4
ranks: 2
buffer_documents: 128
mix_by: documents
tokenizer: $data/gpt2
sources:
  - name: sotu
    format: text
    paths: $data/sotu/*.txt
    weight: 1
  - name: images
    format: webdataset
    paths: $data/images/images-*.tar
    image_max_pixels: 65536
    patch_size: 16
    weight: 4
YAML

# Runs job $1 with $2 workers per source; further arguments go to overlordd.
run_job() {
  local name=$1 workers=$2
  shift 2
  local port
  port=$(free_ports 2)
  "$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" \
    --set sources.sotu.workers="$workers" --set sources.images.workers="$workers" \
    "$@" 2>"$work/$name.log" &
  local daemon=$!
  local status=0
  "$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps $steps --timeout 60 \
    >"$work/$name.rank0.jsonl" &
  local pull0=$!
  "$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps $steps --timeout 60 \
    >"$work/$name.rank1.jsonl" || status=1
  wait "$pull0" || status=1
  kill -TERM "$daemon"
  local daemon_status=0
  wait "$daemon" || daemon_status=$?
  if [[ $status -ne 0 ]]; then
    cat "$work/$name.log" >&2
    fail "$name: overlord_pull failed"
  fi
  [[ $daemon_status -eq 0 ]] || fail "$name: overlordd exited with $daemon_status after SIGTERM"
  for rank in 0 1; do
    digests_of "$work/$name.rank$rank.jsonl" >"$work/$name.rank$rank.digests"
    [[ $(wc -l <"$work/$name.rank$rank.digests") -eq $steps ]] ||
      fail "$name: rank $rank received $(wc -l <"$work/$name.rank$rank.digests") of $steps batches"
  done
}

run_job one_worker 1
run_job three_workers 3
# This run also keeps each rank's first batch back until 2 steps are
# built (startup_prefetch_steps), which must not change the stream.
run_job whole_shards 1 --set image_read_range_bytes=1073741824 \
  --set startup_prefetch_steps=2 --log-level debug
# 4 KiB ranges would cut a demo shard into about 900; the cap of 64
# ranges per shard applies, and 3 workers read them.
run_job capped_ranges 3 --set image_read_range_bytes=4096

passed=0
failed=0
for rank in 0 1; do
  check "rank $rank first batch held" first_batch_held "$work/whole_shards.log" $rank 2
done
for other in three_workers whole_shards capped_ranges; do
  for rank in 0 1; do
    if cmp -s "$work/one_worker.rank$rank.digests" "$work/$other.rank$rank.digests"; then
      passed=$((passed + 1))
    else
      echo "rank $rank digests differ between one_worker and $other:" >&2
      diff "$work/one_worker.rank$rank.digests" "$work/$other.rank$rank.digests" | head -5 >&2
      failed=$((failed + 1))
    fi
  done
done

# Separate planner, loader and constructor processes: images travel from
# the loader to the constructor over ZeroMQ, and the stream is unchanged.
# The constructor node takes startup_prefetch_steps from the planner's
# config.
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
base_port=$(free_ports 4)  # two ranks and their shadows
planner_port=$(free_ports 1)
"$overlordd" --role planner --config "$work/job.yaml" --set base_port="$base_port" \
  --set planner_port="$planner_port" --set startup_prefetch_steps=3 \
  2>"$work/split.planner.log" &
pids+=($!)
wait_for_planner "$work/split.planner.log" || fail "planner did not start; see $work/split.planner.log"
"$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id loader-1 \
  2>"$work/split.loader.log" &
pids+=($!)
"$overlordd" --role constructor --planner "127.0.0.1:$planner_port" --node-id constructor-1 \
  --log-level debug 2>"$work/split.constructor.log" &
pids+=($!)
"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps $steps --timeout 60 \
  >"$work/split.rank1.jsonl" 2>"$work/split.rank1.err" &
split_pull=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps $steps --timeout 60 \
  >"$work/split.rank0.jsonl" 2>"$work/split.rank0.err" || true
wait "$split_pull" || true
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
for rank in 0 1; do
  if cmp -s "$work/one_worker.rank$rank.digests" <(digests_of "$work/split.rank$rank.jsonl"); then
    passed=$((passed + 1))
  else
    echo "rank $rank digests differ between one process and separate nodes:" >&2
    cat "$work/split.rank$rank.err" "$work/split.constructor.log" | tail -20 >&2
    failed=$((failed + 1))
  fi
  check "rank $rank first batch held on separate nodes" \
    first_batch_held "$work/split.constructor.log" "$rank" 3
done

# A constructor node killed mid-run: its ranks move to their shadows on
# the other constructor node, which fetch again the image documents the
# dead node had fetched. The loader dropped those pixels after the first
# fetch and decodes them again from the file bytes it kept, so the stream
# is unchanged.
base_port=$(free_ports 4)
planner_port=$(free_ports 1)
"$overlordd" --role planner --config "$work/job.yaml" --set base_port="$base_port" \
  --set planner_port="$planner_port" --set constructor_nodes=2 --set plan_ahead=6 \
  2>"$work/kill.planner.log" &
pids+=($!)
wait_for_planner "$work/kill.planner.log" || fail "planner did not start; see $work/kill.planner.log"
"$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id loader-1 \
  2>"$work/kill.loader.log" &
pids+=($!)
declare -A constructor_pid=()
for node in constructor-1 constructor-2; do
  "$overlordd" --role constructor --planner "127.0.0.1:$planner_port" --node-id "$node" \
    2>"$work/kill.$node.log" &
  constructor_pid[$node]=$!
  pids+=($!)
done
# With one request in flight and plan_ahead 6, the primary has built and
# fetched steps its trainer has not received when it dies, so the shadow
# fetches those documents a second time.
"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps $steps --timeout 60 --step-ms 50 \
  --prefetch 1 --failover-timeout 1 >"$work/kill.rank1.jsonl" 2>"$work/kill.rank1.err" &
kill_pull1=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps $steps --timeout 60 --step-ms 50 \
  --prefetch 1 --failover-timeout 1 >"$work/kill.rank0.jsonl" 2>"$work/kill.rank0.err" &
kill_pull0=$!
for _ in $(seq 300); do
  [[ $(wc -l <"$work/kill.rank0.jsonl") -ge 10 ]] && break
  sleep 0.05
done
# Kill the node that serves rank 0, wherever the planner placed it.
primary=$(node_serving_rank "$ctl" "$planner_port" 0)
[[ -n ${constructor_pid[$primary]:-} ]] || fail "rank 0 is served by '$primary', not by a constructor node"
kill -9 "${constructor_pid[$primary]}"
wait "$kill_pull0" || true
wait "$kill_pull1" || true
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
for rank in 0 1; do
  if cmp -s "$work/one_worker.rank$rank.digests" <(digests_of "$work/kill.rank$rank.jsonl"); then
    passed=$((passed + 1))
  else
    echo "rank $rank digests differ after a constructor node died:" >&2
    tail -5 "$work/kill.rank$rank.err" "$work/kill.planner.log" >&2
    failed=$((failed + 1))
  fi
done
if grep -q "decodes .* again for a second fetch" "$work/kill.loader.log"; then
  passed=$((passed + 1))
else
  echo "the loader decoded no image again after the constructor node died" >&2
  for log in "$work"/kill.*.log "$work"/kill.rank*.err; do
    echo "--- $log" >&2
    tail -n 12 "$log" >&2
  done
  failed=$((failed + 1))
fi

# Images arrive: every batch line counts its images, at most 256 patches
# each (65536 pixels / 16^2), and both sources contribute.
/usr/bin/python3 - "$work"/one_worker.rank*.jsonl <<'PY' && passed=$((passed + 1)) || failed=$((failed + 1))
import json, sys
images = 0
for path in sys.argv[1:]:
    for number, line in enumerate(open(path)):
        record = json.loads(line)
        assert record["images"] == record["sources"]["images"], \
            f"{path}:{number + 1}: {record['images']} images for {record['sources']['images']} image documents"
        assert record["image_patches"] <= 256 * record["images"]
        assert record["image_patches"] < record["source_tokens"]["images"] or record["images"] == 0
        images += record["images"]
assert images > 50, f"only {images} images in all batches"
print(f"{images} images arrived")
PY

# The Python client's view: pixels are zero-copy float32 [c, h, w] arrays,
# and the positions they name contain the image token without loss.
port=$(free_ports 2)
"$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" \
  2>"$work/python.log" &
daemon=$!
# Rank 1 keeps pace, so rank 0 is not held back by plan_ahead.
"$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps 9 --timeout 60 >/dev/null &
pull1=$!
PYTHONPATH="$PWD/client/python" /usr/bin/python3 - "$port" "$work/one_worker.rank0.digests" <<'PY' && passed=$((passed + 1)) || failed=$((failed + 1))
import math, sys
import numpy as np
import overlord
port, reference = int(sys.argv[1]), open(sys.argv[2]).read().split()
client = overlord.Client(endpoint=f"tcp://127.0.0.1:{port}", rank=0, timeout=60)
seen = 0
for step in range(8):
    batch = next(client)
    assert batch["digest"] == reference[step], f"step {step}: digest differs from overlord_pull"
    for image in batch["images"]:
        pixels = image["pixels"]
        assert pixels.dtype == np.uint8
        assert pixels.shape == (image["channels"], image["height"], image["width"])
        assert len(image["mean"]) == len(image["std"]) == image["channels"]
        values = overlord.normalise_image(pixels, image["mean"], image["std"])
        assert values.dtype == np.float32
        assert values.shape == pixels.shape
        expected = (pixels.astype(np.float32) / 255 - np.float32(image["mean"])[:, None, None]) \
            / np.float32(image["std"])[:, None, None]
        assert np.allclose(values, expected, atol=1e-5)
        assert not pixels.flags.writeable
        assert type(pixels.base).__name__ == "BatchBuffer", type(pixels.base)
        assert image["patches"] == math.ceil(image["height"] / 16) * math.ceil(image["width"] / 16)
        begin = image["row_offset"]
        span = slice(begin, begin + image["patches"])
        assert (batch["tokens"][image["row"], span] == 50257).all()
        assert (batch["labels"][image["row"], span] == -100).all()
        assert (batch["loss_mask"][image["row"], span] == 0).all()
        assert np.isfinite(values).all()
        assert pixels.std() > 0
        seen += 1
assert seen > 5, f"only {seen} images in 8 steps"
# to_torch hands trainers normalised float32 images.
batch = next(client)
tensors = overlord.to_torch(batch)
for image, tensor in zip(batch["images"], tensors["images"]):
    assert tensor["pixels"].dtype.is_floating_point
    assert np.array_equal(tensor["pixels"].numpy(),
                          overlord.normalise_image(image["pixels"], image["mean"], image["std"]))
print(f"python client: {seen} images checked")
PY
wait "$pull1" || { echo "rank 1 pull failed during the Python check" >&2; failed=$((failed + 1)); }
kill -TERM "$daemon"
wait "$daemon" || true

grep -q "source=images pool started" "$work/one_worker.log" && passed=$((passed + 1)) ||
  { echo "no pool start logged for the image source" >&2; failed=$((failed + 1)); }

# A truncated shard next to a good one: quarantine drops it and serves the
# rest, fail stops the daemon with the shard and byte offset.
mkdir -p "$work/bad"
cp "$data/images/images-0000.tar" "$work/bad/"
head -c 1000000 "$data/images/images-0001.tar" >"$work/bad/images-0001.tar"
cat >"$work/bad.yaml" <<YAML
seed: 5
sequence_length: 1024
rows_per_rank: 2
ranks: 1
buffer_documents: 64
tokenizer: $data/gpt2
on_bad_input: quarantine
sources:
  - name: images
    format: webdataset
    paths: $work/bad/*.tar
    image_max_pixels: 65536
    patch_size: 16
YAML
port=$(free_ports 1)
"$overlordd" --role all --config "$work/bad.yaml" --set base_port="$port" 2>"$work/quarantine.log" &
daemon=$!
if "$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps 20 --timeout 60 >"$work/quarantine.jsonl"; then
  passed=$((passed + 1))
else
  echo "pull failed with a quarantined shard" >&2
  failed=$((failed + 1))
fi
kill -TERM "$daemon"
wait "$daemon" || true
for text in "skipped truncated_tar images-0001.tar@" "skipped quarantined images-0001.tar"; do
  if grep -qF "$text" "$work/quarantine.log"; then
    passed=$((passed + 1))
  else
    echo "quarantine log lacks '$text':" >&2
    tail -5 "$work/quarantine.log" >&2
    failed=$((failed + 1))
  fi
done
# Only samples of the good shard reach the batches.
if /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    assert json.loads(line)["images"] > 0' "$work/quarantine.jsonl"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

status=0
timeout 60 "$overlordd" --role all --config "$work/bad.yaml" --set base_port="$port" \
  --set on_bad_input=fail 2>"$work/fail.log" || status=$?
if [[ $status -ne 0 && $status -ne 124 ]] && grep -qF "images-0001.tar@" "$work/fail.log" &&
    grep -qF "truncated_tar" "$work/fail.log"; then
  passed=$((passed + 1))
else
  echo "on_bad_input: fail exited with $status:" >&2
  tail -5 "$work/fail.log" >&2
  failed=$((failed + 1))
fi

# Quarantine applies to text shards too: a JSON Lines shard with one
# malformed line contributes nothing, its good neighbour is served.
mkdir -p "$work/text"
printf '{"text": "a good line"}\n{"text": broken\n{"text": "dropped with its shard"}\n' \
  >"$work/text/bad.jsonl"
head -n 50 "$data/mail/mail-0000.jsonl" >"$work/text/good.jsonl"
cat >"$work/text.yaml" <<YAML
sequence_length: 256
rows_per_rank: 2
tokenizer: $data/gpt2
on_bad_input: quarantine
sources:
  - name: notes
    format: jsonl
    paths: $work/text/*.jsonl
YAML
port=$(free_ports 1)
"$overlordd" --role all --config "$work/text.yaml" --set base_port="$port" 2>"$work/text.log" &
daemon=$!
"$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps 5 --timeout 60 >/dev/null || true
kill -TERM "$daemon"
wait "$daemon" || true
if grep -qF "skipped quarantined bad.jsonl" "$work/text.log" &&
    grep -qF "skipped malformed_json bad.jsonl:2" "$work/text.log"; then
  passed=$((passed + 1))
else
  echo "text quarantine not logged:" >&2
  tail -5 "$work/text.log" >&2
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
rm -rf "$work"
