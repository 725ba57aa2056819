# Shared helpers for end-to-end tests that run overlordd and overlord_pull
# as separate processes on loopback. Source it from a test script.

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# The demo corpora fetched by scripts/fetch-demo-data.
demo_data_dir() {
  local dir="${OVERLORD_DATA_DIR:-}"
  [[ -n "$dir" && -f "$dir/gpt2/encoder.json" ]] ||
    fail "OVERLORD_DATA_DIR must name the demo data folder (run scripts/fetch-demo-data; scripts/test sets it)"
  echo "$dir"
}

# Prints a base port P such that P and P+1..P+count-1 are free on 127.0.0.1.
free_ports() {
  local count=$1
  /usr/bin/python3 - "$count" <<'PY'
import random, socket, sys
count = int(sys.argv[1])
for _ in range(200):
    base = random.randint(20000, 60000 - count)
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
digests_of() {
  /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    print(json.loads(line)["digest"])' "$1"
}
