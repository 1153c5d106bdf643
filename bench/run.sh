#!/usr/bin/env bash
# `make bench`: Runnel's benchmark. Builds the broker, the load generator (bench/, a Cargo package
# of its own on librdkafka) and the nullbroker instrument from ../shared/tools/nullbroker, then runs
# the same client load against the nullbroker (the ceiling: a broker that stores nothing) and
# against a fresh Runnel, measuring the broker process from /proc, and prints one table.
# Figures are printed, never asserted: the exit code is non-zero only if the run itself broke.
#
# Knobs (environment):
#   BENCH_MESSAGES=1000000  BENCH_SIZE=100  BENCH_REPEAT=3   throughput scenarios (median run reported)
#   BENCH_LATENCY_RATE=10000  BENCH_LATENCY_SECONDS=10  BENCH_LATENCY_PARTITIONS=6
#   BENCH_IDLE_TOPICS=1000  BENCH_IDLE_CONNS=500
#   BENCH_GROUP_MEMBERS=4  BENCH_GROUP_PARTITIONS=8  BENCH_GROUP_TIMEOUT_S=45   consumer-group scenario
#   BENCH_TXN_COUNT=2000  BENCH_TXN_SECONDS=25  BENCH_IDEM_MESSAGES=1000000   exactly-once scenarios
#                             (the idempotence on/off runs go to the nullbroker as well)
#   BENCH_COMPACT_BYTES=1073741824  BENCH_COMPACT_RATE_MBPS=20  BENCH_COMPACT_TIMEOUT_S=180   log compaction
#   BENCH_SKIP_COMPACTION=1   no log-compaction scenario
#   BENCH_ONLY=throughput,idle,compaction,security,cluster,groups,shares   run only these phases (default: all; throughput
#                             includes the nullbroker ceiling, the group, latency and exactly-once
#                             scenarios; security is bench/security.py: SASL_SSL vs PLAINTEXT produce,
#                             SCRAM logins/s, broker CPU per GB; needs the compat-tests venv and openssl)
#   BENCH_SECURITY_MESSAGES=200000  BENCH_SECURITY_SIZE=4096   security phase produce runs
#   cluster phase (bench/cluster.py: 3 brokers + etcd, RF 3, acks=all vs one standalone broker;
#                             ack latency at BENCH_LATENCY_RATE; failover time after kill -9):
#   BENCH_CLUSTER_MESSAGES=1000000 BENCH_CLUSTER_SIZE=1024  BENCH_FAILOVERS=3
#   groups phase (bench/groups.py: KIP-848 consumer protocol vs classic, group formation and a
#                             fifth member's rebalance): BENCH_GROUP_REPEAT=3  BENCH_GROUP_HEARTBEAT_MS=250
#   shares phase (bench/shares.py: KIP-932 share group, ShareConsumer processes accepting every record):
#                             BENCH_SHARE_MESSAGES=400000  BENCH_SHARE_SIZE=100  BENCH_SHARE_PARTITIONS=4
#                             BENCH_SHARE_CONSUMERS=4  BENCH_SHARE_TIMEOUT_S=120  BENCH_SHARE_JOIN_S=2  BENCH_SHARE_ACK_MODE=explicit
#   BENCH_SKIP_NULLBROKER=1   no ceiling run;  NULLBROKER_SRC=path to the nullbroker's source
#   BENCH_KEEP=1              keep the broker data directories afterwards (logs and results always stay)
#   BENCH_BUILD_RUNNEL=0      benchmark the existing target/release/runnel without rebuilding it
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MESSAGES=${BENCH_MESSAGES:-1000000}
SIZE=${BENCH_SIZE:-100}
REPEAT=${BENCH_REPEAT:-3}
LAT_RATE=${BENCH_LATENCY_RATE:-10000}
LAT_SECS=${BENCH_LATENCY_SECONDS:-10}
LAT_PARTS=${BENCH_LATENCY_PARTITIONS:-6}
IDLE_TOPICS=${BENCH_IDLE_TOPICS:-1000}
IDLE_CONNS=${BENCH_IDLE_CONNS:-500}
NULLBROKER_SRC=${NULLBROKER_SRC:-$ROOT/../shared/tools/nullbroker}
SETTLE_MAX_S=${BENCH_SETTLE_MAX_S:-10}
CLIENT_TIMEOUT=${BENCH_CLIENT_TIMEOUT_S:-120}
GROUP_MEMBERS=${BENCH_GROUP_MEMBERS:-4}
GROUP_PARTS=${BENCH_GROUP_PARTITIONS:-8}
GROUP_TIMEOUT=${BENCH_GROUP_TIMEOUT_S:-45}
TXN_COUNT=${BENCH_TXN_COUNT:-2000}
TXN_SECS=${BENCH_TXN_SECONDS:-25}
IDEM_MESSAGES=${BENCH_IDEM_MESSAGES:-1000000}
COMPACT_BYTES=${BENCH_COMPACT_BYTES:-1073741824}
COMPACT_RATE=${BENCH_COMPACT_RATE_MBPS:-20}
COMPACT_TIMEOUT=${BENCH_COMPACT_TIMEOUT_S:-180}
ONLY=${BENCH_ONLY:-}
for phase in ${ONLY//,/ }; do
    case $phase in throughput | idle | compaction | security | cluster | groups | shares) ;; *) echo "BENCH_ONLY: unknown phase $phase (throughput, idle, compaction, security, cluster, groups, shares)" >&2; exit 2 ;; esac
