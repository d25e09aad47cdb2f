# Sourced by the A B scripts in bench/: a fresh 3-member Cairn cluster on
# loopback, killed (and its data removed) when the script exits.
#
#   start_cluster BIN_DIR PORT_PREFIX   # members listen on PORT_PREFIX1..3
#                                       # (clients) and PORT_PREFIX+1 1..3 (peers)
#
# Sets WORK (data and logs), PIDS (the members) and EPS (client endpoints),
# and returns once the cluster takes a put. SERVE_ENV sets environment
# variables for the members only, SERVE_EXTRA adds `cairn serve` flags,
# KEEP_LOGS=DIR keeps the members' logs there.

cluster_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP_LOGS:-}" ]; then cp "$WORK"/n*.log "$KEEP_LOGS"/ 2>/dev/null || true; fi
    rm -rf "$WORK"
}

start_cluster() {
    local bin=$1 client=$2 peer=$(($2 + 1)) i
    WORK=$(mktemp -d)
    PIDS=()
    trap cluster_cleanup EXIT
    local ic="n1=http://127.0.0.1:${peer}1,n2=http://127.0.0.1:${peer}2,n3=http://127.0.0.1:${peer}3"
    for i in 1 2 3; do
        # shellcheck disable=SC2086
        env ${SERVE_ENV:-} "$bin/cairn" serve --name "n$i" --data-dir "$WORK/d$i" \
            --listen-client "127.0.0.1:$client$i" --listen-peer "127.0.0.1:$peer$i" \
            --initial-cluster "$ic" ${SERVE_EXTRA:-} >"$WORK/n$i.log" 2>&1 &
        PIDS+=($!)
    done
    EPS="http://127.0.0.1:${client}1,http://127.0.0.1:${client}2,http://127.0.0.1:${client}3"
    for _ in $(seq 1 100); do
        "$bin/cairn" --endpoints "$EPS" put cluster-ready 1 >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "cluster from $bin did not take a put in 10 s; logs in $WORK" >&2
    return 1
}

# Sum over the members of an awk expression of /proc/PID/stat fields,
# e.g. '$14 + $15' (CPU ticks) or '$10' (minor page faults).
members_stat_sum() {
    local total=0 pid
    for pid in "${PIDS[@]}"; do
        total=$((total + $(awk "{print $1}" "/proc/$pid/stat")))
    done
    echo "$total"
}
