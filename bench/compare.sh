#!/usr/bin/env bash
# Cairn vs etcd on this machine, same client code (cairn-bench) for both.
#
# Starts a 3-member etcd and a 3-member Cairn on loopback, runs the
# standard suite against each in alternation (etcd, cairn, etcd, cairn, ...;
# ROUNDS rounds each), prints one table with both servers and the ratio per
# row (the MEAN over the rounds: ops/s, p50 and p99 are averaged, max is the
# worst, errors are summed), each member's peak RSS (VmHWM) and CPU time,
# then (unless NO_FAILOVER=1) SIGKILLs each cluster's leader and times the
# first acknowledged write. Kills everything it started on exit.
#
# Usage: bench/compare.sh            (from anywhere; env knobs below)
#   DURATION=5s      time limit of each suite row
#   ROUNDS=2         rounds per server
#   ONLY=etcd|cairn  run one side only
#   NO_FAILOVER=1    skip the failover measurement
#   SKIP_BUILD=1     use the binaries already built
#   TARGET_LEADER=1  send all requests to the leader (default: spread over
#                    all members; followers forward writes)
#   EXTRA_ARGS=...   more cairn-bench flags for the suite (e.g. "--conns 16")
#   TLS=1            both clusters with TLS on client and peer ports and
#                    client certificates required on both (etcd's flags on
#                    both sides; certificates made with openssl)
#   AUTH=1           auth on in both clusters: the bench logs in as a user
#                    whose role grants read-write on every key (set up with
#                    the cairn CLI, which speaks to both)
#   OUT=dir          where results go (default: $TARGET/bench-results/<time>)
#   NO_FLOOR=1       skip the floor probe (cairn-floor) before the clusters start
# Requires: cargo; etcd (installed with apt-get when missing and root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-2}
ONLY=${ONLY:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$TARGET/bench-results/$STAMP}
CAIRN=$TARGET/release/cairn
BENCH=$TARGET/release/cairn-bench
FLOOR=$TARGET/release/cairn-floor

ETCD_CLIENT=(23791 23792 23793)
ETCD_PEER=(23801 23802 23803)
CAIRN_CLIENT=(24791 24792 24793)
CAIRN_PEER=(24801 24802 24803)

log() { printf '[compare %s] %s\n' "$(date +%T)" "$*" >&2; }