done
phase_on() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
RUN_COMPACTION=0
if phase_on compaction && [ "${BENCH_SKIP_COMPACTION:-0}" != 1 ]; then RUN_COMPACTION=1; fi

RUNNEL=$ROOT/target/release/runnel
TOOL=$ROOT/bench/target/release/runnel-bench
NULLBROKER=$ROOT/bench/target/nullbroker/release/nullbroker
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d /tmp/runnel-bench.XXXXXX)
RESULTS=$WORK/results.txt
CLIENT_LOG=$WORK/client.log
: >"$RESULTS"
: >"$CLIENT_LOG"
BROKER_PID=""
STARTED_AT=$(date +%s)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            log "broker pid $BROKER_PID still running 10 s after SIGTERM: SIGKILL"
            echo "NOTE $1: did not exit within 10 s of SIGTERM (killed)" >>"$WORK/notes.txt"
            kill -KILL "$BROKER_PID" 2>/dev/null
        fi
    fi
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=""
}

cleanup() {
    stop_broker cleanup
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"/runnel-data "$WORK"/idle-data "$WORK"/compaction-data "$WORK"/runnel
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Builds, one at a time (the machine has two cores).
if [ "${BENCH_BUILD_RUNNEL:-1}" = 1 ]; then
    log "building runnel (release)"
    cargo build --release --quiet || { log "runnel build failed"; exit 1; }
else
    [ -x "$RUNNEL" ] || { log "$RUNNEL missing (BENCH_BUILD_RUNNEL=0)"; exit 1; }
    log "using the existing $RUNNEL (BENCH_BUILD_RUNNEL=0)"
fi
log "building the load generator (bench/, librdkafka from source on first build)"
cargo build --release --quiet --manifest-path bench/Cargo.toml --target-dir bench/target \
    || { log "bench tool build failed"; exit 1; }
HAVE_NULL=0
if ! phase_on throughput; then
    log "no nullbroker: BENCH_ONLY=$ONLY has no throughput phase"
elif [ "${BENCH_SKIP_NULLBROKER:-0}" != 1 ] && [ -f "$NULLBROKER_SRC/Cargo.toml" ]; then
    log "building the nullbroker from $NULLBROKER_SRC"
    if cargo build --release --quiet --manifest-path "$NULLBROKER_SRC/Cargo.toml" \
        --target-dir bench/target/nullbroker; then
        HAVE_NULL=1
    else
        log "nullbroker build failed: no ceiling figures"
    fi
else
    log "no nullbroker ($NULLBROKER_SRC): no ceiling figures"
fi

# The broker under test is a copy, so a rebuild during the run cannot swap it between phases.
RUNNEL_BUILT=$(date -u -r "$RUNNEL" '+%Y-%m-%d %H:%M UTC')
cp "$RUNNEL" "$WORK/runnel" && RUNNEL=$WORK/runnel

# ---------------------------------------------------------------------------------------------
# Broker process measurements.

ticks() { # utime+stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    s=${s##*) }
    awk '{print $12 + $13}' <<<"$s"
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null; }
reset_peak() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null; } # resets VmHWM to the current RSS
secs() { awk -v t="$1" -v c="$CLK_TCK" 'BEGIN {printf "%.3f", t / c}'; }

