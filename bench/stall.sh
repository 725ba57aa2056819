# Trainer stalls with and without autoscaling. Simulated synchronous
# trainers (bench/stall_trainer) consume batches at a fixed step time from
# a job that mixes cheap text (the mail corpus) with image-text samples
# whose decoding costs far more per document. Both runs get the same CPU
# budget, BUDGET cores for the loader (default: this machine's cores):
#   static     every source gets an equal share of the budget in workers,
#              fixed for the run;
#   autoscale  the same start, then the planner resizes pools within
#              autoscale.cpu_budget = BUDGET.
# The step time is calibrated first so that the trainers ask for DEMAND
# (default 1.25) times what one equal share of the budget delivers. Reports the share of
# trainer time spent waiting for data and the steps until waiting stops.
# A trainer's wait for data leaves out the time its thread was ready but
# had no core (see bench/stall_trainer.cpp). The *_wall_* figures keep it.
# Run through scripts/bench stall. STEPS (default 100) sets the run length
# and IMAGE_PIXELS (default 262144, 512x512) the images' pixel budget. At
# that size an image-text document costs 7x to 10x a text one per worker.
# The trainers run at niceness TRAINER_NICE (default -10; without root they
# keep the script's). On GPU hosts they would not share cores with the loader.
# STARTUP_PREFETCH_STEPS (default 3) sets startup_prefetch_steps: each
# constructor builds that many steps before it serves the first, so the
# trainers start with a lead (0 serves at once). The JSON reports the
# first batch's wait (*_first_batch_ms), which the lead lengthens and the
# wait fractions leave out.
# BUFFER_DOCUMENTS (default 32) sets each pool's buffer_documents, and
# OVERLORDD_FLAGS adds flags to every overlordd, e.g. "--log-level debug" to
# log when each step is planned, built and sent; bench/stall_waits.py then
# names the late stage of each autoscaled wait. Each run's logs and the trainers'
# per-step lines stay in the /tmp/overlord-bench-stall.* directory it prints.
set -euo pipefail
source tests/e2e_lib.sh

data="$OVERLORD_DATA_DIR"
bin="$BAZEL_BIN"
steps="${STEPS:-100}"
image_pixels="${IMAGE_PIXELS:-262144}"
# Demand as a multiple of what one equal share delivers.
demand="${DEMAND:-1.25}"
cores=$(nproc)
budget="${BUDGET:-$cores}"
# nice -n adds to the current niceness, so the step is relative. Without
# root, nice cannot lower it and the trainers keep the current niceness.
wanted_nice="${TRAINER_NICE:--10}"
[[ "$wanted_nice" =~ ^-?[0-9]+$ ]] || fail "TRAINER_NICE must be an integer, got '$wanted_nice'"
[[ "${STARTUP_PREFETCH_STEPS:-3}" =~ ^[0-4]$ ]] ||
  fail "STARTUP_PREFETCH_STEPS must be 0 to 4 (the bench's plan_ahead), got '$STARTUP_PREFETCH_STEPS'"
nice_step=$(( wanted_nice - $(nice) ))
trainer_nice=$(nice -n "$nice_step" nice 2>/dev/null)
[[ -d "$data/images" ]] || fail "no image-text shards in $data/images; run scripts/fetch-demo-data"
work=$(mktemp -d /tmp/overlord-bench-stall.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
echo "work directory: $work"
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); budget $budget cores; trainers at niceness $trainer_nice"

sources=2
share=$(( budget / sources > 0 ? budget / sources : 1 ))

