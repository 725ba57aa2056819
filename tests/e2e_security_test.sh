#!/usr/bin/env bash
# Transport security on loopback, with credentials from scripts/gen-certs:
#   - a cluster whose CAF links use mutual TLS and whose ZeroMQ links use
#     CURVE delivers the same digests as one process without security;
#   - a node with a certificate from another CA, or with none, cannot
#     join: the planner logs the rejected handshake and the node exits
#     with an error within a bounded time; overlordctl without a
#     certificate fails the same way;
#   - those rejected handshakes do not disturb the running cluster: no
#     node loses its planner link and the next steps keep their digests;
#   - overlord_pull with the right CURVE keys gets batches, and without a
#     key or with an unlisted key gets nothing and exits with an error;
#   - overlordd refuses a non-loopback bind without credentials unless
#     --insecure is given.
set -euo pipefail
source tests/e2e_lib.sh

overlordd=actors/overlordd
pull=tools/overlord_pull
ctl=tools/overlordctl
gen_certs=scripts/gen-certs
data=$(demo_data_dir)
work=$(mktemp -d "${TEST_TMPDIR:-/tmp}/e2e-security.XXXXXX")
passed=0
failed=0
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

same_digests() {
  cmp -s <(digests_of "$1") <(digests_of "$2")
}



