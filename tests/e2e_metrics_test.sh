#!/usr/bin/env bash
# Metrics and log controls on a cluster of separate processes on loopback:
# a planner, two loader nodes and one constructor node, each serving
# /metrics and /healthz on its own port (the planner's set by the config
# key metrics_port, the nodes' by --metrics-port). Debian's prometheus server
# listens on 127.0.0.1 with a temporary config and storage, and scrapes
# only these loopback targets, every second. Checks through
# Prometheus' HTTP API that
#   - every node is scraped and exports its own overlord_* series (and not
#     those of other roles);
#   - counters increase while trainers pull batches;
#   - bad input is counted by kind, a drain is counted as a failover, and
#     checkpoint writes are measured;
# and checks directly that
#   - /healthz returns 200 on joined nodes and 503 once the planner is gone;
#   - --log-format json writes one JSON object per line with the ids as
#     fields;
#   - overlordctl log-level sets `sources` to debug on one node at run time,
#     debug lines then appear in that node's log only, and status shows it.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
ctl=tools/overlordctl
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-metrics.XXXXXX")
passed=0
failed=0
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT

# HTTP GET on loopback without any proxy; prints "STATUS BODY".
http_get() {
  /usr/bin/python3 - "$1" <<'PY'
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=5) as reply:
        print(reply.status, reply.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print("000", e)
PY
}

# Prints the sum of the values of a PromQL query's result, or "none" when
# the result is empty.
prom_sum() {
  /usr/bin/python3 - "$prom_port" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
url = "http://127.0.0.1:%s/api/v1/query?query=%s" % (
    sys.argv[1], urllib.parse.quote(sys.argv[2]))
with opener.open(url, timeout=5) as reply:
    answer = json.load(reply)
assert answer["status"] == "success", answer
result = answer["data"]["result"]
print(sum(float(r["value"][1]) for r in result) if result else "none")
PY
}

# Waits up to $2 seconds until the PromQL condition $1 (a comparison such
# as `up == 1`) has at least $3 series (default 1).
wait_prom() {
  local query=$1 seconds=$2 wanted=${3:-1}
  local deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    local count
    count=$(prom_sum "count($query)" 2>/dev/null || echo none)
    [[ $count != none ]] && (($(printf '%.0f' "$count") >= wanted)) && return 0
    sleep 0.5
  done
  echo "timed out after ${seconds}s waiting for $wanted series of: $query" >&2
  return 1
}

# Prints how much `query` (a sum) grew within `seconds`, polling until it
# grows or the time is up.
growth_within() {
  local query=$1 before=$2 seconds=$3
  local deadline=$((SECONDS + seconds)) now=$before
  while ((SECONDS < deadline)); do
    now=$(prom_sum "$query")
    if [[ $now != none ]] && /usr/bin/python3 -c "import sys; sys.exit(0 if float('$now') > float('$before') else 1)"; then
      break
    fi
    sleep 0.5
  done
  /usr/bin/python3 -c "print(float('$now') - float('$before') if '$now' != 'none' else 0)"
}

grew() {
  /usr/bin/python3 -c "import sys; sys.exit(0 if float('$1') > 0 else 1)"
}

at_least() {
  [[ $1 != none ]] && /usr/bin/python3 -c "import sys; sys.exit(0 if float('$1') >= float('$2') else 1)"
}

