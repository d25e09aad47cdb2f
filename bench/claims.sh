#!/usr/bin/env bash
# The block-claims rows (CanOffload, Register, MatchPrefix at 16 and 1,000
# keys per request) against a fresh 3-node Cairn cluster from the binaries
# in BIN_DIR. Run it for two builds in turn to compare them (A B A B):
#
#   cargo build --release -p cairn -p cairn-bench
#   bench/claims.sh target/release new
#
# CLIENTS (default 16), DURATION (default 5s per row) and BATCHES (default
# 16,1000) change the load; SERVE_EXTRA adds `cairn serve` flags. Prints
# the server CPU for the run as well, which load on the machine disturbs
# least; KEEP_LOGS=DIR keeps the members' logs there.
set -euo pipefail
BIN=${1:?usage: claims.sh BIN_DIR LABEL}
LABEL=${2:-cairn}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP_LOGS:-}" ] && cp "$WORK"/n*.log "$KEEP_LOGS"/ 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT
IC="n1=http://127.0.0.1:26821,n2=http://127.0.0.1:26822,n3=http://127.0.0.1:26823"
for i in 1 2 3; do
    # shellcheck disable=SC2086
    "$BIN/cairn" serve --name "n$i" --data-dir "$WORK/d$i" \
        --listen-client "127.0.0.1:2681$i" --listen-peer "127.0.0.1:2682$i" \
        --initial-cluster "$IC" ${SERVE_EXTRA:-} >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
done
EPS=http://127.0.0.1:26811,http://127.0.0.1:26812,http://127.0.0.1:26813
for _ in $(seq 1 100); do
    "$BIN/cairn" --endpoints "$EPS" put claims-ready 1 >/dev/null 2>&1 && break
    sleep 0.1
done
# Sum over the members of an awk expression of /proc/PID/stat fields:
# CPU ticks ($14 + $15), or minor page faults ($10; fresh memory faulted
# in inside an apply is a stall on every replica at once).
server_sum() {
    local total=0 pid
    for pid in "${PIDS[@]}"; do
        total=$((total + $(awk "{print $1}" "/proc/$pid/stat")))
    done
    echo "$total"
}
server_cpu() { server_sum '$14 + $15'; }
server_faults() { server_sum '$10'; }
before=$(server_cpu)
faults_before=$(server_faults)
"$BIN/cairn-bench" --endpoints "$EPS" --label "$LABEL" --workload claims \
    --clients "${CLIENTS:-16}" --duration "${DURATION:-5s}" \
    --claims-batches "${BATCHES:-16,1000}" ${EXTRA:-}
after=$(server_cpu)
echo "$LABEL server minor faults for the whole run: $(($(server_faults) - faults_before))"
echo "$LABEL server CPU for the whole run: $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }') s"
