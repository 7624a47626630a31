#!/usr/bin/env bash
# Starts the signaling server and three peers (an asker and two servers), each its own
# process with its own GPU context, inside a fresh network namespace (WebRTC needs an interface
# besides loopback; nothing leaves the namespace). The asker prints JSON lines (events,
# requests); its summary is the last line. Needs root (unshare -n) and iproute2.
#
#   tools/p2p_demo.sh [--release] [extra asker arguments, e.g. --plan plans/fashion_3_f32.plan.ron --k 1]
#   tools/p2p_demo.sh [--release] --players N [extra player arguments, e.g. --rounds 2]
#
# With --players N, N equal players run instead: each classifies the images split across the
# others while it runs their stages (the first one owns the room). Their own JSON lines go to
# standard error; the last line is one JSON object over all of them: {"players", "requests",
# "matches_single_peer", "lost", "served_by_others" (stages of a player's requests that another
# player ran), "shared_updates" (values of the others' shared predictions each player took),
# "allreduce_identical" (every player's ensemble, an all-reduce of the players' last class
# probabilities, has every player as a member and the same bits), "median_ms", "p95_ms",
# "room_formed_ms_max" (the longest any player waited for all the others to be trusted),
# "links_per_player" (the fewest links a player had), "link_bytes_out_per_request" (every
# byte every player sent, heartbeats and handshakes included, per request)}.
#
# PEER_BIN_DIR=DIR uses the `peer` and `signaling` binaries in DIR instead of building them (a
# machine without cargo, such as the GPU machine of BENCHMARKS.md). P2P_SERVERS=N (P2P_WORKERS before) starts N
# servers (default 2); P2P_SLOWDOWN=F makes the last of them F times slower on purpose (a test
# aid, see `peer --slowdown`); P2P_SERVER_ARGS="..." gives every server more arguments (e.g.
# "--serve-budget-ms 2").
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
flags=()
if [ "${1:-}" = --release ]; then
    profile=release
    flags=(--release)
    shift
fi
players=0
if [ "${1:-}" = --players ]; then
    players=$2
    shift 2
fi
if [ -n "${PEER_BIN_DIR:-}" ]; then
    bin=$(realpath "$PEER_BIN_DIR")
else
    cargo build -q "${flags[@]}" --example signaling --example peer --example room_key >&2
    bin="${CARGO_TARGET_DIR:-$PWD/target}/$profile/examples"
fi
export BEVY_ASSET_ROOT="$PWD"
unshare -n bash -s -- "$bin" "${P2P_SERVERS:-${P2P_WORKERS:-2}}" "$players" "${P2P_SLOWDOWN:-1}" "${P2P_SERVER_ARGS:-${P2P_WORKER_ARGS:-}}" "$@" <<'INNER'
set -euo pipefail
bin=$1
servers=$2
players=$3
slowdown=$4
read -r -a server_args <<< "$5"
shift 5
# WebRTC skips loopback candidates: a veth pair gives the namespace a routable address.
source tools/netns-veth.sh
"$bin/signaling" --port 3536 >/dev/null &
signaling=$!
trap 'kill $signaling 2>/dev/null || true' EXIT
sleep 0.5
room=ws://127.0.0.1:3536/demo
# A fresh 256-bit room key for this run, shared by its players only, and a fresh owner's key
# pair: the asker owns the room and grants the servers their tokens.
key=$("$bin/room_key")
owner=($("$bin/room_key" --owner))
plan=plans/fashion_3_int8.plan.ron
model=models/fashion_mobilenetv2.onnx
prev=""
for arg in "$@"; do
    case "$prev${prev:+ }$arg" in
        --plan\ *) plan=$arg ;;
        --model\ *) model=$arg ;;
    esac
    prev=$arg
done
if [ "$players" -gt 0 ]; then
    out=$(mktemp -d)
    pids=()
    for i in $(seq "$players"); do
        if [ "$i" = 1 ]; then authority=(--owner-key "${owner[0]}"); else authority=(--owner "${owner[1]}"); fi
        "$bin/peer" --role player --room "$room" --key "$key" "${authority[@]}" --servers $((players - 1)) --share-predictions --ensemble "$@" >"$out/player$i.jsonl" &
        pids+=($!)
    done
    status=0
    wait "${pids[@]}" || status=$?
    cat "$out"/player*.jsonl >&2
    python3 - "$players" "$out"/player*.jsonl <<'PY'
import json, math, sys
players, files = int(sys.argv[1]), sys.argv[2:]
summaries, served, ensembles = [], [], []
for path in files:
    for line in open(path):
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "summary":
            summaries.append(event)
        if event.get("event") == "serving_summary":
            served.append(event)
        if event.get("event") in ("ensemble", "ensemble_failed"):
            ensembles.append(event)
if len(summaries) != players:
    sys.exit(f"only {len(summaries)} of {players} players printed a summary")
latencies = sorted(ms for s in summaries for ms in s["latencies_ms"])
def quantile(q):
    return latencies[min(len(latencies), max(1, math.ceil(q * len(latencies)))) - 1] if latencies else 0.0
def total(key):
    return sum(s[key] for s in summaries)
print(json.dumps({"players": players, "requests": total("requests"), "matches_single_peer": total("matches_single_peer"),
                  "lost": total("lost"), "served_by_others": total("served_by_others"),
                  "shared_updates": sum(s["shared_updates"] for s in served),
                  "allreduce_identical": len(ensembles) == players and all(e.get("members") == players and e.get("values") == ensembles[0].get("values") for e in ensembles),
                  "median_ms": quantile(0.5), "p95_ms": quantile(0.95),
                  "room_formed_ms_max": max((s.get("room_formed_ms") or 0) for s in summaries),
                  "links_per_player": min(((s.get("links") or {}).get("count", 0)) for s in summaries),
                  "link_bytes_out_per_request": sum(((s.get("links") or {}).get("bytes_out", 0)) for s in summaries) / max(1, total("requests"))}))
PY
    exit $status
fi
pids=()
for i in $(seq "$servers"); do
    slow=()
    if [ "$i" = "$servers" ] && [ "$slowdown" -gt 1 ]; then slow=(--slowdown "$slowdown"); fi
    "$bin/peer" --role server --room "$room" --key "$key" --owner "${owner[1]}" --model "$model" --plan "$plan" "${slow[@]}" "${server_args[@]}" >&2 &
    pids+=($!)
done
# The servers join first, so that they are connected when the asker starts; they trust
# one another once it has granted their tokens, while it runs its single-peer references (a
# chain through a server that has not yet met the next one falls back to one stage at a time).
sleep 1
"$bin/peer" --role asker --room "$room" --key "$key" --owner-key "${owner[0]}" --servers "$servers" "$@"
wait "${pids[@]}" || true
INNER
