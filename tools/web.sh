#!/usr/bin/env bash
# The web example (examples/web): build it, or serve it and run it in headless Chromium.
#
#   tools/web.sh build            # release wasm32 build + wasm-bindgen -> target/web-site/
#   tools/web.sh page 'QUERY' ... # serves the site on 127.0.0.1 and runs one tab per QUERY in
#                                 # headless Chromium; prints the tabs' JSON lines
#   tools/web.sh room [OPTIONS]   # a mixed room (signaling server, native peers, browser tabs)
#                                 # in a fresh network namespace; options of tools/web/room.mjs
#                                 # (--coordinator browser, --browser-workers 3, ...)
#   tools/web.sh demo [OPTIONS]   # build, then room: its last line is the room's result JSON
#
# Needs what tools/install-web.sh installs; room needs root (unshare -n) and iproute2. Cold
# wasm build on 2 cores: ~7 min (the .wasm is ~34 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
site="$target/web-site"

build() {
    cargo build -q --release --target wasm32-unknown-unknown --example web --features canvas
    rm -rf "$site"
    mkdir -p "$site"
    wasm-bindgen --target web --no-typescript --out-dir "$site/pkg" --out-name web \
        "$target/wasm32-unknown-unknown/release/examples/web.wasm"
    cp examples/web/index.html "$site/"
    # The page loads assets/ over HTTP; the stored test inputs and models are under
    # assets/fixtures/ as well, so that a page can load them as assets too.
    mkdir -p "$site/assets"
    for entry in assets/*; do ln -s "$PWD/$entry" "$site/$entry"; done
    ln -s "$PWD/tests/fixtures" "$site/assets/fixtures"
}

case "${1:-}" in
    build) build ;;
    page)
        shift
        pages=()
        for query in "$@"; do pages+=(--page "$query"); done
        node tools/web/page.mjs --site "$site" "${pages[@]}"
        ;;
    room | demo)
        [ "$1" = demo ] && build
        shift
        cargo build -q --example signaling --example peer
        export BEVY_ASSET_ROOT="$PWD"
        unshare -n bash -s -- "$target/debug/examples" "$site" "$@" <<'INNER'
set -euo pipefail
bin=$1
site=$2
shift 2
# WebRTC skips loopback candidates: a veth pair gives the namespace a routable address.
source tools/netns-veth.sh
node tools/web/room.mjs --site "$site" --bin "$bin" "$@"
INNER
        ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