# Writes the job: 2 ranks x 8 rows of 4096 tokens, 3 image-text samples
# (by default shrunk to at most 512x512 pixels, 1024 patches) for every text document,
# so a step contains a few hundred images and decoding them dominates.
write_job() {
  local path=$1 port=$2 workers=$3 autoscale=$4
  cat >"$path" <<YAML
seed: 7
planner_port: $(( port + 2 ))
sequence_length: 4096
rows_per_rank: 8
ranks: 2
base_port: $port
mix_by: documents
plan_ahead: 4
startup_prefetch_steps: ${STARTUP_PREFETCH_STEPS:-3}
buffer_documents: ${BUFFER_DOCUMENTS:-32}
tokenizer: $data/gpt2
autoscale:
  enabled: $autoscale
  headroom: 1.3
  interval_ms: 100
  cpu_budget: $budget
sources:
  - name: mail
    format: jsonl
    paths: $data/mail/*.jsonl
    weight: 1
    workers: $workers
    max_workers: $budget
  - name: images
    format: webdataset
    paths: $data/images/images-*.tar
    image_max_pixels: $image_pixels
    patch_size: 16
    weight: 3
    workers: $workers
    max_workers: $(( budget + 1 ))
YAML
}

# Starts overlordd with config $1, logging to $2, and prints its pid.
start_daemon() {
  local config=$1 log=$2
  # shellcheck disable=SC2086 # OVERLORDD_FLAGS holds several flags
  "$bin/actors/overlordd" --config "$config" ${OVERLORDD_FLAGS:-} >/dev/null 2>"$log" &
  echo $!
}

# Runs job $1 with autoscaling $2 ("true" or "false") and the trainers
# given the remaining arguments. Writes the trainers' output to
# $work/$1.out and the planner's status to $work/$1-status.json.
run_job() {
  local name=$1 autoscale=$2
  shift 2
  local port pid
  port=$(free_ports 3)
  write_job "$work/$name.yaml" "$port" "$share" "$autoscale"
  pid=$(start_daemon "$work/$name.yaml" "$work/$name.log")
  pids+=("$pid")
  nice -n "$nice_step" "$bin/bench/stall_trainer" --port "$port" --ranks 2 "$@" \
    >"$work/$name.out"
  "$bin/tools/overlordctl" --planner "127.0.0.1:$(( port + 2 ))" status --json \
    >"$work/$name-status.json"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Prints the steps per second from the JSON summary of run $1.
steps_per_s() {
  tail -1 "$work/$1.out" | /usr/bin/python3 -c \
    "import json, sys; print(json.load(sys.stdin)['steps_per_s'])"
}

# Calibration with trainers that do not compute. 60 steps cover both
# costly and cheap stretches of the stream (10 to 77 images per step).
# Trainers then ask for DEMAND times what one equal share delivers, and
# demand_of_budget compares that with what the autoscaled budget delivers.
run_job calibrate false --steps 60 --step-ms 0 --warmup 10
run_job calibrate-budget true --steps 60 --step-ms 0 --warmup 10
capacity=$(steps_per_s calibrate)
budget_capacity=$(steps_per_s calibrate-budget)
step_ms=$(/usr/bin/python3 -c "print(max(1, round(1000 / ($capacity * $demand))))")
threshold_ms=$(( step_ms / 10 + 2 ))
echo "calibration: $share worker(s) per source deliver $(printf %.2f "$capacity") steps/s," \
  "the autoscaled budget $(printf %.2f "$budget_capacity"); step time ${step_ms} ms"

# The measured runs.
measured=(--steps "$steps" --step-ms "$step_ms" --wait-threshold-ms "$threshold_ms")
run_job static false "${measured[@]}"
static=$(tail -1 "$work/static.out")
echo "static:    $static"
run_job autoscale true "${measured[@]}"
autoscale=$(tail -1 "$work/autoscale.out")
echo "autoscale: $autoscale"
for name in static autoscale; do
  echo "$name: steps that waited for data (ms): $(awk -v t="$threshold_ms" \
    '$1 == "step" && $4 > t { printf "%d:%.0f ", $2, $4 }' "$work/$name.out" | cut -c1-400)"
done
# With debug logging, name the late stage of each autoscaled wait.
if grep -q '\] rank=[0-9]* step=[0-9]* sent:' "$work/autoscale.log"; then
  echo "autoscale waits explained (ms from each request):"
  /usr/bin/python3 bench/stall_waits.py "$work/autoscale.out" \
    "$work/autoscale.log" "$threshold_ms" | sed 's/^/  /' ||
    echo "  bench/stall_waits.py failed, so the waits are not explained"
fi
echo "autoscale decisions:"
grep -o 'source=[a-z]* autoscale workers.*' "$work/autoscale.log" | cut -c1-160 | head -10 || true

/usr/bin/python3 - "$static" "$autoscale" "$step_ms" "$budget" "$capacity" \
  "$work/calibrate-status.json" "$trainer_nice" "$budget_capacity" \
  "${STARTUP_PREFETCH_STEPS:-3}" <<'PY'
import json, sys
static, autoscale = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pools = json.load(open(sys.argv[6]))["sources"]
text_ms, image_ms = pools["mail"]["latency_ms"], pools["images"]["latency_ms"]
print(f"per document and worker: text {text_ms:.3f} ms, image-text {image_ms:.3f} ms "
      f"({image_ms / text_ms:.0f}x)")
print(json.dumps({
    "static_wait_fraction": static["wait_fraction"],
    "autoscale_wait_fraction": autoscale["wait_fraction"],
    "static_steps_to_no_wait": static["steps_to_no_wait"],
    "autoscale_steps_to_no_wait": autoscale["steps_to_no_wait"],
    "static_wall_wait_fraction": static["wall_wait_fraction"],
    "autoscale_wall_wait_fraction": autoscale["wall_wait_fraction"],
    "static_wall_steps_to_no_wait": static["wall_steps_to_no_wait"],
    "autoscale_wall_steps_to_no_wait": autoscale["wall_steps_to_no_wait"],
    "static_first_batch_ms": static["first_batch_ms"],
    "autoscale_first_batch_ms": autoscale["first_batch_ms"],
    "autoscale_run_queue_ms": autoscale["run_queue_ms"],
    "autoscale_trainer_minor_faults": autoscale["minor_faults"],
    "run_queue_measured": static["run_queue_measured"] and autoscale["run_queue_measured"],
    "steps": static["steps"],
    "step_ms": int(sys.argv[3]),
    "budget_cores": int(sys.argv[4]),
    "static_share_steps_per_s": round(float(sys.argv[5]), 2),
    "budget_steps_per_s": round(float(sys.argv[8]), 2),
    "demand_of_budget": round(1000 / int(sys.argv[3]) / float(sys.argv[8]), 3),
    "static_steps_per_s": static["steps_per_s"],
    "autoscale_steps_per_s": autoscale["steps_per_s"],
    "image_to_text_cost": round(image_ms / text_ms, 1),
    "trainer_nice": int(sys.argv[7]),
    "startup_prefetch_steps": int(sys.argv[9]),
}))
PY
