#!/usr/bin/env bash
# Context switches and server CPU per operation of a fresh 3-node Cairn
# cluster from the binaries in BIN_DIR, under one 5 s cairn-bench row:
# how many thread hand-offs a request costs across the three members.
#
#   bench/switches.sh target/release                 # put, 1 client, to the leader
#   WL=watch C=100 EXTRA=" " bench/switches.sh target/release
#
# WL (put), C (1) and EXTRA (--target-leader) choose the row; SERVE_ENV
# sets environment variables for the members only (see bench/cluster.sh).
set -euo pipefail
BIN=${1:?usage: switches.sh BIN_DIR}
# shellcheck source=bench/cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
start_cluster "$BIN" 2679
# Voluntary and involuntary context switches of every member thread.
switches() {
    local sum=0 pid task
    for pid in "${PIDS[@]}"; do
        for task in /proc/"$pid"/task/*; do
            sum=$((sum + $(awk '/ctxt_switches/ {n += $2} END {print n}' "$task/status")))
        done
    done
    echo "$sum"
}
s0=$(switches)
c0=$(members_stat_sum '$14 + $15')
# shellcheck disable=SC2086
line=$("$BIN/cairn-bench" --endpoints "$EPS" ${EXTRA:---target-leader} --workload "${WL:-put}" \
    --clients "${C:-1}" --duration 5s 2>&1 | tail -1)
s1=$(switches)
c1=$(members_stat_sum '$14 + $15')
echo "$line"
# The op count: a put row's ops column, or the watch row's puts.
ops=$(echo "$line" | awk '/puts by/ {print $4; exit} {print $(NF-5)}' | head -1)
awk -v s=$((s1 - s0)) -v o="$ops" -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "per op (%d): %.1f context switches, %.0f us server CPU\n", o, s / o, t / hz * 1e6 / o }'
