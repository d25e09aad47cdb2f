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
# shellcheck source=bench/cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
start_cluster "$BIN" 2681
# CPU ticks, or minor page faults (fresh memory faulted in inside an
# apply is a stall on every replica at once), of the members so far.
server_cpu() { members_stat_sum '$14 + $15'; }
server_faults() { members_stat_sum '$10'; }
before=$(server_cpu)
faults_before=$(server_faults)
"$BIN/cairn-bench" --endpoints "$EPS" --label "$LABEL" --workload claims \
    --clients "${CLIENTS:-16}" --duration "${DURATION:-5s}" \
    --claims-batches "${BATCHES:-16,1000}" ${EXTRA:-}
after=$(server_cpu)
echo "$LABEL server minor faults for the whole run: $(($(server_faults) - faults_before))"
echo "$LABEL server CPU for the whole run: $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }') s"
