//! The inspector overlay rendered without a display (egui_kittest's offscreen wgpu renderer on
//! whatever adapter wgpu finds, lavapipe on CI), from real predictions of the shipped model.
//! The picture is compared with the committed `docs/overlay.png` (shown in the README): a change
//! fails the test and leaves `docs/overlay.new.png` and `docs/overlay.diff.png` beside it;
//! `UPDATE_SNAPSHOTS=1 cargo test --test overlay_snapshot` makes the new picture the reference.

use std::time::Duration;

use bevy_p2p_inference::diagnostics::{HistoryEntry, InferenceHistory};
use bevy_p2p_inference::model::{import_onnx, run_reference};
use bevy_p2p_inference::net::PeerUuid;
use bevy_p2p_inference::overlay::widgets::{overlay_ui, OverlayView, PeerRow, SharedRow, ThumbnailCache};
use bevy_p2p_inference::schedule::stage_record::{Executor, HopTiming, StageRecord};
use bevy_p2p_inference::Tensor;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

const CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

fn path(relative: &str) -> String {
    format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"))
}

/// Predictions of the shipped model (CPU reference executor) on three shipped images, shaped
/// as a split request would report them.
fn history() -> InferenceHistory {
    let graph = import_onnx(&std::fs::read(path("assets/models/fashion_mobilenetv2.onnx")).unwrap()).unwrap();
    let mut history = InferenceHistory::new(16);
    let worker = PeerUuid([0x5e, 0xa1, 0x17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for (i, image) in ["sneaker", "bag", "ankle_boot"].iter().enumerate() {
        let bytes = std::fs::read(path(&format!("assets/images/{image}.png"))).unwrap();
        let input = Tensor::from_image_bytes(&bytes, 1, 28, 28).unwrap();
        let output = run_reference(&graph, &input).unwrap();
        let remote = |executor| executor != Executor::Local;
        let stage = |stage, executor, us: u64| StageRecord {
            stage,
            executor,
            duration: Duration::from_micros(us),
            hop: HopTiming {
                network: remote(executor).then(|| Duration::from_micros(us / 8)),
                run: Some(Duration::from_micros(us * 3 / 4)),
                gpu: Some(Duration::from_micros(us / 4)),
            },
            returned: (stage == 2).then(|| Duration::from_micros(us / 8)),
            transfers: remote(executor).then(|| Duration::from_micros(us / 4)),
            span: 1,
        };
        history.push(HistoryEntry {
            id: 0,
            at: Duration::from_millis(500 * i as u64),
            input: Some(input),
            top_k: output.top_k(0, 3),
            latency: Duration::from_micros(3100 + 400 * i as u64),
            stages: vec![stage(0, Executor::Local, 900), stage(1, Executor::Peer(worker), 1200), stage(2, Executor::Peer(worker), 1000)],
            reruns: 0,
        });
    }
    history
}

fn peers() -> Vec<PeerRow> {
    vec![PeerRow {
        id: "5ea117".into(),
        role: "player".into(),
        adapter: "llvmpipe (Vulkan)".into(),
        rtt_ms: Some((0.31, 0.52, 0.04)),
        last_heard_ms: 42.0,
        planned_share: Some(0.5),
        measured: Some((12.5, 0.3)),
        bytes_in: 38_000,
        bytes_out: 64_000,
        auth: "trusted".into(),
        rejected: 0,
        spot_checks: (0, 0),
    }]
}

#[test]
fn the_overlay_renders_predictions_peers_shared_tensors_and_stages_without_a_display() {
    let history = history();
    let peers = peers();
    let shared = vec![
        SharedRow { owner: "you".into(), name: "prediction".into(), version: None, shape: vec![1, 10], top: Some((7, 9.25)) },
        SharedRow { owner: "5ea117".into(), name: "prediction".into(), version: Some(12), shape: vec![1, 10], top: Some((8, 7.5)) },
    ];
    let names: Vec<String> = CLASSES.iter().map(|s| s.to_string()).collect();
    let mut thumbnails = ThumbnailCache::default();
    let mut harness = Harness::builder()
        .with_size((800.0, 700.0))
        .wgpu()
        .build_ui(|ui| overlay_ui(ui, OverlayView { history: &history, peers: &peers, shared: &shared, class_names: &names }, &mut thumbnails));
    harness.run();
    harness.fit_contents();

    let hop_columns = ["network", "queue", "GPU", "back"];
    let labels = ["Ankle boot", "Bag", "Sneaker", "Predictions", "Peers", "Shared tensors", "Stages", "Latency", "player", "trusted", "llvmpipe (Vulkan)", "Sneaker (9.250)", "Bag (7.500)", "50%", "12.5 GFLOP/s, 30%"];
    for label in labels.iter().chain(&hop_columns) {
        assert!(harness.query_all_by_label(label).next().is_some(), "the overlay shows no '{label}'");
    }
    // Stage 1's input took 1200 / 8 µs on the network; stage 0 queued 900 * 3 / 4 - 900 / 4 µs.
    for hop in ["0.15", "0.45"] {
        assert!(harness.query_all_by_label(hop).next().is_some(), "the stages table shows no hop of {hop} ms");
    }
    let image = harness.render().expect("offscreen rendering (needs a wgpu adapter, e.g. lavapipe)");
    let background = *image.get_pixel(image.width() - 1, image.height() - 1);
    let drawn = image.pixels().filter(|p| **p != background).count();
    let share = drawn as f64 / (image.width() * image.height()) as f64;
    assert!(share > 0.05, "only {:.1}% of the overlay differs from the background", share * 100.0);
    // Lavapipe draws the same pixels every run; another adapter's antialiasing may differ a
    // little, never the text or the layout.
    let options = egui_kittest::SnapshotOptions::new().output_path(path("docs")).threshold(0.6);
    egui_kittest::try_image_snapshot_options(&image, "overlay", &options).unwrap_or_else(|error| panic!("{error}"));
}
