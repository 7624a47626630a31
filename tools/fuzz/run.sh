#!/usr/bin/env bash
# Runs the bevy_p2p_inference libFuzzer targets (stripped binaries in ./bin, built from
# tools/fuzz) in parallel on one machine, then summarises each target's executions and any
# crash, timeout, out-of-memory or leak it found.
#
#   ./run.sh SECONDS_PER_TARGET SUMMARY_FILE [CORES]
#
# Every target runs at once for SECONDS_PER_TARGET seconds, as `-jobs=N -workers=N` independent
# libFuzzer processes sharing one corpus, the CORES (default 16, or nproc if fewer) split
# between the targets (the handshake target, the slowest per input, gets the remainder).
# Work files go to ./work/<target>/ (corpus/, artifacts/, fuzz-<job>.log). Exit status: 0 when
# no target left a crash/timeout/oom/leak file, 1 otherwise, 2 on bad arguments.
#
# The binaries, built here without cargo-fuzz (as it builds them) and carried to a machine
# without cargo (tools/fuzz/bin and tools/fuzz/work are ignored):
#   cd tools/fuzz && RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
#     -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
#     -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
#     -Cdebug-assertions -Coverflow-checks" \
#     cargo +nightly build --release --target x86_64-unknown-linux-gnu --bins
#   mkdir -p bin && for t in handshake links reassembly route_ticket inboxes; do
#     cp target/x86_64-unknown-linux-gnu/release/$t bin/ && strip bin/$t; done
set -u
cd "$(dirname "$0")"
secs=${1:-}
summary=${2:-}
cores=${3:-16}
if [[ -z "$secs" || -z "$summary" || ! "$secs" =~ ^[0-9]+$ || ! "$cores" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS_PER_TARGET SUMMARY_FILE [CORES]" >&2
    exit 2
fi
case "$summary" in /*) ;; *) summary="$PWD/$summary" ;; esac
have=$(nproc 2>/dev/null || echo "$cores")
(( cores > have )) && cores=$have
targets=(handshake links reassembly route_ticket inboxes)
present=()
for t in "${targets[@]}"; do
    if [[ -x "bin/$t" ]]; then present+=("$t"); else echo "skipping $t: bin/$t missing" >&2; fi
done
n=${#present[@]}
(( n == 0 )) && { echo "no fuzz binaries in bin/" >&2; exit 2; }
base=$(( cores / n )); (( base < 1 )) && base=1
extra=$(( cores - base * n )); (( extra < 0 )) && extra=0
declare -A workers
for t in "${present[@]}"; do workers[$t]=$base; done
workers[${present[0]}]=$(( base + extra ))

pids=()
for t in "${present[@]}"; do
    w=${workers[$t]}
    dir="work/$t"
    rm -rf "$dir/artifacts" "$dir"/fuzz-*.log
    mkdir -p "$dir/corpus" "$dir/artifacts"
    echo "$t: $w workers for ${secs}s" >&2
    (
        cd "$dir" &&
        timeout --kill-after=30 $(( secs + 180 )) "../../bin/$t" \
            -jobs="$w" -workers="$w" -max_total_time="$secs" -print_final_stats=1 \
            -timeout=20 -rss_limit_mb=2560 -artifact_prefix=artifacts/ corpus \
            > driver.log 2>&1
    ) &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

{
    status=0
    echo "bevy_p2p_inference fuzz run: $(date -u +%FT%TZ), ${secs}s per target, $cores cores, $(uname -n)"
    printf '%-14s %8s %14s %8s %8s %8s %8s %6s %8s\n' target workers executions crash timeout oom leak logs corpus
    total=0
    for t in "${present[@]}"; do
        dir="work/$t"
        execs=0
        logs=0
        for log in "$dir"/fuzz-*.log; do
            [[ -f "$log" ]] || continue
            logs=$(( logs + 1 ))
            n_exec=$(grep -a 'stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}')
            if [[ -z "$n_exec" ]]; then
                # A job that died before its final stats: its last status line.
                n_exec=$(grep -aoE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
            fi
            execs=$(( execs + ${n_exec:-0} ))
        done
        count() { find "$dir/artifacts" -maxdepth 1 -type f -name "$1-*" | wc -l; }
        crash=$(count crash); tmo=$(count timeout); oom=$(count oom); leak=$(count leak)
        corpus=$(find "$dir/corpus" -type f | wc -l)
        total=$(( total + execs ))
        printf '%-14s %8s %14s %8s %8s %8s %8s %6s %8s\n' "$t" "${workers[$t]}" "$execs" "$crash" "$tmo" "$oom" "$leak" "$logs" "$corpus"
        if (( crash + tmo + oom + leak > 0 )); then
            status=1
            for f in "$dir"/artifacts/*; do
                case "$(basename "$f")" in crash-*|timeout-*|oom-*|leak-*) echo "  $t finding: $f ($(stat -c %s "$f") bytes)";; esac
            done
            grep -ahE 'panicked at|ERROR: libFuzzer|SUMMARY:' "$dir"/fuzz-*.log | sort | uniq -c | head -20 | sed 's/^/  /'
        fi
    done
    echo "total executions: $total"
    if (( status == 0 )); then
        echo "result: no crash, timeout, out-of-memory or leak"
    else
        echo "result: FINDINGS (see above; inputs under $PWD/work/<target>/artifacts/)"
    fi
} > "$summary"
cat "$summary"
grep -q '^result: FINDINGS' "$summary" && exit 1
exit 0