# --- A job with a source of partly bad records, and checkpoints ----------
write_demo_config "$work/job.yaml" "$data"
mkdir -p "$work/broken"
{
  for i in $(seq 20); do
    echo "{\"text\": \"Record $i of the broken source, which is fine.\"}"
  done
  echo '{"text": "an unterminated string}'
  echo '{"body": "no text field"}'
  echo 'not json at all'
} >"$work/broken/part-0.jsonl"
cat >>"$work/job.yaml" <<YAML
  - name: broken
    format: jsonl
    paths: $work/broken/*.jsonl
    weight: 1
YAML

base_port=$(free_ports 2)
planner_port=$(free_ports 1)
m_planner=$(free_ports 1)
m_loader1=$(free_ports 1)
m_loader2=$(free_ports 1)
m_constructor=$(free_ports 1)
prom_port=$(free_ports 1)

"$overlordd" --role planner --config "$work/job.yaml" --set base_port="$base_port" \
  --set planner_port="$planner_port" --set loader_nodes=2 --set constructor_nodes=1 \
  --set buffer_documents=32 --set checkpoint_dir="$work/checkpoints" \
  --set checkpoint_every=10 --set metrics_port="$m_planner" 2>"$work/planner.log" &
planner_pid=$!
pids+=("$planner_pid")
for _ in $(seq 100); do
  grep -q "planner listening" "$work/planner.log" && break
  sleep 0.1
done
"$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id loader-1 \
  --metrics-port "$m_loader1" --log-format json 2>"$work/loader-1.log" &
pids+=($!)
"$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id loader-2 \
  --metrics-port "$m_loader2" 2>"$work/loader-2.log" &
pids+=($!)
"$overlordd" --role constructor --planner "127.0.0.1:$planner_port" \
  --node-id constructor-1 --metrics-port "$m_constructor" 2>"$work/constructor-1.log" &
pids+=($!)

# Every node reports healthy once it joined.
healthy() {
  for _ in $(seq 100); do
    [[ $(http_get "http://127.0.0.1:$1/healthz") == 200* ]] && return 0
    sleep 0.1
  done
  return 1
}
check "planner healthz is 200" healthy "$m_planner"
check "loader healthz is 200" healthy "$m_loader1"
check "constructor healthz is 200" healthy "$m_constructor"
http_get "http://127.0.0.1:$m_planner/nothing" >"$work/unknown_path"
check "unknown path is 404" grep -q "^404" "$work/unknown_path"
http_get "http://127.0.0.1:$m_planner/metrics" >"$work/planner_start.metrics"
check "failover counters exist at 0 from the start" \
  grep -q 'overlord_failovers_total{kind="shadow_promote"} 0' "$work/planner_start.metrics"

# A second process cannot take a metrics port that is in use.
status=0
timeout 20 "$overlordd" --role loader --planner "127.0.0.1:$planner_port" \
  --node-id loader-9 --metrics-port "$m_loader1" 2>"$work/loader-9.log" || status=$?
check "a taken metrics port stops start-up" test "$status" -ne 0 -a "$status" -ne 124
check "a taken metrics port is named" \
  grep -q "cannot serve metrics on 127.0.0.1:$m_loader1" "$work/loader-9.log"

# --- Prometheus on loopback, scraping only these nodes -------------------
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: overlord
    static_configs:
      - targets:
          - 127.0.0.1:$m_planner
          - 127.0.0.1:$m_loader1
          - 127.0.0.1:$m_loader2
          - 127.0.0.1:$m_constructor
YAML
promtool check config "$work/prometheus.yml" >"$work/promtool.out" 2>&1 ||
  fail "promtool rejected the test's config: $(cat "$work/promtool.out")"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn \
  2>"$work/prometheus.log" &
pids+=($!)
ready=0
for _ in $(seq 120); do
  if [[ $(http_get "http://127.0.0.1:$prom_port/-/ready") == 200* ]]; then
    ready=1
    break
  fi
  sleep 0.25
done
[[ $ready -eq 1 ]] || fail "prometheus did not become ready in 30 s: $(tail -5 "$work/prometheus.log")"

check "prometheus scrapes all four nodes" wait_prom 'up{job="overlord"} == 1' 30 4

# --- First pull ------------------------------------------------------------
"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps 60 --timeout 60 \
  >"$work/pull1.rank1" 2>"$work/pull1.rank1.err" &
p1=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps 60 --timeout 60 \
  >"$work/pull1.rank0" 2>"$work/pull1.rank0.err" || fail "rank 0 pull failed: $(cat "$work/pull1.rank0.err")"
wait "$p1" || fail "rank 1 pull failed: $(cat "$work/pull1.rank1.err")"

planner="instance=\"127.0.0.1:$m_planner\""
loader="instance=\"127.0.0.1:$m_loader1\""
loaders="instance=~\"127.0.0.1:($m_loader1|$m_loader2)\""
constructor="instance=\"127.0.0.1:$m_constructor\""

# Series appear once a scrape after the pull has landed.
# A trainer reports the steps it has received with each request, so the step a rank
# reached lags the last batch by up to the prefetch depth.
check "ranks reach step 50" wait_prom "overlord_rank_step{$constructor} >= 50" 15 2
for series in \
  "overlord_node_info{$planner,role=\"planner\"}" \
  "overlord_node_info{$loader,node=\"loader-1\",role=\"loader\"}" \
  "overlord_node_healthy{$constructor} == 1" \
  "overlord_planner_imbalance{$planner} >= 1" \
  "overlord_planner_step_imbalance_count{$planner} >= 60" \
  "overlord_planner_step_imbalance_bucket{$planner,le=\"+Inf\"} >= 60" \
  "overlord_planner_steps_total{$planner} >= 60" \
  "overlord_checkpoint_last_bytes{$planner,kind=\"snapshot\"} > 0" \
  "overlord_checkpoint_write_seconds_count{$planner,kind=\"delta\"} >= 60" \
  "overlord_checkpoint_write_seconds_count{$planner,kind=\"snapshot\"} >= 6" \
  "overlord_rank_batches_served_total{$constructor,rank=\"0\"} >= 60" \
  "overlord_rank_batches_served_total{$constructor,rank=\"1\"} >= 60" \
  "overlord_rank_prefetch_depth{$constructor,rank=\"0\"}" \
  "overlord_rank_wait_seconds_count{$constructor,rank=\"0\"}" \
  "overlord_rank_wait_seconds_bucket{$constructor,rank=\"0\",le=\"+Inf\"}" \
  "overlord_source_documents_total{$loaders,source=\"sotu\"} > 0" \
  "overlord_source_bytes_total{$loaders,source=\"mail\"} > 0" \
  "overlord_source_tokens_total{$loaders,source=\"moby\"} > 0" \
  "overlord_source_document_seconds_count{$loaders,source=\"mail\"} > 0" \
  "overlord_source_workers{$loaders,source=\"mail\"} == 1" \
  "overlord_source_buffered_documents{$loaders,source=\"sotu\"}" \
  "overlord_source_buffered_bytes{$loaders,source=\"sotu\"}" \
  "overlord_source_held_bytes{$loaders,source=\"mail\"} > 0" \
  "overlord_source_bad_input_total{$loaders,source=\"broken\",kind=\"malformed_json\"} >= 2" \
  "overlord_source_bad_input_total{$loaders,source=\"broken\",kind=\"missing_field\"} >= 1" \
  "overlord_source_bad_input_total{$loaders,source=\"mail\",kind=\"malformed_json\"} == 0" \
  "overlord_source_bad_input_total{$loaders,source=\"moby\",kind=\"invalid_utf8\"}"; do
  check "series present: $series" wait_prom "$series" 10
done

# Every buffered document's tokens are among those a pool holds.
check "held bytes cover buffered bytes" wait_prom \
  "overlord_source_held_bytes{$loaders} - overlord_source_buffered_bytes{$loaders} >= 0" 10 4

# A node exports only what it runs.
check "loader exports no rank series" \
  test "$(prom_sum "overlord_rank_step{$loaders}")" = none
check "constructor exports no source series" \
  test "$(prom_sum "overlord_source_documents_total{$constructor}")" = none
check "planner exports no source series" \
  test "$(prom_sum "overlord_source_documents_total{$planner}")" = none

# --- Log controls ----------------------------------------------------------
check "loader-1 log is JSON lines with ids as fields" /usr/bin/python3 - "$work/loader-1.log" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "empty log"
joined = False
for line in lines:
    entry = json.loads(line)
    assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    assert entry["time"].endswith("Z"), entry
    if "joined the planner" in entry["message"]:
        joined = entry.get("node") == "loader-1" and entry.get("role") == "loader"
assert joined, "no join line with node and role fields"
PY
no_source_debug() {
  ! grep -q '"level":"debug","logger":"sources"' "$1"
}
check "no sources debug lines before the change" no_source_debug "$work/loader-1.log"

"$ctl" --planner "127.0.0.1:$planner_port" log-level --node loader-1 sources debug \
  >"$work/loglevel.out" 2>&1 || true
check "log-level names the node it reached" \
  grep -q "logger sources set to debug on node=loader-1" "$work/loglevel.out"
"$ctl" --planner "127.0.0.1:$planner_port" log-level transport info >"$work/everywhere.out" 2>&1 || true
check "log-level without --node reaches every node" grep -q \
  "logger transport set to info on the planner, node=constructor-1, node=loader-1, node=loader-2$" \
  "$work/everywhere.out"
"$ctl" --planner "127.0.0.1:$planner_port" log-level bogus debug >"$work/bogus.out" 2>&1 || true
check "unknown logger is rejected" grep -q "unknown logger 'bogus'" "$work/bogus.out"
"$ctl" --planner "127.0.0.1:$planner_port" log-level --node nobody sources debug \
  >"$work/nobody.out" 2>&1 || true
check "unknown node is rejected" grep -q "no running node with id nobody" "$work/nobody.out"
"$ctl" --planner "127.0.0.1:$planner_port" status >"$work/status.txt"
check "status shows the new level" \
  grep -E -q "^loader-1 .*sources=debug" "$work/status.txt"
check "status keeps other nodes' levels" \
  grep -E -q "^constructor-1 .*sources=info" "$work/status.txt"

# --- A drain, then a second pull: counters move ----------------------------
documents_before=$(prom_sum "sum(overlord_source_documents_total{$loader})")
batches_before=$(prom_sum "sum(overlord_rank_batches_served_total{$constructor})")
steps_before=$(prom_sum "overlord_planner_steps_total{$planner}")
"$ctl" --planner "127.0.0.1:$planner_port" drain loader-2 >"$work/drain.out"

"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --first-step 60 --steps 100 \
  --timeout 60 >"$work/pull2.rank1" 2>"$work/pull2.rank1.err" &
p1=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --first-step 60 --steps 100 \
  --timeout 60 >"$work/pull2.rank0" 2>"$work/pull2.rank0.err" || fail "second rank 0 pull failed: $(cat "$work/pull2.rank0.err")"
wait "$p1" || fail "second rank 1 pull failed: $(cat "$work/pull2.rank1.err")"

check "source documents counter increases" grew \
  "$(growth_within "sum(overlord_source_documents_total{$loader})" "$documents_before" 15)"
check "batches served counter increases" grew \
  "$(growth_within "sum(overlord_rank_batches_served_total{$constructor})" "$batches_before" 15)"
check "planned steps counter increases" grew \
  "$(growth_within "overlord_planner_steps_total{$planner}" "$steps_before" 15)"
check "drain is counted as a loader failover" \
  wait_prom "overlord_failovers_total{$planner,kind=\"loader\"} >= 1" 10
check "rate() works on the documents counter" \
  at_least "$(prom_sum "sum(rate(overlord_source_documents_total{$loader}[30s]))")" 0

check "sources debug lines appear after the change" \
  grep -q '"level":"debug","logger":"sources","message":"source=' "$work/loader-1.log"
check "debug lines carry the shard as a field" /usr/bin/python3 - "$work/loader-1.log" <<'PY'
import json, sys
debug = [json.loads(l) for l in open(sys.argv[1])
         if '"level":"debug","logger":"sources"' in l]
assert debug, "no debug lines"
assert all("source" in d and "shard" in d for d in debug), debug[0]
PY
check "constructor log has no sources debug lines" \
  no_source_debug "$work/constructor-1.log"

# --- The planner dies: nodes report unhealthy while they wait for it ------
kill -9 "$planner_pid"
unhealthy() {
  for _ in $(seq 100); do
    local reply
    reply=$(http_get "http://127.0.0.1:$1/healthz")
    [[ $reply == 503*"lost the planner"* ]] && return 0
    sleep 0.1
  done
  return 1
}
check "loader healthz is 503 without the planner" unhealthy "$m_loader1"
check "constructor healthz is 503 without the planner" unhealthy "$m_constructor"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] && rm -rf "$work"
[[ $failed -eq 0 ]]
