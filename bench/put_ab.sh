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
# SERVE_ENV=TOKIO_WORKER_THREADS=1; see bench/cluster.sh); ROWS (default
# "1 64 256") picks the client counts, DURATION (5s) a row's length.
set -euo pipefail
BIN=${1:?usage: put_ab.sh BIN_DIR LABEL}
LABEL=${2:-cairn}
# shellcheck source=bench/cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
start_cluster "$BIN" 2679
# CPU ticks used by the three members so far (utime + stime).
server_cpu() { members_stat_sum '$14 + $15'; }
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
