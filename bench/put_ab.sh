#!/usr/bin/env bash
# Puts against a fresh 3-node Cairn cluster from the binaries in BIN_DIR,
# at 1, 64 and 256 clients, 5 s each. Run it for two builds in turn to
# compare them side by side (A B A B):
#
#   bench/put_ab.sh target-old/release old; bench/put_ab.sh target/release new
#
# EXTRA=--target-leader sends everything to the leader; SERVE_EXTRA adds
# `cairn serve` flags (e.g. SERVE_EXTRA="--snapshot-entries 100000") and
# SERVE_ENV environment variables for the members only (e.g.
# SERVE_ENV=TOKIO_WORKER_THREADS=1); ROWS (default "1 64 256") picks the client counts, DURATION (5s) a row's
# length.
set -euo pipefail
BIN=${1:?usage: put_ab.sh BIN_DIR LABEL}
LABEL=${2:-cairn}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
IC="n1=http://127.0.0.1:26801,n2=http://127.0.0.1:26802,n3=http://127.0.0.1:26803"
for i in 1 2 3; do
    # shellcheck disable=SC2086
    env ${SERVE_ENV:-} "$BIN/cairn" serve --name "n$i" --data-dir "$WORK/d$i" \
        --listen-client "127.0.0.1:2679$i" --listen-peer "127.0.0.1:2680$i" \
        --initial-cluster "$IC" ${SERVE_EXTRA:-} >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
done
EPS=http://127.0.0.1:26791,http://127.0.0.1:26792,http://127.0.0.1:26793
for _ in $(seq 1 100); do
    "$BIN/cairn" --endpoints "$EPS" put ab-ready 1 >/dev/null 2>&1 && break
    sleep 0.1
done
# CPU seconds used by the three members so far (utime + stime).
server_cpu() {
    local ticks=0 pid
    for pid in "${PIDS[@]}"; do
        ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$ticks"
}
for c in ${ROWS:-1 64 256}; do
    before=$(server_cpu)
    # shellcheck disable=SC2086
    line=$("$BIN/cairn-bench" --endpoints "$EPS" ${EXTRA:-} --workload put --clients "$c" \
        --duration "${DURATION:-5s}" 2>&1 | tail -1)
    after=$(server_cpu)
    # Columns: ... ops ops/s ...; CPU per op is what load on the machine
    # disturbs least.
    ops=$(echo "$line" | awk '{print $(NF-5)}')
    us=$(awk -v t=$((after - before)) -v o="$ops" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (o > 0) printf "%.0f", t / hz * 1e6 / o; else print "-" }')
    echo "$LABEL $line  server-cpu/op ${us}us"
done