# Waits up to 10 s for `pattern` in `file`.
wait_for_line() {
  local pattern=$1 file=$2
  for _ in $(seq 100); do
    grep -q "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

write_demo_config "$work/job.yaml" "$data"
steps=40
certs=$work/certs
other=$work/other
"$gen_certs" "$certs" >/dev/null
"$gen_certs" --ca-name "Another CA" "$other" >/dev/null
check "gen-certs writes every file" bash -c "
  for f in ca.pem ca-key.pem planner.pem planner-key.pem node.pem node-key.pem \
           client.pem client-key.pem node.curve-secret node.curve-public \
           client.curve-secret client.curve-public curve-authorized; do
    test -s '$certs/'\$f || exit 1
  done"
check "certificates name loopback" bash -c \
  "openssl x509 -in '$certs/node.pem' -noout -ext subjectAltName | grep -q 'IP Address:127.0.0.1'"

# --- Reference: one process, no security -------------------------------
port=$(free_ports 2)
"$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" 2>"$work/all.log" &
all=$!
pids+=("$all")
"$pull" --endpoint "127.0.0.1:$((port + 1))" --rank 1 --steps $((2 * steps)) --timeout 60 >"$work/all.rank1" &
p1=$!
"$pull" --endpoint "127.0.0.1:$port" --rank 0 --steps $((2 * steps)) --timeout 60 >"$work/all.rank0"
wait "$p1"
kill -TERM "$all"
wait "$all" || true

# --- Cluster with TLS and CURVE ----------------------------------------
tls_planner=(--tls-cert "$certs/planner.pem" --tls-key "$certs/planner-key.pem" --tls-ca "$certs/ca.pem")
tls_node=(--tls-cert "$certs/node.pem" --tls-key "$certs/node-key.pem" --tls-ca "$certs/ca.pem")
tls_client=(--tls-cert "$certs/client.pem" --tls-key "$certs/client-key.pem" --tls-ca "$certs/ca.pem")
curve_node=(--curve-secret "$certs/node.curve-secret" --curve-authorized "$certs/curve-authorized")
curve_client=(--curve-secret "$certs/client.curve-secret" --curve-server-public "$certs/node.curve-public")

base_port=$(free_ports 4)
planner_port=$(free_ports 1)
"$overlordd" --role planner --config "$work/job.yaml" --set base_port="$base_port" \
  --set planner_port="$planner_port" "${tls_planner[@]}" 2>"$work/planner.log" &
pids+=($!)
wait_for_line "planner listening" "$work/planner.log"
check "planner announces mutual TLS" grep -q "CAF over mutual TLS" "$work/planner.log"

"$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id loader-1 \
  "${tls_node[@]}" "${curve_node[@]}" 2>"$work/loader.log" &
pids+=($!)
"$overlordd" --role constructor --planner "127.0.0.1:$planner_port" --node-id constructor-1 \
  "${tls_node[@]}" "${curve_node[@]}" 2>"$work/constructor.log" &
pids+=($!)

"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps $steps --timeout 60 \
  "${tls_client[@]}" "${curve_client[@]}" >"$work/secure.rank1" 2>"$work/secure.rank1.err" &
p1=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps $steps --timeout 60 \
  "${tls_client[@]}" "${curve_client[@]}" >"$work/secure.rank0" 2>"$work/secure.rank0.err" || true
wait "$p1" || true
check "rank 0 digests equal with TLS and CURVE" \
  cmp -s <(digests_of "$work/all.rank0" | head -n $steps) <(digests_of "$work/secure.rank0")
check "rank 1 digests equal with TLS and CURVE" \
  cmp -s <(digests_of "$work/all.rank1" | head -n $steps) <(digests_of "$work/secure.rank1")
check "nodes are not rejected" bash -c "! grep -q 'handshake rejected' '$work/loader.log' '$work/constructor.log'"

"$ctl" --planner "127.0.0.1:$planner_port" "${tls_client[@]}" status --json >"$work/status.json"
check "overlordctl with certificate works" grep -q '"ranks"' "$work/status.json"

# Trainers without the right CURVE key get nothing.
status=0
timeout 30 "$pull" --endpoint "127.0.0.1:$base_port" --rank 0 --steps 1 --first-step $steps \
  --timeout 3 >"$work/nokey.out" 2>"$work/nokey.err" || status=$?
check "pull without key fails" test "$status" -eq 1
check "pull without key gets no batch" test ! -s "$work/nokey.out"
check "pull without key explains the handshake" grep -q "without a completed handshake" "$work/nokey.err"
status=0
timeout 30 "$pull" --endpoint "127.0.0.1:$base_port" --rank 0 --steps 1 --first-step $steps \
  --timeout 3 --curve-secret "$other/client.curve-secret" \
  --curve-server-public "$certs/node.curve-public" >"$work/wrongkey.out" 2>"$work/wrongkey.err" || status=$?
check "pull with unlisted key fails" test "$status" -eq 1
check "pull with unlisted key gets no batch" test ! -s "$work/wrongkey.out"
check "pull with unlisted key is told why" grep -q "rejected this client" "$work/wrongkey.err"
check "constructor logs the unlisted key" \
  grep -qF "rejected a ZeroMQ client at 127.0.0.1 whose CURVE key $(head -n 1 "$other/client.curve-public")" \
  "$work/constructor.log"

# Nodes that must not join the running cluster. Each failed handshake
# leaves an entry in OpenSSL's error queue of the planner's I/O thread.
# The cluster must keep its links and serve the next steps unchanged.
start=$(date +%s)
status=0
# --join-timeout-ms bounds the retries a node makes while the planner
# cannot be reached, which is how a rejected handshake looks to it.
timeout 30 "$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id intruder \
  --join-timeout-ms 2000 \
  --tls-cert "$other/node.pem" --tls-key "$other/node-key.pem" --tls-ca "$other/ca.pem" \
  2>"$work/other-ca.log" || status=$?
check "node from another CA exits with error" test "$status" -eq 1
check "node from another CA names the cause" \
  grep -q "cannot reach the planner.*same CA" "$work/other-ca.log"
status=0
timeout 30 "$overlordd" --role loader --planner "127.0.0.1:$planner_port" --node-id plain \
  --join-timeout-ms 2000 \
  2>"$work/no-cert.log" || status=$?
check "node without certificate exits with error" test "$status" -eq 1
check "node without certificate names the cause" \
  grep -q "cannot reach the planner" "$work/no-cert.log"
check "rejected nodes exit within 20 s" test $(($(date +%s) - start)) -le 20
# A node with the CA's certificate but without the CURVE keys of the
# other nodes would fail every payload and batch handshake once it takes
# over work, so the planner turns it away at its join.
status=0
timeout 30 "$overlordd" --role constructor --planner "127.0.0.1:$planner_port" \
  --node-id no-curve "${tls_node[@]}" 2>"$work/no-curve.log" || status=$?
check "node without CURVE exits with error" test "$status" -ne 0 -a "$status" -ne 124
check "node without CURVE names the cause" \
  grep -q "does not use CURVE and the job's other nodes do" "$work/no-curve.log"
check "planner logs rejected handshakes" wait_for_line "TLS handshake rejected peer=127.0.0.1" "$work/planner.log"
status=0
timeout 30 "$ctl" --planner "127.0.0.1:$planner_port" --timeout 5 status >/dev/null \
  2>"$work/ctl-plain.err" || status=$?
check "overlordctl without certificate fails" test "$status" -eq 1
check "overlordctl log-level works with certificate" \
  timeout 30 "$ctl" --planner "127.0.0.1:$planner_port" "${tls_client[@]}" --timeout 10 \
  log-level actors info
# A certificate file that does not exist is a usage mistake (exit 2),
# reported by its name without the usage text.
for tool in ctl pull; do
  status=0
  if [[ $tool == ctl ]]; then
    timeout 30 "$ctl" --planner "127.0.0.1:$planner_port" --tls-cert "$work/absent.pem" \
      --tls-key "$certs/client-key.pem" --tls-ca "$certs/ca.pem" status \
      >/dev/null 2>"$work/absent-$tool.err" || status=$?
  else
    timeout 30 "$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps 1 \
      --tls-cert "$work/absent.pem" --tls-key "$certs/client-key.pem" \
      --tls-ca "$certs/ca.pem" >/dev/null 2>"$work/absent-$tool.err" || status=$?
  fi
  check "$tool with a missing certificate exits 2" test "$status" -eq 2
  check "$tool names the missing certificate" grep -q "absent.pem: cannot open" "$work/absent-$tool.err"
  check "$tool prints no usage for a missing certificate" bash -c "! grep -q usage '$work/absent-$tool.err'"
done
# Connections that send bytes that are not TLS at all, like a port scan.
for _ in 1 2 3 4 5; do
  timeout 5 bash -c "printf 'GET / HTTP/1.0\r\n\r\n' >/dev/tcp/127.0.0.1/$planner_port" 2>/dev/null || true
done

"$pull" --planner "127.0.0.1:$planner_port" --rank 1 --steps $steps --first-step $steps \
  --timeout 60 "${tls_client[@]}" "${curve_client[@]}" >"$work/after.rank1" 2>"$work/after.rank1.err" &
p1=$!
"$pull" --planner "127.0.0.1:$planner_port" --rank 0 --steps $steps --first-step $steps \
  --timeout 60 "${tls_client[@]}" "${curve_client[@]}" >"$work/after.rank0" 2>"$work/after.rank0.err" || true
wait "$p1" || true
check "rank 0 digests equal after rejected joins" \
  cmp -s <(digests_of "$work/all.rank0" | tail -n +$((steps + 1))) <(digests_of "$work/after.rank0")
check "rank 1 digests equal after rejected joins" \
  cmp -s <(digests_of "$work/all.rank1" | tail -n +$((steps + 1))) <(digests_of "$work/after.rank1")
check "no node left the job" bash -c "! grep -q 'left the job' '$work/planner.log'"
check "no node lost the planner" bash -c \
  "! grep -q 'lost the planner' '$work/loader.log' '$work/constructor.log'"

cleanup
pids=()

# --- Non-loopback binds --------------------------------------------------
port=$(free_ports 2)
status=0
timeout 30 "$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" \
  --set bind=0.0.0.0 2>"$work/open.log" || status=$?
check "non-loopback bind without keys is refused" test "$status" -eq 2
check "refusal says why and how to fix" \
  grep -q "0.0.0.0 because it is not a loopback address.*--curve-secret and --curve-authorized.*--insecure" \
  "$work/open.log"
status=0
timeout 30 "$overlordd" --role loader --planner 127.0.0.1:1 --bind 0.0.0.0 \
  2>"$work/open-node.log" || status=$?
check "node on non-loopback bind without TLS is refused" test "$status" -eq 2
check "node refusal names the TLS flags" \
  grep -q "CAF port without TLS.*--tls-cert, --tls-key and --tls-ca" "$work/open-node.log"
"$overlordd" --role all --config "$work/job.yaml" --set base_port="$port" \
  --set bind=0.0.0.0 --insecure 2>"$work/insecure.log" &
insecure=$!
pids+=("$insecure")
check "--insecure allows the bind" wait_for_line "started: role=all" "$work/insecure.log"
kill -TERM "$insecure"
wait "$insecure" || true

echo "$passed passed, $failed failed"
if [[ $failed -gt 0 ]]; then
  for log in "$work"/*.log "$work"/*.err; do
    echo "--- $log" >&2
    tail -n 40 "$log" >&2
  done
fi
[[ $failed -eq 0 ]] && rm -rf "$work"
[[ $failed -eq 0 ]]