# After a client run, waits until the broker is idle (at most 2 ticks of CPU in 0.5 s), at most
# SETTLE_MAX_S; prints the ticks spent meanwhile (background flush and compaction).
settle() {
    local pid=$1 start prev now i
    start=$(ticks "$pid"); prev=$start
    for ((i = 0; i < SETTLE_MAX_S * 2; i++)); do
        sleep 0.5
        now=$(ticks "$pid")
        if ((now - prev <= 2)); then break; fi
        prev=$now
    done
    echo $(($(ticks "$pid") - start))
}

# start_runnel DATA_DIR LOG [RUNNEL ARGS...]: a fresh Runnel on free ports (Kafka listener and its
# metrics listener, so neither collides with a Runnel on the default 9092/9404); sets BROKER_ADDR,
# BROKER_PID and METRICS_URL. Further arguments (e.g. --override key=value) go to the broker.
start_runnel() {
    local port mport data=$1 logf=$2
    shift 2
    port=$("$TOOL" free-port)
    mport=$("$TOOL" free-port)
    while [ "$mport" = "$port" ]; do mport=$("$TOOL" free-port); done
    BROKER_ADDR=127.0.0.1:$port
    METRICS_URL=http://127.0.0.1:$mport/metrics
    "$RUNNEL" --config config/server.properties \
        --override "listeners=PLAINTEXT://$BROKER_ADDR" \
        --override "advertised.listeners=PLAINTEXT://$BROKER_ADDR" \
        --override "log.dirs=$data" \
        --override "metrics.listener=http://127.0.0.1:$mport" "$@" >"$logf" 2>&1 &
    BROKER_PID=$!
    if ! "$TOOL" ping --brokers "$BROKER_ADDR" --timeout-secs 30; then
        log "runnel did not come up; its log:"; tail -20 "$logf" >&2; exit 1
    fi
    log "runnel pid $BROKER_PID on $BROKER_ADDR, metrics $METRICS_URL (data $data)"
}

start_nullbroker() {
    local port
    port=$("$TOOL" free-port)
    BROKER_ADDR=127.0.0.1:$port
    "$NULLBROKER" --port "$port" --partitions 6 >"$WORK/nullbroker.log" 2>&1 &
    BROKER_PID=$!
    "$TOOL" ping --brokers "$BROKER_ADDR" --timeout-secs 30 || { log "nullbroker did not come up"; exit 1; }
    log "nullbroker pid $BROKER_PID on $BROKER_ADDR"
}

# measure TARGET SCENARIO -- CLIENT ARGS...: runs one client, records its RESULT line with the
# broker's CPU (during the run, and afterwards until idle) and peak RSS.
measure() {
    local target=$1 scenario=$2; shift 3
    local t0 t1 bg out line rc hwm
    reset_peak "$BROKER_PID"
    t0=$(ticks "$BROKER_PID")
    out=$("$TOOL" "$@" --brokers "$BROKER_ADDR" 2> >(sed "s/^/  [$target $scenario] /" | tee -a "$CLIENT_LOG" >&2))
    rc=$?
    t1=$(ticks "$BROKER_PID")
    bg=0
    [ "$target" = runnel ] && bg=$(settle "$BROKER_PID")
    hwm=$(status_kb "$BROKER_PID" VmHWM)
    line=$(grep '^RESULT' <<<"$out" | tail -1)
    if [ -z "$line" ]; then
        log "$target $scenario: client printed no RESULT (exit $rc)"
        line="RESULT kind=failed"
    fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        log "$target broker died during $scenario"
        echo "NOTE $target broker process died during $scenario" >>"$WORK/notes.txt"
    fi
    echo "$line target=$target scenario=$scenario exit=$rc cpu_s=$(secs $((t1 - t0))) cpu_bg_s=$(secs "$bg") peak_rss_kb=${hwm:-0}" >>"$RESULTS"
    local rate
    rate=$(grep -oE '(msgs_per_s|achieved_rate)=[0-9]+' <<<"$line" | head -1)
    case $scenario in
        compaction-*) rate=$(grep -oE ' (compaction_wall_s|pass_s|produce_mbps|p99_ms)=[^ ]+' <<<"$line" | paste -sd' ' -) ;;
    esac

    log "$target $scenario: ${rate:-no rate} broker cpu $(secs $((t1 - t0)))s +$(secs "$bg")s bg, peak rss ${hwm:-?} kB"
}

