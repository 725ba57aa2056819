# Token payload transport between two processes on loopback: CAF's
# middleman against ZeroMQ ROUTER/DEALER, for fetches of 512, 2048 and 8192
# int32 tokens with 1 and 16 requests in flight. Also runs CAF with the
# payload sent as raw bytes (std::vector<char>), and CAF through a relay
# node to show that a handle obtained through a third node routes every
# message through it. Run through scripts/bench payload_transport.
#
# REPEATS=N (default 3) runs every case N times, alternating transports,
# and reports the median.
set -euo pipefail

bin="$BAZEL_BIN/bench/payload_transport_bench"
repeats="${REPEATS:-3}"
# Requests each client sends before it starts the clock.
warmup=100
command -v ss >/dev/null ||
  { echo "ss (package iproute2) is missing; it reads the relay's TCP byte counters" >&2; exit 1; }
work=$(mktemp -d /tmp/overlord-bench-payload.XXXXXX)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

server_pids=()
stop_servers() {
  for pid in "${server_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${server_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
}
trap 'stop_servers; rm -rf "$work"' EXIT

# Waits up to 10 s for a server's {"serve":...,"port":P} line in FILE and
# prints P. Servers listen on a port the OS picks (--port 0).
wait_for_port() {
  local file=$1
  for _ in $(seq 100); do
    if [[ -s "$file" ]]; then
      /usr/bin/python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["port"])' "$file"
      return 0
    fi
    sleep 0.1
  done
  echo "server did not report its port within 10 s; its log:" >&2
  cat "${file%.out}.err" >&2
  return 1
}

# Bytes received by the relay on its connection to the CAF server (the
# connection whose destination port is $1), from the kernel's TCP counters.
relay_upstream_bytes() {
  ss -tinH state established "( dport = :$1 )" |
    grep -o 'bytes_received:[0-9]*' | cut -d: -f2 | head -n 1 | grep . || echo 0
}

# Servers stop by themselves after 900 s if this script dies before
# stopping them.
"$bin" --serve caf --port 0 --timeout 900 >"$work/caf.out" 2>"$work/caf.err" &
server_pids+=($!)
"$bin" --serve zmq --port 0 --timeout 900 >"$work/zmq.out" 2>"$work/zmq.err" &
server_pids+=($!)
caf_port=$(wait_for_port "$work/caf.out")
zmq_port=$(wait_for_port "$work/zmq.out")
"$bin" --serve caf-relay --port 0 --upstream-port "$caf_port" --timeout 900 \
  >"$work/relay.out" 2>"$work/relay.err" &
server_pids+=($!)
relay_port=$(wait_for_port "$work/relay.out")

# Requests per run, chosen so that each run takes about 1-2 s on 2 cores
# (measured rates: CAF about 3,000 requests/s with one in flight, ZeroMQ
# about 10,000). Keys: transport:tokens:in_flight.
declare -A requests=(
  [caf:512:1]=4000 [caf:512:16]=40000
  [caf:2048:1]=4000 [caf:2048:16]=20000
  [caf:8192:1]=3000 [caf:8192:16]=8000
  [caf-raw:512:1]=5000 [caf-raw:512:16]=60000
  [caf-raw:2048:1]=5000 [caf-raw:2048:16]=50000
  [caf-raw:8192:1]=5000 [caf-raw:8192:16]=40000
  [zmq:512:1]=15000 [zmq:512:16]=150000
  [zmq:2048:1]=15000 [zmq:2048:16]=80000
  [zmq:8192:1]=12000 [zmq:8192:16]=40000
)

# One client run; appends its JSON line to results.jsonl. A client that
# fails (wrong size or checksum, timeout) stops the script.
fetch() {
  local mode=$1 port=$2 tokens=$3 in_flight=$4 count=$5
  timeout 120 "$bin" --fetch "$mode" --port "$port" --payload-tokens "$tokens" \
    --requests "$count" --in-flight "$in_flight" --warmup "$warmup" --timeout 60 |
    tee -a "$work/results.jsonl"
}

