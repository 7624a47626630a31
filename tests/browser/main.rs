//! The web example in real headless Chromium: WebGPU on SwiftShader, the same wasm a game
//! ships, real WebRTC between tabs and native peers. Needs what `tools/install-web.sh` installs
//! (Chromium, Node and playwright-core, the wasm32 target and the wasm-bindgen CLI); the site is
//! built once per run by `tools/web.sh build` (a release wasm32 build: ~7 min cold on 2 cores).
//! Room tests run inside a network namespace each (root, iproute2), like the p2p tests.
//! On failure a test prints every event the pages and peers logged, browser console included.

#[path = "../p2p/certificate.rs"]
mod certificate;
#[path = "../p2p/netns.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use bevy_p2p_inference::Tensor;
use netns::{examples_dir, in_namespace, Serial};
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The web example's site, built once for the whole run.
fn site() -> PathBuf {
    static SITE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SITE.get_or_init(|| {
        for (tool, what) in [("node", "Node.js"), ("wasm-bindgen", "the wasm-bindgen CLI"), ("/usr/bin/chromium", "Chromium")] {
            let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
            if !found {
                return Err(format!("{what} is missing: run `bash tools/install-web.sh`"));
            }
        }
        if !repo().join("tools/web/node_modules/playwright-core").exists() {
            return Err("playwright-core is missing: run `bash tools/install-web.sh`".into());
        }
        // A release wasm32 build: its lock files (target/release, target/wasm32-*) are not the
        // ones `cargo test` holds (target/debug).
        let output = Command::new("bash").arg("tools/web.sh").arg("build").current_dir(repo()).output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!("tools/web.sh build failed:\n{}", String::from_utf8_lossy(&output.stderr)));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
        Ok(target.join("web-site"))
    })
    .clone()
    .unwrap_or_else(|error| panic!("{error}"))
}

/// Runs a node driver from `tools/web/` and returns its stdout lines as JSON values, and the
/// whole output for failure messages.
fn node(script: &str, args: &[String]) -> (Vec<Value>, String) {
    let output = Command::new("node").arg(format!("tools/web/{script}")).args(args).current_dir(repo()).output().expect("cannot run node");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let transcript = format!("exit {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}", output.status);
    let lines = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (lines, transcript)
}

fn fixture(name: &str) -> Tensor {
    let bytes = std::fs::read(repo().join("tests/fixtures").join(name)).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    Tensor::new(shape, npy.into_vec().unwrap()).unwrap()
}

