#!/usr/bin/env bash
# Installs what the browser tests and the web demo need (Debian; run as root or with sudo):
# Debian's Chromium (WebGPU on SwiftShader, no GPU needed), Node.js and npm, playwright-core
# from npm (it drives the installed Chromium and downloads no browser), the wasm32 Rust target,
# and the wasm-bindgen CLI at exactly the version in Cargo.lock.
# Measured on the 2-core dev VM: Chromium ~1 min, wasm-bindgen-cli build ~2 min 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
# Only what is missing: a machine with Node.js from elsewhere (NodeSource's nodejs carries npm)
# cannot also take Debian's npm package.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
(cd tools/web && npm install --no-audit --no-fund --silent)
rustup target add wasm32-unknown-unknown
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
    # --locked fails with this registry (the CLI's lock pins a webpki-roots release it lacks);
    # the same version resolves without it.
    cargo install -q wasm-bindgen-cli --version "$version" --locked 2>/dev/null || cargo install -q wasm-bindgen-cli --version "$version"
fi