mkdir -p "$OUT" "$TARGET"
# Data on the real disk next to the build, not in /tmp (which may be a
# tmpfs, where fsync costs nothing).
WORK=$(mktemp -d "$TARGET/cairn-compare.XXXXXX")
PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    # They are disowned (no job-control noise when one is killed), so poll.
    local t
    for t in $(seq 1 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    # Keep the server logs with the results; drop the data.
    cp "$WORK"/*.log "$OUT"/ 2>/dev/null || true
    rm -rf "$WORK"
    log "stopped ${#PIDS[@]} server processes; results in $OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- setup

want() { [[ -z "$ONLY" || "$ONLY" == "$1" ]]; }

ensure_etcd() {
    if command -v etcd >/dev/null; then
        return 0
    fi
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing etcd-server with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
        # Debian's package may start a default member on :2379; ours use
        # other ports, but do not leave a stray one around.
        if command -v systemctl >/dev/null; then systemctl stop etcd 2>/dev/null || true; fi
    fi
    command -v etcd >/dev/null
}

build() {
    if [[ -n "${SKIP_BUILD:-}" ]]; then
        return 0
    fi
    local try
    for try in 1 2 3; do
        log "cargo build --release -p cairn -p cairn-bench (try $try)"
        if (cd "$ROOT" && cargo build --release -p cairn -p cairn-bench) >"$OUT/build.log" 2>&1; then
            return 0
        fi
        tail -20 "$OUT/build.log" >&2
        [[ $try -lt 3 ]] && { log "build failed; retrying in 60 s (others may be editing)"; sleep 60; }
    done
    log "cairn does not build; building cairn-bench alone and running etcd only"
    (cd "$ROOT" && cargo build --release -p cairn-bench) >>"$OUT/build.log" 2>&1
    CAIRN_BROKEN=1
}

machine_info() {
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo none)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
        echo "nproc: $(nproc)"
        lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Hypervisor)' || true
        free -h | sed -n 1,2p
        echo "disk: $(df -h "$WORK" | tail -1)"
        # 4 KiB synchronous writes: what one fsync'd append costs here,
        # into a preallocated file (data only, as a WAL segment or a redb
        # file that does not grow) and appending (data + metadata).
        local t0 t1
        dd if=/dev/zero of="$WORK/dd.test" bs=1M count=4 conv=fsync 2>/dev/null
        t0=$(date +%s.%N)
        dd if=/dev/zero of="$WORK/dd.test" bs=4k count=500 oflag=dsync conv=notrunc 2>/dev/null
        t1=$(date +%s.%N)
        echo "dd 4k oflag=dsync, overwrite: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) * 1000 / 500 }') ms per write"
        rm -f "$WORK/dd.test"
        t0=$(date +%s.%N)
        dd if=/dev/zero of="$WORK/dd.test" bs=4k count=500 oflag=dsync 2>/dev/null
        t1=$(date +%s.%N)
        rm -f "$WORK/dd.test"
        echo "dd 4k oflag=dsync, append:    $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) * 1000 / 500 }') ms per write"
        echo "etcd: $(etcd --version 2>/dev/null | head -1 || echo missing)"
        echo "cairn-bench flags: --duration $DURATION ${TARGET_LEADER:+--target-leader} $EXTRA_ARGS"
        if [[ -n "${TLS:-}" ]]; then
            echo "TLS: on (client and peer ports, client certificates required)"
        else
            echo "TLS: off"
        fi
    } | tee "$OUT/machine.txt" >&2
}

# The least one client's replicated write takes on this machine this hour
# (crates/cairn-bench/src/floor.rs): three single-threaded processes on
# loopback, one write + fdatasync each, first over bare TCP, then with
# gRPC on every hop (etcd's KV.Put from the client, a StreamAppend stream
# to each follower; floor/grpc.rs), the latter driven by cairn-bench as
# the servers are. Printed beside the put c=1 row at the end. Run before
# the clusters start so that nothing else competes for the cores.
floor_probe() {
    [[ -z "${NO_FLOOR:-}" && -x "$FLOOR" ]] || return 0
    log "floor probe (cairn-floor): bare TCP 3 members synced, unsynced, 1 member; gRPC 3 members"
    : >"$OUT/floor.jsonl"
    local args
    for args in "--members 3" "--members 3 --no-sync" "--members 1"; do
        # shellcheck disable=SC2086
        "$FLOOR" run $args --dir "$WORK/floor" --writes 4000 --duration 8s --json \
            >>"$OUT/floor.jsonl" 2>>"$OUT/floor.log" || log "floor probe '$args' failed (see floor.log)"
    done
    "$FLOOR" grpc-cluster --dir "$WORK/floor" >"$WORK/floor-grpc.url" 2>>"$OUT/floor.log" &
    local pid=$! t
    PIDS+=("$pid") # killed by cleanup if the script stops in between
    for t in $(seq 1 100); do
        [[ -s "$WORK/floor-grpc.url" ]] && break
        sleep 0.1
    done
    if [[ -s "$WORK/floor-grpc.url" ]]; then
        "$BENCH" --endpoints "$(cat "$WORK/floor-grpc.url")" --workload put --clients 1 \
            --duration "$DURATION" --label floor-grpc --json --json-file "$OUT/floor.jsonl" \
            >/dev/null 2>>"$OUT/floor.log" || log "gRPC floor probe failed (see floor.log)"
    else
        log "the gRPC floor cluster did not start (see floor.log)"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$WORK/floor"
    jq -r 'if .probe == "floor" then
             "floor members=\(.members) sync=\(.sync): \(.ops_per_sec | floor)/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms"
           else
             "floor gRPC members=3 sync=true: \(.ops_per_sec | floor)/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms"
           end' "$OUT/floor.jsonl" 2>/dev/null | tee -a "$OUT/machine.txt" >&2 || true
}

# Put c=1 of each server beside the floors: a floor's rate over etcd's is
# the most a 3-member server built that way could reach against etcd at
# one client, this hour.
floor_report() {
    [[ -s "$OUT/floor.jsonl" ]] || return 0
    jq -rs '
      def mean(f): map(f) | add / length;
      (map(select(.probe == "floor" and .members == 3 and .sync)) | first) as $raw
      | (map(select(.server == "floor-grpc")) | first) as $grpc
      | (map(select(.workload == "put" and .clients == 1 and .server != null and .server != "floor-grpc"))
         | group_by(.server)
         | map({server: .[0].server, ops: mean(.ops_per_sec), p50: mean(.p50_ms)})) as $rows
      | ($rows | map(select(.server == "etcd")) | first) as $etcd
      | def row(name; ops; p50): "| \(name) | \(ops | floor) | \(p50 * 1000 | round / 1000) |"
          + (if $etcd == null then " |" else " \(ops / $etcd.ops * 100 | round / 100)× |" end);
        "| put c=1 | ops/s | p50 ms | over etcd |",
        "| --- | ---: | ---: | ---: |",
        (if $raw == null then empty else row("floor, bare TCP (3 members, synced)"; $raw.ops_per_sec; $raw.p50_ms) end),
        (if $grpc == null then empty else row("floor, gRPC on every hop"; $grpc.ops_per_sec; $grpc.p50_ms) end),
        ($rows[] | row(.server; .ops; .p50))
      ' "$OUT/floor.jsonl" "$OUT/results.jsonl" 2>/dev/null | tee "$OUT/floor.md" || true
}

# ---------------------------------------------------------------- clusters

SCHEME=http
TLS_FLAGS=()
if [[ -n "${TLS:-}" ]]; then SCHEME=https; fi

# A CA, a certificate for 127.0.0.1 (every member's, client and peer
# ports) and a client certificate; the bench and the cairn CLI find them
# through CAIRN_CACERT, CAIRN_CERT and CAIRN_KEY.
make_certs() {
    local d=$WORK/certs
    mkdir -p "$d"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$d/ca-key.pem" -out "$d/ca.pem" -days 2 \
        -subj /CN=bench-ca 2>/dev/null
    local who
    for who in server client; do
        openssl req "${ec[@]}" -keyout "$d/$who-key.pem" -out "$d/$who.csr" -subj "/CN=$who" 2>/dev/null
        openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" \
            -CAcreateserial -out "$d/$who.pem" -days 2 \
            -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost') 2>/dev/null
    done
    TLS_FLAGS=(--cert-file "$d/server.pem" --key-file "$d/server-key.pem"
        --trusted-ca-file "$d/ca.pem" --client-cert-auth
        --peer-cert-file "$d/server.pem" --peer-key-file "$d/server-key.pem"
        --peer-trusted-ca-file "$d/ca.pem" --peer-client-cert-auth)
    export CAIRN_CACERT=$d/ca.pem CAIRN_CERT=$d/client.pem CAIRN_KEY=$d/client-key.pem
}

urls() { # urls PORT... -> http://127.0.0.1:P1,... (https:// with TLS=1)
    local out="" p
    for p in "$@"; do out+="${out:+,}$SCHEME://127.0.0.1:$p"; done
    echo "$out"
}

start_etcd() {
    local cluster="" i
    for i in 0 1 2; do cluster+="${cluster:+,}e$((i + 1))=$SCHEME://127.0.0.1:${ETCD_PEER[$i]}"; done
    for i in 0 1 2; do
        local c=${ETCD_CLIENT[$i]} p=${ETCD_PEER[$i]}
        etcd --name "e$((i + 1))" --data-dir "$WORK/etcd$((i + 1))" \
            --listen-client-urls "$SCHEME://127.0.0.1:$c" --advertise-client-urls "$SCHEME://127.0.0.1:$c" \
            --listen-peer-urls "$SCHEME://127.0.0.1:$p" --initial-advertise-peer-urls "$SCHEME://127.0.0.1:$p" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token cairn-bench \
            --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) --logger zap --log-level warn "${TLS_FLAGS[@]}" \
            >"$WORK/etcd$((i + 1)).log" 2>&1 &
        PIDS+=($!)
        disown $!
        echo "${PIDS[-1]}" >"$WORK/pid.$c"
        echo "etcd e$((i + 1)) ${PIDS[-1]}" >>"$WORK/members"
    done
}

start_cairn() {
    local cluster="" i
    for i in 0 1 2; do cluster+="${cluster:+,}n$((i + 1))=$SCHEME://127.0.0.1:${CAIRN_PEER[$i]}"; done
    for i in 0 1 2; do
        local c=${CAIRN_CLIENT[$i]} p=${CAIRN_PEER[$i]}
        RUST_LOG=warn "$CAIRN" serve --name "n$((i + 1))" --data-dir "$WORK/cairn$((i + 1))" \
            --listen-client "127.0.0.1:$c" --listen-peer "127.0.0.1:$p" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) "${TLS_FLAGS[@]}" \
            >"$WORK/cairn$((i + 1)).log" 2>&1 &
        PIDS+=($!)
        disown $!
        echo "${PIDS[-1]}" >"$WORK/pid.$c"
        echo "cairn n$((i + 1)) ${PIDS[-1]}" >>"$WORK/members"
    done
}

# A cluster is ready when its leader acknowledges a put.
wait_ready() { # wait_ready LABEL ENDPOINTS
    local t
    for t in $(seq 1 30); do
        if "$BENCH" --endpoints "$2" --target-leader --workload put --count 1 --duration 3s \
            --op-timeout 2s --label ready --key-prefix ready/ --json 2>/dev/null |
            grep -q '"ops":1,'; then
            log "$1 is ready"
            return 0
        fi
        sleep 1
    done
    log "$1 did not become ready; its logs:"
    tail -20 "$WORK"/"$1"*.log >&2 || true
    return 1
}

# AUTH=1: root, and the user the bench runs as, with a role granting
# read-write on every key (etcdctl's `--prefix ''`), then auth on.
enable_auth() { # enable_auth LABEL ENDPOINTS
    local c=("$CAIRN" --endpoints "$2")
    "${c[@]}" user add root:rootpw >/dev/null
    "${c[@]}" user grant-role root root >/dev/null
    "${c[@]}" user add bench:benchpw >/dev/null
    "${c[@]}" role add bench >/dev/null
    "${c[@]}" role grant-permission --prefix bench readwrite '' >/dev/null
    "${c[@]}" user grant-role bench bench >/dev/null
    "${c[@]}" auth enable >/dev/null
    log "$1: auth on (the bench runs as user bench, read-write on every key)"
}

cpu_ticks() { # total utime+stime of the given PIDs, in clock ticks
    local sum=0 pid
    for pid in "$@"; do
        if [[ -r /proc/$pid/stat ]]; then
            # Fields after the command name (which may contain spaces).
            local rest
            rest=$(sed 's/^.*) //' "/proc/$pid/stat")
            set -- $rest
            sum=$((sum + ${12} + ${13}))
        fi
    done
    echo "$sum"
}

# Busy ticks of the whole machine (user, nice, system, irq, softirq).
sys_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }

pids_of() { awk -v s="$1" '$1 == s { print $3 }' "$WORK/members"; }

run_suite() { # run_suite LABEL ENDPOINTS ROUND
    local label=$1 eps=$2 round=$3
    local pids
    pids=$(pids_of "$label" | xargs)
    local c0 t0 c1 t1 b0 b1
    c0=$(cpu_ticks $pids)
    b0=$(sys_busy)
    t0=$(date +%s.%N)
    log "round $round: $label suite ($DURATION per row)"
    # shellcheck disable=SC2086
    /usr/bin/time -f '%U %S %e' -o "$OUT/$label-r$round.client-time" \
        "$BENCH" --endpoints "$eps" --workload suite --duration "$DURATION" \
        --label "$label" --key-prefix "r$round/" ${TARGET_LEADER:+--target-leader} $EXTRA_ARGS \
        --json --json-file "$OUT/results.jsonl" \
        >"$OUT/$label-r$round.jsonl" 2>"$OUT/$label-r$round.log" || {
        log "$label round $round failed:"
        tail -20 "$OUT/$label-r$round.log" >&2
        return 1
    }
    c1=$(cpu_ticks $pids)
    b1=$(sys_busy)
    t1=$(date +%s.%N)
    local hz cli
    hz=$(getconf CLK_TCK)
    cli=$(awk '{ print $1 + $2 }' "$OUT/$label-r$round.client-time")
    # "other" is everything else on the machine (e.g. someone's build): if
    # it is large, the round competed for the 2 cores and is suspect.
    awk -v l="$label" -v r="$round" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v hz="$hz" \
        -v cli="$cli" -v b0="$b0" -v b1="$b1" -v n="$(nproc)" 'BEGIN {
        wall = t1 - t0; srv = (c1 - c0) / hz; all = (b1 - b0) / hz; other = all - srv - cli
        if (other < 0) other = 0
        printf "%s round %s: wall %.1f s; cores busy avg: servers %.2f, bench client %.2f, other processes %.2f (of %d)\n",
            l, r, wall, srv / wall, cli / wall, other / wall, n }' | tee -a "$OUT/cpu.txt" >&2
}

rss_report() {
    {
        echo "| server | member | pid | peak RSS (VmHWM) | RSS now (VmRSS) |"
        echo "| --- | --- | ---: | ---: | ---: |"
        local server member pid
        while read -r server member pid; do
            if [[ -r /proc/$pid/status ]]; then
                local hwm rss
                hwm=$(awk '/^VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$pid/status")
                rss=$(awk '/^VmRSS/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$pid/status")
                echo "| $server | $member | $pid | $hwm | $rss |"
            else
                echo "| $server | $member | $pid | (exited) | |"
            fi
        done <"$WORK/members"
    } | tee "$OUT/rss.md"
}

failover() { # failover LABEL ENDPOINTS
    log "$1: SIGKILL of the leader until the first acknowledged write"
    # The tool sets BENCH_LEADER_PORT; pid.<port> maps it to the process.
    "$BENCH" --endpoints "$2" --workload failover --label "$1" --key-prefix failover/ \
        --kill-cmd "kill -KILL \$(cat '$WORK'/pid.\$BENCH_LEADER_PORT)" \
        --json --json-file "$OUT/results.jsonl" >"$OUT/$1-failover.jsonl" 2>"$OUT/$1-failover.log" ||
        { log "$1 failover failed:"; tail -5 "$OUT/$1-failover.log" >&2; }
}

# ---------------------------------------------------------------- main

CAIRN_BROKEN=
: >"$WORK/members"
build
if [[ -n "${TLS:-}" ]]; then make_certs; fi
machine_info
floor_probe

ETCD_EPS=$(urls "${ETCD_CLIENT[@]}")
CAIRN_EPS=$(urls "${CAIRN_CLIENT[@]}")
SIDES=()
if want etcd; then
    if ensure_etcd; then
        start_etcd
        SIDES+=(etcd)
    else
        log "etcd is not installed and cannot be installed here: cairn only"
    fi
fi
if want cairn; then
    if [[ -z "$CAIRN_BROKEN" ]]; then
        start_cairn
        SIDES+=(cairn)
    else
        log "cairn did not build: etcd only"
    fi
fi
[[ ${#SIDES[@]} -gt 0 ]] || { log "nothing to run"; exit 1; }
eps_of() { if [[ $1 == etcd ]]; then echo "$ETCD_EPS"; else echo "$CAIRN_EPS"; fi; }
for s in "${SIDES[@]}"; do wait_ready "$s" "$(eps_of "$s")"; done
if [[ -n "${AUTH:-}" ]]; then
    for s in "${SIDES[@]}"; do enable_auth "$s" "$(eps_of "$s")"; done
    # From here on every bench run logs in (cairn-bench reads CAIRN_USER).
    export CAIRN_USER=bench:benchpw
fi

: >"$OUT/results.jsonl"
for round in $(seq 1 "$ROUNDS"); do
    for s in "${SIDES[@]}"; do
        run_suite "$s" "$(eps_of "$s")" "$round"
    done
done

echo
echo "## Peak memory per member (after the suite, before failover)"
echo
rss_report

if [[ -z "${NO_FAILOVER:-}" ]]; then
    for s in "${SIDES[@]}"; do failover "$s" "$(eps_of "$s")"; done
fi

echo
echo "## Results (mean of $ROUNDS rounds; ratio = cairn ops/s / etcd ops/s)"
echo
"$BENCH" --compare "$OUT/results.jsonl" --baseline etcd | tee "$OUT/compare.md"
echo
echo "## Put c=1 against the floor (cairn-floor)"
echo
floor_report
echo
echo "## CPU"
echo
cat "$OUT/cpu.txt"
echo
echo "## Details"
echo
grep -h '"detail"' "$OUT/results.jsonl" | jq -r '"\(.server) \(.workload) c=\(.clients): \(.detail)"' 2>/dev/null | sort -u || true
grep -h '"first_error"' "$OUT/results.jsonl" | jq -r '"\(.server) \(.workload) c=\(.clients): first error: \(.first_error)"' 2>/dev/null || true
