#!/usr/bin/env bash
# CPU per operation of each thread of a fresh 3-node Cairn cluster from
# the binaries in BIN_DIR, under one cairn-bench workload: which threads
# of which member a request costs, and how often each blocks (voluntary
# context switches), over 4 s in the middle of an 8 s run.
#
#   bench/threads.sh target/release put 1 --target-leader
#   bench/threads.sh target/release claims 1 --target-leader --claims-batches 1000
#
# Arguments after the client count go to cairn-bench. The op count is the
# first row's ops/s (the claims workload's first row is its offload row).
# SERVE_ENV sets environment variables for the members only.
set -euo pipefail
BIN=${1:?usage: threads.sh BIN_DIR WORKLOAD CLIENTS [cairn-bench flags]}
WL=${2:?workload}
C=${3:?clients}
shift 3
# shellcheck source=bench/cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
start_cluster "$BIN" 2684
# One line per thread: member pid, thread id, name, CPU ticks, voluntary
# context switches.
snapshot() {
    local pid task
    for pid in "${PIDS[@]}"; do
        for task in /proc/"$pid"/task/*; do
            echo "$pid-${task##*/} $(tr ' ' _ <"$task/comm") \
$(awk '{print $14 + $15}' "$task/stat") \
$(awk '/^voluntary_ctxt_switches/ {print $2}' "$task/status")"
        done
    done | sort
}
"$BIN/cairn-bench" --endpoints "$EPS" --workload "$WL" --clients "$C" --duration 8s "$@" \
    >"$WORK/bench" 2>&1 &
BENCH=$!
sleep 2
snapshot >"$WORK/before"
sleep 4
snapshot >"$WORK/after"
wait "$BENCH"
line=$(grep -E "^ *server .*[cw]=$C " "$WORK/bench" | head -1)
echo "$line"
ops=$(echo "$line" | awk '{print $6}')
echo "member-thread      name                CPU per op   blocks per op"
join "$WORK/before" "$WORK/after" | awk -v ops="$ops" -v hz="$(getconf CLK_TCK)" '
    $6 > $3 { printf "%-18s %-18s %8.1f us %10.2f\n", $1, $2, ($6 - $3) / hz / 4 / ops * 1e6, ($7 - $4) / 4 / ops }'