#[test]
fn the_shipped_model_in_a_browser_tab_matches_onnx_runtime() {
    let _serial = Serial::lock();
    let rows = 4;
    let query = format!("input=assets/fixtures/fashion_input.npy&rows={rows}&requests=1");
    let (events, transcript) = node("page.mjs", &["--site".into(), site().display().to_string(), "--timeout-s".into(), "240".into(), "--page".into(), query]);
    let prediction = events.iter().find(|e| e["event"] == "prediction").unwrap_or_else(|| panic!("no prediction:\n{transcript}"));
    let adapter = events.iter().find(|e| e["event"] == "adapter").unwrap_or_else(|| panic!("no WebGPU adapter:\n{transcript}"));
    assert!(adapter["browser_adapter"].as_str().is_some_and(|a| a.contains("SwiftShader")), "{transcript}");
    let output: Vec<f32> = prediction["output"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let shape: Vec<usize> = prediction["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let want = fixture("fashion_ort.npy");
    let classes = want.shape()[1];
    assert_eq!(shape, vec![rows, classes], "{transcript}");
    let want = &want.data()[..rows * classes];
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let error = output.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale;
    assert!(error <= 1e-4, "relative error {error} against ONNX Runtime:\n{transcript}");
    assert!(!events.iter().any(|e| e["event"] == "failed" || e["event"] == "page_error"), "{transcript}");
}

/// The page's predictions by input name, for `query`, and the transcript.
fn predictions_by_input(query: &str) -> (std::collections::BTreeMap<String, Vec<f32>>, String) {
    let (outputs, _, transcript) = page_run(query);
    (outputs, transcript)
}

/// The page's predictions by input name, for `query`; what its inference moved between the
/// CPU and the GPU (its `done` line's `GpuTransfers` totals); and the transcript.
fn page_run(query: &str) -> (std::collections::BTreeMap<String, Vec<f32>>, Value, String) {
    let args = ["--site".into(), site().display().to_string(), "--timeout-s".into(), "240".into(), "--page".into(), query.to_string()];
    let (events, transcript) = node("page.mjs", &args);
    assert!(!events.iter().any(|e| e["event"] == "failed" || e["event"] == "page_error"), "{transcript}");
    let outputs = events
        .iter()
        .filter(|e| e["event"] == "prediction")
        .map(|e| (e["input"].as_str().unwrap().to_string(), e["output"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()))
        .collect();
    let done = events.iter().find(|e| e["event"] == "done").unwrap_or_else(|| panic!("the page never finished:\n{transcript}"));
    (outputs, done["transfers"].clone(), transcript)
}

#[test]
fn images_read_as_textures_on_the_gpu_in_a_browser_tab_give_their_tensors_predictions() {
    let _serial = Serial::lock();
    // The image_input kernel compiled by Chrome's WGSL compiler (Tint) and run on WebGPU.
    let (from_textures, texture_transfers, transcript) = page_run("source=texture&requests=10");
    let (from_tensors, tensor_transfers, _) = page_run("requests=10");
    assert_eq!(from_textures.len(), 10, "{transcript}");
    assert_eq!(from_tensors.keys().collect::<Vec<_>>(), from_textures.keys().collect::<Vec<_>>(), "the same ten images both ways");
    // The textures never came to the CPU: every input was read on the GPU, none uploaded; the
    // tensors were uploaded. Each output was read back once.
    let count = |t: &Value, key: &str| t[key].as_u64().unwrap_or_else(|| panic!("no {key} in {t}"));
    assert_eq!((count(&texture_transfers, "image_inputs"), count(&texture_transfers, "tensor_uploads")), (10, 0), "{texture_transfers}");
    assert_eq!((count(&tensor_transfers, "image_inputs"), count(&tensor_transfers, "tensor_uploads")), (0, 10), "{tensor_transfers}");
    assert_eq!((count(&texture_transfers, "readbacks"), count(&tensor_transfers, "readbacks")), (10, 10));
    for (name, want) in &from_tensors {
        let got = &from_textures[name];
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let error = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale;
        assert!(error <= 1e-4, "{name}: relative error {error}:\n{transcript}");
    }
}

#[test]
fn a_top_3_taken_on_the_gpu_in_a_browser_tab_is_the_top_3_of_the_whole_output() {
    let _serial = Serial::lock();
    // The top_k kernel compiled by Tint and run on WebGPU, after the image_input kernel: only
    // the three classes come back.
    let args = ["--site".into(), site().display().to_string(), "--timeout-s".into(), "240".into(), "--page".into(), "source=texture&top_k=3&requests=10".into()];
    let (events, transcript) = node("page.mjs", &args);
    assert!(!events.iter().any(|e| e["event"] == "failed" || e["event"] == "page_error"), "{transcript}");
    let (whole, _) = predictions_by_input("source=texture&requests=10");
    let predictions: Vec<&Value> = events.iter().filter(|e| e["event"] == "prediction").collect();
    assert_eq!(predictions.len(), 10, "{transcript}");
    for prediction in predictions {
        let name = prediction["input"].as_str().unwrap();
        assert_eq!(prediction["output"].as_array().map(Vec::len), Some(0), "{name}: only the classes were read back");
        let got: Vec<(usize, f32)> = serde_json::from_value(prediction["top_k"].clone()).unwrap();
        let want = Tensor::new(vec![1, 10], whole[name].clone()).unwrap().top_k(0, 3);
        assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), want.iter().map(|c| c.0).collect::<Vec<_>>(), "{name}:\n{transcript}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g.1 - w.1).abs() < 1e-5, "{name}: class {} at {} against {}", g.0, g.1, w.1);
        }
    }
}

#[test]
fn a_segmentation_written_into_a_texture_in_a_browser_tab_is_the_cpu_references_colour_map() {
    use bevy_p2p_inference::model::run_reference;
    use bevy_p2p_inference::Model;

    let _serial = Serial::lock();
    // The zoo's U-Net on an RGB texture (image_input), its two classes written into a texture
    // (image_output) by Tint-compiled kernels on WebGPU; the page reads the texture back.
    let zoo = "fixtures/zoo/unet_small_dynamic_batch";
    let query = format!("model={zoo}.onnx&input=assets/{zoo}_input.npy&rows=1&source=texture&output=texture&requests=2");
    let args = ["--site".into(), site().display().to_string(), "--timeout-s".into(), "240".into(), "--page".into(), query];
    let (events, transcript) = node("page.mjs", &args);
    assert!(!events.iter().any(|e| e["event"] == "failed" || e["event"] == "page_error"), "{transcript}");
    let textures: Vec<&Value> = events.iter().filter(|e| e["event"] == "output_texture").collect();
    assert_eq!(textures.len(), 2, "{transcript}");
    for texture in textures {
        assert_eq!(texture["texels"], 64 * 64, "{texture}");
        assert!(texture["max_difference"].as_f64().is_some_and(|d| d <= 0.5 / 255.0), "the texture is not the reference's colour map: {texture}");
        let classes: Vec<u64> = serde_json::from_value(texture["classes"].clone()).unwrap();
        assert!(classes.iter().all(|c| *c > 0), "both classes appear: {texture}");
    }

    // The output read back is the CPU reference's on the texture's 8-bit pixels.
    let input = fixture("zoo/unet_small_dynamic_batch_input.npy").rows(0..1).unwrap();
    let pixels = Tensor::new(input.shape().to_vec(), input.data().iter().map(|v| (v * 255.0).round() / 255.0).collect()).unwrap();
    let model = Model::from_onnx_bytes(&std::fs::read(repo().join(format!("tests/{zoo}.onnx"))).unwrap()).unwrap();
    let want = run_reference(&model.graph_for(pixels.shape()).unwrap(), &pixels).unwrap();
    let prediction = events.iter().find(|e| e["event"] == "prediction").unwrap();
    let got: Vec<f32> = serde_json::from_value(prediction["output"].clone()).unwrap();
    let scale = want.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let error = got.iter().zip(want.data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale;
    assert_eq!(got.len(), want.len());
    assert!(error <= 1e-3, "relative error {error} against the CPU reference:\n{transcript}");
}

#[test]
fn a_continuous_inference_on_a_texture_in_a_browser_tab_keeps_giving_the_single_requests_prediction() {
    let _serial = Serial::lock();
    let (single, _) = predictions_by_input("source=texture&requests=1");
    let args = ["--site".into(), site().display().to_string(), "--timeout-s".into(), "240".into(), "--page".into(), "source=texture&continuous=1&requests=6".into()];
    let (events, transcript) = node("page.mjs", &args);
    assert!(!events.iter().any(|e| e["event"] == "failed" || e["event"] == "page_error"), "{transcript}");
    let predictions: Vec<&Value> = events.iter().filter(|e| e["event"] == "prediction").collect();
    assert!(predictions.len() >= 6, "{transcript}");
    let want = &single["t_shirt_top"];
    for prediction in predictions {
        let got: Vec<f32> = serde_json::from_value(prediction["output"].clone()).unwrap();
        assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-5 * b.abs().max(1.0)), "{got:?} against {want:?}");
        assert!(prediction["runs_in_flight"].as_u64().is_some_and(|n| (1..=2).contains(&n)), "at most 2 runs in flight: {prediction}");
    }
}

