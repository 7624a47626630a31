#!/usr/bin/env bash
# The scheduling benchmarks of BENCHMARKS.md (issue 18), each a `tools/p2p_demo.sh` run in a
# network namespace of its own:
#   slow_measured / slow_equal   three servers, the last slowed tenfold (`--slowdown 10`),
#                                stages placed by measured speed or in equal turns;
#   batch64_split / _chain / _one  batches of 64 over three servers split into slices
#                                (`--batch-split`), over three servers as one chain, and over one;
#   imagenet64_split / _chain / _one  the same for the ImageNet-shaped MobileNetV2 (synthetic
#                                weights, 3x224x224 inputs, f32 cuts);
#   batch64_per_request          batches of 64 over three servers, each request's remote stages
#                                on one server (`--routing per-request`);
#   routed_per_stage / _per_request  single images over three servers (K = 3), each remote stage
#                                on a server of its own or each request's on one server;
#   flood / flood_budget         one server flooded by an asker with K = 4, without and
#                                with a serving budget of 2 ms per 60 fps frame (its frame
#                                times while serving are in its serving summary);
#   stalled_steal / _nosteal     three servers, the last holding every output back 50 times its
#                                run (`--slowdown 50`; BENCH_STALL=N for another factor), with
#                                and without work stealing.
# Prints one line per run: its name, the asker's summary and the servers' summaries
# (JSON); every run's full output is kept in OUTDIR.
#
#   tools/bench_scheduling.sh [--release] OUTDIR     # BENCH_ROUNDS=N rounds over the images (5)
#
# BENCH_ONLY="name ..." runs only the runs named.
#
# PEER_BIN_DIR=DIR uses prebuilt binaries, as for `tools/p2p_demo.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
release=()
if [ "${1:-}" = --release ]; then
    release=(--release)
    shift
fi
out=${1:?usage: tools/bench_scheduling.sh [--release] OUTDIR}
mkdir -p "$out"
rounds=${BENCH_ROUNDS:-5}
f32=(--plan plans/fashion_3_f32.plan.ron --rounds "$rounds" --stage-timeout-s 30)

bench() {
    local name=$1
    shift
    if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $name "* ]]; then return; fi
    env "$@" >"$out/$name.out" 2>"$out/$name.err" || echo "$name: exit status $?" >&2
    echo "$name $(grep -h '"event":"summary"' "$out/$name.out" | tail -1) $(grep -h '"event":"serving_summary"' "$out/$name.err" | tr '\n' ' ')"
}

bench slow_measured P2P_SERVERS=3 P2P_SLOWDOWN=10 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --placement measured
bench slow_equal P2P_SERVERS=3 P2P_SLOWDOWN=10 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --placement equal
bench batch64_split P2P_SERVERS=3 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --batch 64 --batch-split
bench batch64_chain P2P_SERVERS=3 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --batch 64
imagenet=(--model models/mobilenetv2_imagenet_synthetic.onnx --plan plans/imagenet_3_f32.plan.ron --image-shape 3x224x224 --rounds "$rounds" --stage-timeout-s 30 --batch 64)
bench imagenet64_split P2P_SERVERS=3 tools/p2p_demo.sh "${release[@]}" "${imagenet[@]}" --batch-split
bench imagenet64_chain P2P_SERVERS=3 tools/p2p_demo.sh "${release[@]}" "${imagenet[@]}"
bench imagenet64_one P2P_SERVERS=1 tools/p2p_demo.sh "${release[@]}" "${imagenet[@]}"
bench batch64_per_request P2P_SERVERS=3 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --batch 64 --routing per-request
bench routed_per_stage P2P_SERVERS=3 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --k 3
bench routed_per_request P2P_SERVERS=3 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --k 3 --routing per-request
bench batch64_one P2P_SERVERS=1 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --batch 64
bench flood P2P_SERVERS=1 tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --k 4
bench flood_budget P2P_SERVERS=1 P2P_SERVER_ARGS="--serve-budget-ms 2" tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --k 4
bench stalled_steal P2P_SERVERS=3 P2P_SLOWDOWN=${BENCH_STALL:-50} tools/p2p_demo.sh "${release[@]}" "${f32[@]}"
bench stalled_nosteal P2P_SERVERS=3 P2P_SLOWDOWN=${BENCH_STALL:-50} tools/p2p_demo.sh "${release[@]}" "${f32[@]}" --no-work-stealing