PRODUCE_SCENARIOS=()
for p in 1 6; do for acks in 1 all; do for comp in none lz4; do
    PRODUCE_SCENARIOS+=("p$p acks$acks $comp")
done; done; done
CONSUME_SCENARIOS=("p1 none" "p6 none" "p6 lz4")  # read back what produce-pP-acks1-C wrote

produce_phase() { # TARGET
    local target=$1 spec p acks comp r topics=() name
    for spec in "${PRODUCE_SCENARIOS[@]}"; do
        read -r p acks comp <<<"$spec"
        for ((r = 1; r <= REPEAT; r++)); do topics+=("produce-$p-$acks-$comp-r$r"); done
    done
    for p in 1 6; do
        local list
        list=$(printf '%s\n' "${topics[@]}" | grep -- "-p$p-" | paste -sd, -)
        "$TOOL" create-topics --brokers "$BROKER_ADDR" --topics "$list" --partitions "${p#p}" >/dev/null \
            || log "$target: create-topics failed for $list"
    done
    for spec in "${PRODUCE_SCENARIOS[@]}"; do
        read -r p acks comp <<<"$spec"
        name="produce-$p-$acks-$comp"
        for ((r = 1; r <= REPEAT; r++)); do
            measure "$target" "$name" -- produce --topic "$name-r$r" --messages "$MESSAGES" --size "$SIZE" \
                --acks "${acks#acks}" --compression "$comp" --linger-ms 5 --timeout-secs "$CLIENT_TIMEOUT"
        done
    done
}

# idem_phase TARGET: plain produce of IDEM_MESSAGES x 1 KB records to 4 partitions with acks=all,
# enable.idempotence off and on alternating, REPEAT runs each, on both targets: with idempotence on
# librdkafka costs throughput even against the nullbroker (in-flight requests capped at 5, and a
# ProducerId to get first, retried after 500 ms if no connection is up yet), so the report
# subtracts the ceiling's loss from Runnel's.
idem_phase() {
    local target=$1 r idem topics
    topics=$(for ((r = 1; r <= REPEAT; r++)); do printf 'idem-off-r%d,idem-on-r%d,' "$r" "$r"; done)
    "$TOOL" create-topics --brokers "$BROKER_ADDR" --topics "${topics%,}" --partitions 4 >/dev/null \
        || log "$target: create-topics failed for the idempotence topics"
    for ((r = 1; r <= REPEAT; r++)); do
        for idem in off on; do
            measure "$target" "idem-p4-$idem" -- produce --topic "idem-$idem-r$r" --messages "$IDEM_MESSAGES" --size 1024 \
                --acks all --compression none --linger-ms 5 --timeout-secs "$CLIENT_TIMEOUT" \
                --set "enable.idempotence=$([ "$idem" = on ] && echo true || echo false)"
        done
    done
}

