#!/usr/bin/env bash
# User-space instructions per proxied request of `cohort balance`, counted by valgrind's callgrind:
# a figure that a shared, noisy machine does not move much (req/s does), for comparing two builds
# of the balancer (e.g. before and after a change on its request path). Kernel work is not counted.
#
#   bench/balancer_instructions.sh /tmp/cohort-before target/release/cohort
#
# For each round and each binary (interleaved): two Node backends (started once), the balancer under
# callgrind with one worker and instrumentation off, a 3 s wrk warm-up (pools filled), then
# instrumentation on for a `wrk -t1 -c8 -d${SECONDS_:-10}s` run, off, dump; prints instructions per
# request. ROUNDS (default 3). Needs valgrind, wrk, node. Kills only the processes it started.
set -euo pipefail

(($# >= 1)) || { echo "usage: $0 COHORT_BIN [COHORT_BIN ...]" >&2; exit 2; }
for t in valgrind callgrind_control wrk node curl; do
  command -v "$t" >/dev/null || { echo "error: $t not found (apt-get install valgrind wrk curl; node)" >&2; exit 1; }
done
ROUNDS="${ROUNDS:-3}"
LOAD_S="${SECONDS_:-10}"
WORK="$(mktemp -d /tmp/cohort-instr.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() {
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.3; done
  echo "error: nothing answers on port $1" >&2; return 1
}

BACKENDS=()
for i in 1 2; do
  port="$(free_port)"
  node -e "require('http').createServer((q, s) => s.end('hello')).listen($port, '127.0.0.1')" &
  PIDS+=($!)
  BACKENDS+=("$port")
done
for p in "${BACKENDS[@]}"; do wait_http "$p"; done

export COHORT_TCP_MIGRATE_REQ=never
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    port="$(free_port)"
    out="$WORK/callgrind.$round.$(basename "$bin").$$"
    COHORT_HOME="$WORK/home" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
      "$bin" balance --listen "127.0.0.1:$port" --workers 1 --no-access-log \
      --upstream "127.0.0.1:${BACKENDS[0]}" --upstream "127.0.0.1:${BACKENDS[1]}" 2>"$WORK/valgrind.log" &
    vg=$!
    PIDS+=("$vg")
    wait_http "$port"
    wrk -t1 -c8 -d3s "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -i on "$vg" >/dev/null 2>&1
    res="$(wrk -t1 -c8 -d"${LOAD_S}s" "http://127.0.0.1:$port/")"
    callgrind_control -i off "$vg" >/dev/null 2>&1
    callgrind_control -d "$vg" >/dev/null 2>&1
    kill "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
    reqs="$(awk '/requests in/ {print $1}' <<<"$res")"
    ir="$(cat "$out"* | awk '/^totals:/ {s += $2} END {print s + 0}')"
    echo "round $round $bin: $reqs requests, $((ir / reqs)) instructions/request"
  done
done
