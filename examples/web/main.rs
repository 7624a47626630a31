//! The plugin in a browser tab on WebGPU: the page `examples/web/index.html` loads this app
//! (built for `wasm32-unknown-unknown` and bound by `wasm-bindgen`; `tools/web.sh` does both).
//!
//! Without a canvas (`?mode=headless`, the default) it classifies inputs and reports each
//! prediction as a JSON line on the browser console (`{"event": "prediction" | "failed" |
//! "done", ...}`), for scripts and tests: `?input=URL.npy` classifies a stored float32 input
//! (`?requests=N` times), otherwise the shipped images in turn (`?source=texture`: each as a
//! texture on the GPU, read there by an `ImageInferenceRequest`; `?top_k=K`: only the top K
//! classes read back; `?output=texture`: the output also written into a texture and checked
//! against the CPU reference, see `output_texture.rs`). The page's status line says what
//! happened, errors included.
//!
//! With `?room=ws://…&key=…&role=server|asker` the tab is a player of a split-inference
//! room, like the native `peer` example, and prints the same JSON lines (`peer_trusted`,
//! `request`, `summary`, `server_summary`, …). `tools/web.sh room` runs a mixed room.
//!
//! `?mode=game` (built with `--features canvas`) is a game page instead: the app draws into the
//! page's canvas, classifies the shipped images in rotation and shows the inspector overlay.
//!
//! Natively this example only says how to build it for the web.

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
mod game;
#[cfg(target_arch = "wasm32")]
#[path = "../support/image_texture.rs"]
mod image_texture;
#[cfg(target_arch = "wasm32")]
mod output_texture;
#[cfg(target_arch = "wasm32")]
mod room;

#[cfg(target_arch = "wasm32")]
fn main() {
    browser::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the web example runs in a browser: `bash tools/web.sh build` builds it, `bash tools/web.sh serve` serves it");
}