# ---------------------------------------------------------------------------------------------
log "work directory $WORK; $MESSAGES x $SIZE B messages, $REPEAT runs per throughput scenario"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$HAVE_NULL" = 1 ]; then
    log "=== ceiling: nullbroker"
    start_nullbroker
    produce_phase nullbroker
    # Consume ceiling: the nullbroker serves each partition's last stored batch forever, so seed
    # every partition with full batches first (its README), with the scenario's compression.
    for spec in "${CONSUME_SCENARIOS[@]}"; do
        read -r p comp <<<"$spec"
        name="consume-$p-$comp"
        "$TOOL" create-topics --brokers "$BROKER_ADDR" --topics "seed-$name" --partitions "${p#p}" >/dev/null
        for ((part = 0; part < ${p#p}; part++)); do
            "$TOOL" produce --brokers "$BROKER_ADDR" --topic "seed-$name" --partition "$part" --messages 80000 \
                --size "$SIZE" --compression "$comp" --linger-ms 1000 --batch-messages 8000 >/dev/null \
                || log "nullbroker: seeding seed-$name [$part] failed"
        done
        for ((r = 1; r <= REPEAT; r++)); do
            measure nullbroker "$name" -- consume --topic "seed-$name" --messages "$MESSAGES" --timeout-secs "$CLIENT_TIMEOUT"
        done
    done
    # The idempotence runs (the nullbroker answers InitProducerId, and its Produce responses carry
    # no error and increasing base offsets, which is all an idempotent librdkafka producer needs).
    idem_phase nullbroker
    stop_broker nullbroker
fi

if phase_on throughput; then
    log "=== runnel: throughput and latency"
    start_runnel "$WORK/runnel-data" "$WORK/runnel.log"

    produce_phase runnel
    for spec in "${CONSUME_SCENARIOS[@]}"; do
        read -r p comp <<<"$spec"
        for ((r = 1; r <= REPEAT; r++)); do
            measure runnel "consume-$p-$comp" -- consume --topic "produce-$p-acks1-$comp-r$r" --messages "$MESSAGES" \
                --timeout-secs "$CLIENT_TIMEOUT"
        done
    done
    # Consumer group (Runnel only: the nullbroker has no group coordinator). One run: seed a topic with
    # the produce subcommand, then GROUP_MEMBERS subscribe() consumers drain it and one more joins.
    "$TOOL" create-topics --brokers "$BROKER_ADDR" --topics group --partitions "$GROUP_PARTS" >/dev/null \
        || log "runnel: create-topics failed for group"
    "$TOOL" produce --brokers "$BROKER_ADDR" --topic group --messages "$MESSAGES" --size "$SIZE" --acks 1 \
        --linger-ms 5 --timeout-secs "$CLIENT_TIMEOUT" >/dev/null 2> >(sed "s/^/  [runnel group seed] /" | tee -a "$CLIENT_LOG" >&2) \
        || log "runnel: seeding the group topic failed"
    measure runnel "group-p$GROUP_PARTS" -- group --topic group --messages "$MESSAGES" --members "$GROUP_MEMBERS" \
        --timeout-secs "$GROUP_TIMEOUT"
    "$TOOL" create-topics --brokers "$BROKER_ADDR" --topics latency --partitions "$LAT_PARTS" >/dev/null
    measure runnel "latency-$((LAT_RATE / 1000))k" -- latency --topic latency --rate "$LAT_RATE" --seconds "$LAT_SECS" \
        --size "$SIZE" --acks 1 --linger-ms 1
    # Exactly-once. Transactions (Runnel only: the nullbroker has no transactions): 100-record
    # transactions of 1 KB records over 4 partitions, TXN_COUNT of them or TXN_SECS, whichever ends
    # first. Then the idempotence overhead runs, as against the nullbroker.
    "$TOOL" create-topics --brokers "$BROKER_ADDR" --topics txn --partitions 4 >/dev/null \
        || log "runnel: create-topics failed for the txn topic"
    measure runnel "txn-p4-100x1KB" -- txn --topic txn --transactions "$TXN_COUNT" --per-txn 100 --size 1024 \
        --seconds "$TXN_SECS" --timeout-secs 30
    idem_phase runnel
    RUNNEL_CPU_TOTAL=$(secs "$(ticks "$BROKER_PID")")
    stop_broker runnel-throughput
fi

if phase_on idle; then
    log "=== runnel: idle memory"
    start_runnel "$WORK/idle-data" "$WORK/runnel-idle.log"
    sleep 2
    rss0=$(status_kb "$BROKER_PID" VmRSS)
    echo "RESULT kind=idle target=runnel scenario=idle-empty rss_kb=$rss0" >>"$RESULTS"
    out=$("$TOOL" create-topics --brokers "$BROKER_ADDR" --prefix idle- --count "$IDLE_TOPICS" --partitions 1 \
        2> >(tee -a "$CLIENT_LOG" >&2))
    log "$(grep '^RESULT' <<<"$out")"
    sleep 5
    rss1=$(status_kb "$BROKER_PID" VmRSS)
    echo "$(grep '^RESULT' <<<"$out" | sed 's/kind=create-topics/kind=idle/') target=runnel scenario=idle-$IDLE_TOPICS-topics rss_kb=$rss1 base_rss_kb=$rss0" >>"$RESULTS"
    log "idle rss: empty $rss0 kB, with $IDLE_TOPICS topics $rss1 kB"

    CONN_OUT=$WORK/idle-conns.out
    "$TOOL" idle-conns --brokers "$BROKER_ADDR" --count "$IDLE_CONNS" --seconds 8 >"$CONN_OUT" 2> >(tee -a "$CLIENT_LOG" >&2) &
    CONN_PID=$!
    for _ in $(seq 1 300); do grep -q '^READY' "$CONN_OUT" && break; kill -0 $CONN_PID 2>/dev/null || break; sleep 0.1; done
    sleep 2
    rss2=$(status_kb "$BROKER_PID" VmRSS)
    wait $CONN_PID
    rss3=$(status_kb "$BROKER_PID" VmRSS)
    line=$(grep '^RESULT' "$CONN_OUT" | tail -1)
    echo "${line:-RESULT kind=idle-conns} target=runnel scenario=idle-$IDLE_CONNS-conns rss_kb=$rss2 base_rss_kb=$rss1 rss_after_close_kb=$rss3" >>"$RESULTS"
    log "idle rss: with $IDLE_CONNS connections $rss2 kB (before $rss1 kB, after closing $rss3 kB)"
    stop_broker runnel-idle
fi

# Log compaction (Runnel only: the nullbroker stores nothing), on a fresh Runnel whose cleaner
# wakes every second (log.cleaner.backoff.ms=1000, instead of 15 s) so the pass starts promptly
# after the switch. One run: fill one partition with COMPACT_BYTES of 1 KB values over 10,000 keys
# (cleanup.policy=delete, no retention), start a producer paced at COMPACT_RATE MB/s, switch the
# topic to cleanup.policy=compact and wait (watching /metrics) until the cleaner counts its pass.
if [ "$RUN_COMPACTION" = 1 ]; then
    log "=== runnel: log compaction"
    start_runnel "$WORK/compaction-data" "$WORK/runnel-compaction.log" --override log.cleaner.backoff.ms=1000
    COMPACT_LABEL=$(awk -v b="$COMPACT_BYTES" 'BEGIN { if (b >= 1073741824) printf "%gGB", b / 1073741824; else printf "%.0fMB", b / 1048576 }')
    measure runnel "compaction-$COMPACT_LABEL" -- compaction --topic compaction --fill-bytes "$COMPACT_BYTES" \
        --value-size 1024 --keys 10000 --rate-mbps "$COMPACT_RATE" --metrics-url "$METRICS_URL" \
        --timeout-s "$COMPACT_TIMEOUT" --broker-pid "$BROKER_PID" --clk-tck "$CLK_TCK"
    stop_broker runnel-compaction
fi

SECURITY_OUT=""
if phase_on security; then
    log "=== runnel: security (SASL_SSL vs PLAINTEXT, SCRAM logins)"
    if [ -x "$ROOT/.venv/bin/python" ]; then
        mkdir -p "$WORK/security"
        SECURITY_OUT=$("$ROOT/.venv/bin/python" bench/security.py --runnel "$RUNNEL" --work "$WORK/security" \
            --messages "${BENCH_SECURITY_MESSAGES:-200000}" --size "${BENCH_SECURITY_SIZE:-4096}" --repeat "$REPEAT" \
            2> >(sed "s/^/  [security] /" | tee -a "$CLIENT_LOG" >&2))
        grep '^RESULT' <<<"$SECURITY_OUT" >"$WORK/security-results.txt"
    else
        echo "NOTE security phase skipped: no $ROOT/.venv (make py-deps creates it)" >>"$WORK/notes.txt"
    fi
fi

CLUSTER_OUT=""
if phase_on cluster; then
    log "=== runnel: cluster (3 brokers, RF 3, acks=all; failover)"
    if [ -x "$ROOT/.venv/bin/python" ]; then
        CLUSTER_OUT=$("$ROOT/.venv/bin/python" bench/cluster.py --runnel "$RUNNEL" --tool "$TOOL" \
            2> >(sed "s/^/  [cluster] /" | tee -a "$CLIENT_LOG" >&2))
        grep '^RESULT' <<<"$CLUSTER_OUT" >"$WORK/cluster-results.txt"
    else
        echo "NOTE cluster phase skipped: no $ROOT/.venv (make py-deps creates it)" >>"$WORK/notes.txt"
    fi
fi

GROUPS_OUT=""
if phase_on groups; then
    log "=== runnel: consumer groups (KIP-848 consumer protocol vs classic: formation, rebalance)"
    if [ -x "$ROOT/.venv/bin/python" ]; then
        GROUPS_OUT=$("$ROOT/.venv/bin/python" bench/groups.py --runnel "$RUNNEL" \
            2> >(sed "s/^/  [groups] /" | tee -a "$CLIENT_LOG" >&2))
        grep '^RESULT' <<<"$GROUPS_OUT" >"$WORK/groups-results.txt"
    else
        echo "NOTE groups phase skipped: no $ROOT/.venv (make py-deps creates it)" >>"$WORK/notes.txt"
    fi
fi

SHARES_OUT=""
if phase_on shares; then
    log "=== runnel: share groups (KIP-932: ShareConsumer processes accepting every record)"
    if [ -x "$ROOT/.venv/bin/python" ]; then
        SHARES_OUT=$("$ROOT/.venv/bin/python" bench/shares.py --runnel "$RUNNEL" \
            2> >(sed "s/^/  [shares] /" | tee -a "$CLIENT_LOG" >&2))
        grep '^RESULT' <<<"$SHARES_OUT" >"$WORK/shares-results.txt"
    else
        echo "NOTE shares phase skipped: no $ROOT/.venv (make py-deps creates it)" >>"$WORK/notes.txt"
    fi
fi

# ---------------------------------------------------------------------------------------------
echo
echo "Runnel benchmark — $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted src changes'), runnel binary built $RUNNEL_BUILT"
echo "$(nproc) cores, load average before: $LOAD_BEFORE; client: $("$TOOL" version)${ONLY:+; phases: $ONLY}"
if phase_on throughput; then
    echo "$MESSAGES x $SIZE-byte messages, $REPEAT runs per throughput scenario (median shown)"
    echo "producer: linger.ms=5, other librdkafka defaults; consumer: assign() from the beginning, batch reads, fetch.queue.backoff.ms=10"
    echo "group: $GROUP_MEMBERS subscribe() consumers (threads, poll()) on $GROUP_PARTS partitions, then one more joins; librdkafka group defaults"
    echo "exactly-once: up to $TXN_COUNT transactions (or ${TXN_SECS} s) of 100 x 1 KB records over 4 partitions; idempotence on/off: $IDEM_MESSAGES x 1 KB, 4 partitions, acks=all, on both targets"
fi
if [ "$RUN_COMPACTION" = 1 ]; then
    echo "compaction: $COMPACT_BYTES bytes of 1 KB values over 10,000 keys in 1 partition, then cleanup.policy=compact while producing at $COMPACT_RATE MB/s (acks=1, linger.ms=5); broker log.cleaner.backoff.ms=1000"
fi
echo
"$TOOL" report --results "$RESULTS"
echo
[ -n "$SECURITY_OUT" ] && grep -v '^RESULT' <<<"$SECURITY_OUT" | sed '/^$/d' && echo
[ -n "$CLUSTER_OUT" ] && grep -v '^RESULT' <<<"$CLUSTER_OUT" | sed '/^$/d' && echo
[ -n "$GROUPS_OUT" ] && grep -v '^RESULT' <<<"$GROUPS_OUT" | sed '/^$/d' && echo
[ -n "$SHARES_OUT" ] && grep -v '^RESULT' <<<"$SHARES_OUT" | sed '/^$/d' && echo
[ -n "${RUNNEL_CPU_TOTAL:-}" ] && echo "Runnel's total CPU over the throughput phase: ${RUNNEL_CPU_TOTAL}s."
NOTES=$WORK/notes.txt
[ -f "$NOTES" ] && sed 's/^NOTE /  - /' "$NOTES"
if [ -f "$WORK/runnel-compaction.log" ]; then
    n=$(grep -c ' compacted' "$WORK/runnel-compaction.log")
    echo "Compaction broker log: $n 'compacted' lines$([ "$n" -gt 0 ] && echo ', first ones:')"
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/runnel-compaction.log" | grep ' compacted' | head -3 | cut -c1-300 | sed 's/^/    /'
fi
for f in "$WORK/runnel.log" "$WORK/runnel-idle.log" "$WORK/runnel-compaction.log"; do
    [ -f "$f" ] || continue
    n=$(sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -cE ' (WARN|ERROR) ')
    echo "Broker log $(basename "$f"): $n WARN/ERROR lines$([ "$n" -gt 0 ] && echo ', first ones:')"
    sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E ' (WARN|ERROR) ' | head -10 | cut -c1-300 | sed 's/^/    /'
done
n=$(grep -c . "$CLIENT_LOG")
[ "$n" -gt 0 ] && echo "Client stderr: $n lines in $CLIENT_LOG"
echo "Results (one line per run): $RESULTS; broker logs in $WORK. Took $(($(date +%s) - STARTED_AT)) s."
