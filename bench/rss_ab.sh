#!/usr/bin/env bash
# Peak memory of a fresh 3-node Cairn cluster after a put load: put c=64 for
# DURATION (default 25s, i.e. a few snapshots at the default 100 000
# entries), then each member's VmHWM/VmRSS. Run two builds in turn (A B A B):
#
#   bench/rss_ab.sh /tmp/cairn-old old; bench/rss_ab.sh target/release/cairn new
#
# Needs target/release/cairn-bench (cargo build --release -p cairn-bench).
set -u
BIN=$1; LABEL=$2; D=${DURATION:-25s}
W=$(mktemp -d); PIDS=()
IC="n1=http://127.0.0.1:26801,n2=http://127.0.0.1:26802,n3=http://127.0.0.1:26803"
for i in 1 2 3; do $BIN serve --name n$i --data-dir $W/d$i --listen-client 127.0.0.1:2679$i --listen-peer 127.0.0.1:2680$i --initial-cluster "$IC" > $W/n$i.log 2>&1 & PIDS+=($!); done
EPS=http://127.0.0.1:26791,http://127.0.0.1:26792,http://127.0.0.1:26793
for _ in $(seq 1 100); do $BIN --endpoints $EPS put ready 1 >/dev/null 2>&1 && break; sleep 0.1; done
"${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/release/cairn-bench" --endpoints $EPS --workload put --clients 64 --duration $D 2>&1 | grep "put c=64" | tail -1
out="$LABEL:"
for p in "${PIDS[@]}"; do out="$out $(awk '/VmHWM/{printf "%d", $2/1024}' /proc/$p/status)/$(awk '/VmRSS/{printf "%d", $2/1024}' /proc/$p/status)"; done
echo "$out MiB (peak/now)"
for p in "${PIDS[@]}"; do kill -KILL $p; done; wait 2>/dev/null || true; rm -rf "$W"
