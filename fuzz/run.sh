#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS each (default 300) and prints
# per target: inputs tried, inputs/s, crashes (libFuzzer exits non-zero on a
# crash, leak, timeout or out-of-memory) and peak RSS. Exit status is non-zero
# if any target found anything; reproducers land in fuzz/artifacts/<target>/.
# FUZZ_JOBS parallel workers per target (default 1). Needs cargo-fuzz and a
# nightly toolchain (the Makefile's fuzz-tools target installs cargo-fuzz).
set -uo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-300}"
JOBS="${FUZZ_JOBS:-1}"
TARGETS="${FUZZ_TARGETS:-request record_batch decompress}"
status=0
total=0
cargo +nightly fuzz build -O >/dev/null 2>build.log || { cat build.log; exit 2; }
for t in $TARGETS; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="fuzz-$t.log"
    # -rss_limit_mb: any input making a target use this much memory is a finding.
    # -timeout: any input taking this long is a hang.
    if [ "$JOBS" -gt 1 ]; then
        cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
            -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=1024 -timeout=10 \
            -print_final_stats=1 -jobs="$JOBS" -workers="$JOBS" \
            -artifact_prefix="artifacts/$t/" >"$log" 2>&1
        rc=$?
        cat fuzz-*.log.* 2>/dev/null >>"$log"; rm -f fuzz-[0-9]*.log
    else
        cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
            -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=1024 -timeout=10 \
            -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1
        rc=$?
    fi
    runs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
    rss=$(grep -h 'stat::peak_rss_mb' "$log" | awk '{if ($2>m) m=$2} END {print m+0}')
    crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
    rate=$(( runs / (SECONDS_PER_TARGET > 0 ? SECONDS_PER_TARGET : 1) ))
    echo "cargo-fuzz $t: inputs=$runs seconds=$SECONDS_PER_TARGET rate=${rate}/s crashes=$crashes exit=$rc peak_rss_mb=$rss"
    total=$((total + runs))
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        tail -40 "$log"
    fi
done
echo "cargo-fuzz total: inputs=$total status=$status"
exit $status