/// Runs `tools/web/room.mjs` with `args` (in this test's namespace) and returns its result.
fn room(args: &[&str]) -> (Value, String) {
    let mut all: Vec<String> = vec!["--site".into(), site().display().to_string(), "--bin".into(), examples_dir().display().to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let (lines, transcript) = node("room.mjs", &all);
    let result = lines.last().cloned().unwrap_or_else(|| panic!("the room printed no result:\n{transcript}"));
    assert!(result.get("error").is_none(), "{transcript}");
    (result, transcript)
}

fn assert_every_request_matches_single_peer(result: &Value, transcript: &str) {
    let requests = result["requests"].as_u64().unwrap();
    assert!(requests >= 10, "{transcript}");
    assert_eq!(result["matches_single_peer"], requests, "{transcript}");
    assert_eq!(result["lost"], 0, "{transcript}");
}

#[test]
fn a_mixed_room_of_a_native_asker_a_browser_server_and_a_native_server_matches_single_peer_and_a_wrong_key_tab_stays_out() {
    // The site is built outside the namespace (the build needs no network, but say so once).
    site();
    let _serial = Serial::lock();
    in_namespace("a_mixed_room_of_a_native_asker_a_browser_server_and_a_native_server_matches_single_peer_and_a_wrong_key_tab_stays_out", || {
        // With a tab holding the wrong room key beside them: it never joins.
        let (result, transcript) = room(&["--asker", "native", "--browser-servers", "1", "--native-servers", "1", "--rounds", "1", "--wrong-key-tab"]);
        assert_every_request_matches_single_peer(&result, &transcript);
        assert_eq!((result["browser_peers"].as_u64(), result["native_peers"].as_u64()), (Some(1), Some(2)), "{transcript}");
        assert_eq!(result["stages_run"]["unknown"], 0, "every stage ran on a player of the room: {transcript}");
        assert!(result["browser_adapter"].as_str().is_some_and(|a| a.contains("SwiftShader")), "{transcript}");
        let wrong_key = &result["wrong_key_tab"];
        assert!(wrong_key["refused"].as_u64().is_some_and(|n| n > 0), "the wrong-key tab refused nothing:\n{transcript}");
        assert_eq!(wrong_key["trusted_peers"], 0, "{transcript}");
    });
}

#[test]
fn a_browser_tab_and_a_native_player_meet_through_wss_signaling_with_the_game_s_own_certificate() {
    site();
    let _serial = Serial::lock();
    in_namespace("a_browser_tab_and_a_native_player_meet_through_wss_signaling_with_the_game_s_own_certificate", || {
        // Chromium trusts the test's certificate by its key, the native asker by the
        // certificate itself; the signalling server serves nothing but TLS.
        let certificate = certificate::TestCertificate::new("browser");
        let dir = certificate.dir().display().to_string();
        let (result, transcript) = room(&["--asker", "native", "--browser-servers", "1", "--native-servers", "0", "--rounds", "1", "--tls", &dir]);
        assert_every_request_matches_single_peer(&result, &transcript);
        assert!(result["room"].as_str().is_some_and(|room| room.starts_with("wss://127.0.0.1:3536/")), "{transcript}");
        assert_eq!(result["browser_peers"], 1, "the tab ran stages: {transcript}");
    });
}

#[test]
fn a_browser_asker_splits_its_requests_across_native_servers() {
    site();
    let _serial = Serial::lock();
    in_namespace("a_browser_asker_splits_its_requests_across_native_servers", || {
        let (result, transcript) = room(&["--asker", "browser", "--browser-servers", "0", "--native-servers", "2", "--rounds", "1"]);
        assert_every_request_matches_single_peer(&result, &transcript);
        assert_eq!((result["browser_peers"].as_u64(), result["native_peers"].as_u64()), (Some(1), Some(2)), "{transcript}");
        assert_eq!(result["stages_run"]["unknown"], 0, "every stage ran on a player of the room: {transcript}");
    });
}

#[test]
fn a_browser_tab_closed_mid_run_is_declared_lost_within_a_second_and_no_request_is_lost() {
    site();
    let _serial = Serial::lock();
    in_namespace("a_browser_tab_closed_mid_run_is_declared_lost_within_a_second_and_no_request_is_lost", || {
        let (result, transcript) = room(&["--browser-servers", "1", "--native-servers", "1", "--rounds", "2", "--close-tab-after-requests", "4"]);
        assert_every_request_matches_single_peer(&result, &transcript);
        let declared = result["lost_declared_ms"].as_u64().unwrap_or_else(|| panic!("the closed tab was never declared lost:\n{transcript}"));
        assert!(declared <= 1000, "declared lost after {declared} ms:\n{transcript}");
    });
}

#[test]
fn the_game_page_draws_its_scene_into_the_canvas_with_the_overlay_over_it() {
    let _serial = Serial::lock();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let screenshot = target.join("web-game.png");
    let _ = std::fs::remove_file(&screenshot);
    let args = ["--site".into(), site().display().to_string(), "--timeout-s".into(), "240".into(), "--screenshot".into(), screenshot.display().to_string(), "--page".into(), "mode=game&requests=4".into()];
    let (events, transcript) = node("page.mjs", &args);
    assert_eq!(events.iter().filter(|e| e["event"] == "prediction").count(), 4, "{transcript}");
    assert!(!events.iter().any(|e| e["event"] == "failed" || e["event"] == "page_error"), "{transcript}");
    let image = image::open(&screenshot).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{transcript}")).to_rgb8();
    // The page is 960x600: the status line on top, the canvas below it, the overlay's window
    // at the canvas's top left. Right of the overlay the scene's background fills the canvas.
    let pixel = |x: u32, y: u32| image.get_pixel(x, y).0;
    let scene = pixel(800, 300);
    assert_eq!(pixel(900, 450), scene, "the scene fills the canvas");
    assert_ne!(scene, [0x1e, 0x1f, 0x24], "the canvas shows the page's background: nothing was drawn");
    assert_ne!(scene, [255, 255, 255], "the canvas is blank");
    assert_ne!(pixel(250, 100), scene, "the overlay is drawn over the scene");
}

#[test]
fn a_page_without_webgpu_says_so_instead_of_going_blank() {
    let _serial = Serial::lock();
    let args = ["--site".into(), site().display().to_string(), "--timeout-s".into(), "60".into(), "--without-webgpu".into(), "--page".into(), "requests=1".into()];
    let (events, transcript) = node("page.mjs", &args);
    // Chromium without its WebGPU flags on a machine with no GPU: `navigator.gpu` may be there
    // but offers no adapter.
    let said_so = events.iter().any(|e| e["event"] == "page_error" && (e["kind"] == "no_webgpu" || e["kind"] == "no_adapter"));
    assert!(said_so, "{transcript}");
    assert!(!events.iter().any(|e| e["event"] == "prediction"), "{transcript}");
}

#[test]
fn a_page_asking_for_a_missing_model_fails_its_requests_with_the_load_error() {
    let _serial = Serial::lock();
    let args = ["--site".into(), site().display().to_string(), "--timeout-s".into(), "120".into(), "--page".into(), "model=models/missing.onnx&requests=2".into()];
    let (events, transcript) = node("page.mjs", &args);
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "failed").collect();
    assert_eq!(failed.len(), 2, "{transcript}");
    assert!(failed.iter().all(|e| e["kind"] == "model_load"), "{transcript}");
    let done = events.iter().find(|e| e["event"] == "done").unwrap_or_else(|| panic!("{transcript}"));
    assert_eq!((done["requests"].as_u64(), done["failed"].as_u64()), (Some(0), Some(2)), "{transcript}");
}
