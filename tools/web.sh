#!/usr/bin/env bash
# The web example (examples/web): build it, or serve it and run it in headless Chromium.
#
#   tools/web.sh build            # release wasm32 build + wasm-bindgen -> target/web-site/
#   tools/web.sh page 'QUERY' ... # serves the site on 127.0.0.1 and runs one tab per QUERY in
#                                 # headless Chromium; prints the tabs' JSON lines
#
# Needs what tools/install-web.sh installs. Cold build on 2 cores: ~5 min (the .wasm is ~30 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
site="$target/web-site"

build() {
    cargo build -q --release --target wasm32-unknown-unknown --example web
    rm -rf "$site"
    mkdir -p "$site"
    wasm-bindgen --target web --no-typescript --out-dir "$site/pkg" --out-name web \
        "$target/wasm32-unknown-unknown/release/examples/web.wasm"
    cp examples/web/index.html "$site/"
    ln -s "$PWD/assets" "$site/assets"
    ln -s "$PWD/tests/fixtures" "$site/fixtures"
}

case "${1:-}" in
    build) build ;;
    page)
        shift
        pages=()
        for query in "$@"; do pages+=(--page "$query"); done
        node tools/web/drive.mjs --site "$site" "${pages[@]}"
        ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
