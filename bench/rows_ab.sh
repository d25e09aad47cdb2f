#!/usr/bin/env bash
# Any rows against a fresh 3-node Cairn cluster from the binaries in
# BIN_DIR, with the members' CPU per op; like put_ab.sh, run it for two
# builds in turn (A B A B) to compare them:
#
#   ROWS="put:1 put:64 put:256 range-s:64" bench/rows_ab.sh old/release old
#   ROWS="put:1 put:64 put:256 range-s:64" bench/rows_ab.sh target/release new
#
# ROWS lists workload:clients pairs (cairn-bench --workload names),
# DURATION (5s) a row's length. A 2 s put warm-up runs first, so reads
# find keys.
set -euo pipefail
BIN=${1:?usage: rows_ab.sh BIN_DIR LABEL}
LABEL=${2:-cairn}
# shellcheck source=bench/cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
start_cluster "$BIN" 2679
# CPU ticks used by the three members so far (utime + stime).
server_cpu() { members_stat_sum '$14 + $15'; }
"$BIN/cairn-bench" --endpoints "$EPS" --workload put --clients 64 --duration 2s >/dev/null 2>&1 || true
for row in ${ROWS:-put:1 put:64 put:256 range-s:64}; do
    workload=${row%%:*}
    clients=${row##*:}
    before=$(server_cpu)
    line=$("$BIN/cairn-bench" --endpoints "$EPS" --workload "$workload" --clients "$clients" \
        --duration "${DURATION:-5s}" 2>&1 | tail -1)
    after=$(server_cpu)
    ops=$(echo "$line" | awk '{print $(NF-5)}')
    us=$(awk -v t=$((after - before)) -v o="$ops" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (o > 0) printf "%.1f", t / hz * 1e6 / o; else print "-" }')
    echo "$LABEL $line  server-cpu/op ${us}us"
done
