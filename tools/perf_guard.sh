#!/usr/bin/env bash
# The performance guard: the headline figures of two builds, measured alternately in one run on
# one machine, in one table (baseline, candidate, candidate / baseline). Every change to the
# request path, the session or the kernels ends by running it on the GPU machine against the
# previous landed commit and pasting the table into its note; BENCHMARKS.md opens with it.
#
#   tools/perf_guard.sh pack COMMIT DIR      # here (needs cargo): release build of COMMIT
#                                            # (a git worktree, this checkout's target dir), its
#                                            # stripped `engines`, `peer`, `signaling` and
#                                            # `room_key` in DIR/bin, its tools/ and assets/plans,
#                                            # assets/images in DIR; DIR/commit names it
#   tools/perf_guard.sh compare BASE NEW [ROUNDS]   # on the GPU machine (no cargo; root, for
#                                            # the p2p namespace): ROUNDS (default 2) rounds,
#                                            # each running BASE then NEW
#
# A packed DIR may hold `bin.tar.xz` instead of `bin/` (what travels to the GPU machine); it is
# unpacked on first use. Both builds read the models of this checkout's assets/models.
#
# Figures (medians over the rounds; each engines run takes the median of ~1 s of samples):
#   idle frame, with the plugin and with Bevy alone (`engines`, no request in flight);
#   single-peer end to end to PredictionReady, and the readback's hand-over to the main world,
#   for the CIFAR- and ImageNet-shaped MobileNetV2 at batch 1; ImageNet batch 64 GPU time and
#   end to end (`BENCH_SECONDS=1 BENCH_MODELS=MobileNetV2 BENCH_BATCHES=1,64 engines`);
#   three players (a requester and two players serving its stages, int8 cuts, K=1, 10 rounds
#   of the shipped images, all security at its defaults): median and p95 latency, bytes per
#   request, placement re-plans (`P2P_SERVERS=2 tools/p2p_demo.sh --rounds 10 --k 1`).
# A figure a build does not report (an older build without it) is "-". PERF_GUARD_MODELS and
# PERF_GUARD_BATCHES narrow the engines run (e.g. CIFAR and 1 on lavapipe, where ImageNet batch
# 64 takes minutes); PERF_GUARD_LOGS keeps every run's output in that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

pack() {
    local commit=$1 dir=$2 tree worktree=
    mkdir -p "$dir/bin"
    dir=$(realpath "$dir")
    # This checkout's own commit, unchanged, builds in place (no cold build of the crate in a
    # new path); any other commit in a worktree.
    if [ "$(git rev-parse "$commit")" = "$(git rev-parse HEAD)" ] && git diff --quiet HEAD; then
        tree=$repo
    else
        worktree=$(mktemp -d)/tree
        tree=$worktree
        git worktree add --detach "$tree" "$commit" >&2
    fi
    # room_key came with the room keys (older builds' demos have none).
    local examples=(peer signaling)
    [ -e "$tree/examples/room_key.rs" ] && examples+=(room_key)
    # Cargo names each binary it built (or found fresh): the bench's carries a hash, and
    # another commit's bench may be newer in the same target dir.
    local built
    built=$(cd "$tree" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" cargo build -q --release --message-format=json-render-diagnostics --bench engines "${examples[@]/#/--example=}")
    for target in engines "${examples[@]}"; do
        cp "$(python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$target" <<<"$built")" "$dir/bin/$target"
    done
    strip "$dir/bin/"*
    (cd "$tree" && git archive HEAD tools assets/plans assets/images) | tar -x -C "$dir"
    git -C "$tree" rev-parse --short HEAD >"$dir/commit"
    if [ -n "$worktree" ]; then git worktree remove --force "$worktree"; fi
    echo "$dir: $(cat "$dir/commit")" >&2
}

# Unpacks DIR/bin.tar.xz where DIR/bin is missing, and links this checkout's models.
prepare() {
    local dir=$1
    if [ ! -d "$dir/bin" ]; then tar -xJf "$dir/bin.tar.xz" -C "$dir"; fi
    mkdir -p "$dir/assets"
    [ -e "$dir/assets/models" ] || ln -s "$repo/assets/models" "$dir/assets/models"
}

# One measurement of DIR's build: its engines table and its three-player summary, into LOG.
measure() {
    local dir=$1 log=$2
    (cd "$dir" && BENCH_SECONDS=1 BENCH_MODELS="${PERF_GUARD_MODELS:-MobileNetV2}" BENCH_BATCHES="${PERF_GUARD_BATCHES:-1,64}" ./bin/engines) >"$log.engines" 2>"$log.engines.err" || echo "engines failed: $(tail -3 "$log.engines.err")" >&2
    (cd "$dir" && PEER_BIN_DIR=bin P2P_SERVERS=2 P2P_WORKERS=2 bash tools/p2p_demo.sh --rounds 10 --k 1) >"$log.p2p" 2>"$log.p2p.err" || echo "p2p demo failed: $(tail -3 "$log.p2p.err")" >&2
}

compare() {
    local base new rounds logs
    base=$(realpath "$1")
    new=$(realpath "$2")
    rounds=${3:-2}
    logs=${PERF_GUARD_LOGS:-$(mktemp -d)}
    mkdir -p "$logs"
    prepare "$base"
    prepare "$new"
    for round in $(seq "$rounds"); do
        echo "round $round of $rounds: baseline $(cat "$base/commit"), then $(cat "$new/commit")" >&2
        measure "$base" "$logs/base.$round"
        measure "$new" "$logs/new.$round"
    done
    python3 "$repo/tools/perf_guard_table.py" "$(cat "$base/commit")" "$(cat "$new/commit")" "$logs" "$rounds"
}

case "${1:-}" in
    pack) pack "$2" "$3" ;;
    compare) compare "$2" "$3" "${4:-2}" ;;
    *) sed -n '2,28p' "$0"; exit 2 ;;
esac