for repeat in $(seq "$repeats"); do
  echo "run $repeat of $repeats"
  for tokens in 512 2048 8192; do
    for in_flight in 1 16; do
      fetch caf "$caf_port" "$tokens" "$in_flight" "${requests[caf:$tokens:$in_flight]}"
      fetch caf-raw "$caf_port" "$tokens" "$in_flight" "${requests[caf-raw:$tokens:$in_flight]}"
      fetch zmq "$zmq_port" "$tokens" "$in_flight" "${requests[zmq:$tokens:$in_flight]}"
    done
  done
done

# Through the relay: the fetch goes client -> relay -> CAF server and back.
# The relay's received byte count shows whether the payload passed it.
relay_before=$(relay_upstream_bytes "$caf_port")
relay_requests=${requests[caf:2048:16]}
fetch caf-relay "$relay_port" 2048 16 "$relay_requests"
relay_after=$(relay_upstream_bytes "$caf_port")

stop_servers

/usr/bin/python3 - "$work/results.jsonl" "$repeats" "$warmup" "$relay_before" "$relay_after" <<'PY'
import json, statistics, sys

path, repeats, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
relay_before, relay_after = int(sys.argv[4]), int(sys.argv[5])
runs = {}
for line in open(path):
    record = json.loads(line)
    key = (record["mode"], record["payload_tokens"], record["in_flight"])
    runs.setdefault(key, []).append(record)

def median(mode, tokens, in_flight, field):
    return statistics.median(r[field] for r in runs[(mode, tokens, in_flight)])

print()
print(f"median of {repeats} runs; MB = 1e6 bytes of int32 tokens")
header = ("tokens", "in flight", "caf MB/s", "caf-raw MB/s", "zmq MB/s",
          "zmq/caf", "caf req/s", "zmq req/s")
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
per_size = {}
for tokens in (512, 2048, 8192):
    for in_flight in (1, 16):
        caf = median("caf", tokens, in_flight, "mb_per_s")
        raw = median("caf-raw", tokens, in_flight, "mb_per_s")
        zmq = median("zmq", tokens, in_flight, "mb_per_s")
        caf_rps = median("caf", tokens, in_flight, "requests_per_s")
        zmq_rps = median("zmq", tokens, in_flight, "requests_per_s")
        print(f"| {tokens} | {in_flight} | {caf:.1f} | {raw:.1f} | {zmq:.1f} "
              f"| {zmq / caf:.2f} | {caf_rps:,.0f} | {zmq_rps:,.0f} |")
        per_size.setdefault(str(tokens), {})[f"in_flight_{in_flight}"] = {
            "caf_mb_per_s": caf,
            "caf_raw_mb_per_s": raw,
            "zmq_mb_per_s": zmq,
            "zmq_over_caf": round(zmq / caf, 2),
            "caf_requests_per_s": caf_rps,
            "zmq_requests_per_s": zmq_rps,
        }

relay = runs[("caf-relay", 2048, 16)][0]
# The client also fetches `warmup` pieces before it starts the clock.
relay_payload_mb = (relay["requests"] + warmup) * 2048 * 4 / 1e6
relay_received_mb = (relay_after - relay_before) / 1e6
print()
print(f"caf through a relay node, 2048 tokens, 16 in flight: "
      f"{relay['mb_per_s']:.1f} MB/s (direct: "
      f"{per_size['2048']['in_flight_16']['caf_mb_per_s']:.1f} MB/s)")
print(f"relay received {relay_received_mb:.1f} MB from the server for "
      f"{relay_payload_mb:.1f} MB of fetched payload")

headline = per_size["2048"]["in_flight_16"]
print(json.dumps({
    "bench": "payload_transport",
    "repeats": repeats,
    "caf_mb_per_s": headline["caf_mb_per_s"],
    "zmq_mb_per_s": headline["zmq_mb_per_s"],
    "zmq_over_caf": headline["zmq_over_caf"],
    "caf_raw_mb_per_s": headline["caf_raw_mb_per_s"],
    "per_size": per_size,
    "relay_mb_per_s": relay["mb_per_s"],
    "relay_received_mb": round(relay_received_mb, 1),
    "relay_payload_mb": round(relay_payload_mb, 1),
}))
PY
