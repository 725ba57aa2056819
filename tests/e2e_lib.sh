# Shared helpers for end-to-end tests that run overlordd and overlord_pull
# as separate processes on loopback. Source it from a test script.

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Runs the command after NAME and counts the result in `passed` or
# `failed`, printing NAME when it fails. Tests print the counts last.
passed=0
failed=0
check() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name" >&2
    failed=$((failed + 1))
  fi
}

# The demo corpora fetched by scripts/fetch-demo-data.
demo_data_dir() {
  local dir="${OVERLORD_DATA_DIR:-}"
  [[ -n "$dir" && -f "$dir/gpt2/encoder.json" ]] ||
    fail "OVERLORD_DATA_DIR must name the demo data folder (run scripts/fetch-demo-data; scripts/test sets it)"
  echo "$dir"
}

# Prints a base port P such that P and P+1..P+count-1 are free on 127.0.0.1.
# The ports lie below the kernel's ephemeral range, because outgoing
# connections and servers bound to port 0 take ports from it at any moment.
# A port there that is free now can be taken before the test binds it, and
# a client could then reach another test's server.
free_ports() {
  local count=$1
  /usr/bin/python3 - "$count" <<'PY'
import random, socket, sys
count = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral_low = 32768
low, high = 20000, max(20000 + count, ephemeral_low) - count
for _ in range(200):
    base = random.randint(low, high)
    sockets = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            sockets.append(s)
        print(base)
        sys.exit(0)
    except OSError:
        pass
    finally:
        for s in sockets:
            s.close()
sys.exit("no free port range found")
PY
}

# Writes a small job over the three demo corpora to $1 with absolute paths.
write_demo_config() {
  local path=$1 data=$2
  cat >"$path" <<YAML
seed: 2024
sequence_length: 512
rows_per_rank: 4
ranks: 2
base_port: 5555
buffer_documents: 256
tokenizer: $data/gpt2
sources:
  - name: mail
    format: jsonl
    text_field: text
    paths: $data/mail/*.jsonl
    weight: 5
    workers: 1
  - name: sotu
    format: text
    paths: $data/sotu/*.txt
    weight: 3
    workers: 1
  - name: moby
    format: text
    paths: $data/moby/*.txt
    weight: 2
    workers: 1
YAML
}

# Prints the digest of every line of an overlord_pull output file.
# Waits up to 10 s for a planner to log that it listens, in log file $1.
wait_for_planner() {
  for _ in $(seq 100); do
    grep -q "planner listening" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Prints the id of the node that serves rank $3 now, asking the planner on
# 127.0.0.1:$2 with overlordctl $1.
node_serving_rank() {
  "$1" --planner "127.0.0.1:$2" status --json | /usr/bin/python3 -c '
import json, sys
print(json.load(sys.stdin)["ranks"][int(sys.argv[1])]["node"])' "$3"
}

digests_of() {
  /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    print(json.loads(line)["digest"])' "$1"
}

# Runs `overlordd --role all` on config $2 with the remaining arguments,
# pulls $3 steps on ranks 0 and 1 and writes $work/$1.rank{0,1}.jsonl,
# $work/$1.rank{0,1}.digests and the daemon's log $work/$1.log. Needs the
# caller's $work, $overlordd and $pull; fails the test when a pull fails or
# a rank misses a batch.
run_two_ranks() {
  local name=$1 config=$2 steps=$3
  shift 3
  local port
  port=$(free_ports 2)
  "$overlordd" --role all --config "$config" --set base_port="$port" "$@" \
    2>"$work/$name.log" &
  local daemon=$!
  local status=0
  "$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps "$steps" --timeout 60 \
    >"$work/$name.rank0.jsonl" &
  local pull0=$!
  "$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps "$steps" --timeout 60 \
    >"$work/$name.rank1.jsonl" || status=1
  wait "$pull0" || status=1
  kill -TERM "$daemon"
  wait "$daemon" || true
  if [[ $status -ne 0 ]]; then
    cat "$work/$name.log" >&2
    fail "$name: overlord_pull failed"
  fi
  local rank
  for rank in 0 1; do
    digests_of "$work/$name.rank$rank.jsonl" >"$work/$name.rank$rank.digests"
    [[ $(wc -l <"$work/$name.rank$rank.digests") -eq $steps ]] ||
      fail "$name: rank $rank received $(wc -l <"$work/$name.rank$rank.digests") of $steps batches"
  done
}

# Succeeds when the debug log $1 shows that rank $2's constructor, run with
# startup_prefetch_steps $3, built steps 0 to $3 - 1, then released its
# first batch, and only then sent step 0. The release is either the end of
# a hold or a request that came after the lead was built. Prints the line
# numbers otherwise.
first_batch_held() {
  local log=$1 rank=$2 lead=$3
  local last=$((lead - 1)) built released sent
  # A missing line leaves its number empty instead of stopping the script.
  built=$(grep -n "rank=$rank step=$last built:" "$log" | head -1 | cut -d: -f1 || true)
  released=$(grep -n -E "rank=$rank step=0 first (batch released: steps 0 to $last are built|request served at once: steps 0 to $last were built)" \
    "$log" | head -1 | cut -d: -f1 || true)
  sent=$(grep -n "rank=$rank step=0 sent:" "$log" | head -1 | cut -d: -f1 || true)
  if [[ -n "$built" && -n "$released" && -n "$sent" ]] &&
    ((built < released && released < sent)); then
    return 0
  fi
  echo "rank $rank: expected step $last built, then the first batch released," \
    "then step 0 sent; log lines ${built:-none}, ${released:-none}, ${sent:-none}" >&2
  return 1
}
