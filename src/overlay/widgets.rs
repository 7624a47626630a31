//! The overlay's widgets as plain egui functions, usable from a game's own egui UI.

use std::collections::HashMap;
use std::time::Duration;

use bevy_egui::egui;
use egui_plot::{Line, Plot, PlotPoints};

use crate::diagnostics::{HistoryEntry, InferenceHistory};
use crate::schedule::stage_record::{HopTiming, StageRecord};

/// One row of the peers table.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRow {
    /// Short peer id.
    pub id: String,
    /// "player" (asks and serves), "server" (only serves), "spectator" (only asks), or "?"
    /// before the handshake.
    pub role: String,
    /// Adapter name and backend.
    pub adapter: String,
    /// Heartbeat round trip: median, p95 and jitter in ms, once measured.
    pub rtt_ms: Option<(f64, f64, f64)>,
    /// Milliseconds since a valid frame arrived.
    pub last_heard_ms: f64,
    /// The part of this player's remote stage runs placed on the peer (0 to 1; `None` for a
    /// peer that runs none of them).
    pub planned_share: Option<f64>,
    /// The peer's speed as measured from the stages it returned, in GFLOP/s, and its part of
    /// the stage work done recently for this player (0 to 1); `None` until measured.
    pub measured: Option<(f64, f64)>,
    /// Bytes received from and sent to the peer.
    pub bytes_in: u64,
    /// Bytes sent to the peer.
    pub bytes_out: u64,
    /// "trusted", "handshaking" or "refused".
    pub auth: String,
    /// Messages from the peer that were dropped.
    pub rejected: u64,
    /// This player's spot checks of the peer's stages, and how many of them blamed it (shown
    /// beside the rejected count once there is one).
    pub spot_checks: (u64, u64),
}

/// One row of the shared tensors table: a tensor this player shares, or another player's.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedRow {
    /// "you", or the owner's short id.
    pub owner: String,
    /// The name it is shared under.
    pub name: String,
    /// The owner's version of the value held (`None` for this player's own).
    pub version: Option<u64>,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its largest value and where: for a classifier's output, the top class.
    pub top: Option<(usize, f32)>,
}

/// What the overlay shows.
#[derive(Clone, Copy, Debug)]
pub struct OverlayView<'a> {
    /// Recent predictions.
    pub history: &'a InferenceHistory,
    /// The peers of the session.
    pub peers: &'a [PeerRow],
    /// The tensors shared in the session.
    pub shared: &'a [SharedRow],
    /// Class names (index = class).
    pub class_names: &'a [String],
}

/// egui textures of input thumbnails, by history entry id.
#[derive(Default)]
pub struct ThumbnailCache {
    textures: HashMap<u64, egui::TextureHandle>,
}

impl ThumbnailCache {
    /// The thumbnail of `entry`'s input if it is an image (`[1, 1|3, H, W]`, values in 0..1).
    pub fn get(&mut self, ctx: &egui::Context, entry: &HistoryEntry) -> Option<egui::TextureHandle> {
        if let Some(texture) = self.textures.get(&entry.id) {
            return Some(texture.clone());
        }
        let input = entry.input.as_ref()?;
        let &[_, channels, height, width] = input.shape() else { return None };
        let plane = height * width;
        let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let image = match channels {
            1 => egui::ColorImage::from_gray([width, height], &input.data()[..plane].iter().map(|&v| byte(v)).collect::<Vec<_>>()),
            3 => {
                let d = input.data();
                let rgb: Vec<u8> = (0..plane).flat_map(|i| [byte(d[i]), byte(d[plane + i]), byte(d[2 * plane + i])]).collect();
                egui::ColorImage::from_rgb([width, height], &rgb)
            }
            _ => return None,
        };
        let texture = ctx.load_texture(format!("inference input {}", entry.id), image, egui::TextureOptions::NEAREST);
        self.textures.retain(|id, _| *id + 64 > entry.id);
        self.textures.insert(entry.id, texture.clone());
        Some(texture)
    }
}

fn class_name(names: &[String], class: usize) -> String {
    names.get(class).cloned().unwrap_or_else(|| format!("class {class}"))
}

/// The most recent `count` predictions: input thumbnail, top-3 with probability bars, latency.
pub fn predictions_ui(ui: &mut egui::Ui, history: &InferenceHistory, class_names: &[String], thumbnails: &mut ThumbnailCache, count: usize) {
    if history.entries().len() == 0 {
        ui.label("No predictions yet");
        return;
    }
    for entry in history.entries().rev().take(count) {
        ui.horizontal(|ui| {
            if let Some(texture) = thumbnails.get(ui.ctx(), entry) {
                ui.add(egui::Image::new(&texture).fit_to_exact_size(egui::vec2(48.0, 48.0)));
            }
            ui.vertical(|ui| {
                for (class, p) in entry.top_k.iter().take(3) {
                    ui.horizontal(|ui| {
                        ui.add(egui::ProgressBar::new(*p).desired_width(90.0).text(format!("{:.1}%", p * 100.0)));
                        ui.label(class_name(class_names, *class));
                    });
                }
                ui.label(format!("{:.2} ms end to end", entry.latency.as_secs_f64() * 1e3));
            });
        });
        ui.separator();
    }
}

/// The peers table: role, adapter, RTT, last heard, placed and measured share, traffic and
/// trust.
pub fn peers_ui(ui: &mut egui::Ui, rows: &[PeerRow]) {
    if rows.is_empty() {
        ui.label("No peers (single-player)");
        return;
    }
    egui::Grid::new("inference peers").striped(true).show(ui, |ui| {
        for title in ["peer", "role", "adapter", "RTT med / p95 / jitter", "last heard", "placed", "measured", "in / out", "auth", "rejected"] {
            ui.strong(title);
        }
        ui.end_row();
        for row in rows {
            ui.label(&row.id);
            ui.label(&row.role);
            ui.label(&row.adapter);
            ui.label(row.rtt_ms.map_or("-".to_string(), |(m, p, j)| format!("{m:.2} / {p:.2} / {j:.2} ms")));
            ui.label(format!("{:.0} ms ago", row.last_heard_ms));
            ui.label(row.planned_share.map_or("-".to_string(), |share| format!("{:.0}%", share * 100.0)));
            ui.label(row.measured.map_or("-".to_string(), |(gflops, share)| format!("{gflops:.1} GFLOP/s, {:.0}%", share * 100.0)));
            ui.label(format!("{} / {} KiB", row.bytes_in / 1024, row.bytes_out / 1024));
            ui.label(&row.auth);
            match row.spot_checks {
                (0, _) => ui.label(row.rejected.to_string()),
                (checks, failed) => ui.label(format!("{} · checked {checks}, failed {failed}", row.rejected)),
            };
            ui.end_row();
        }
    });
}

/// One stage of a split prediction as the stages table shows it: where it ran and where its
/// time went, in milliseconds (`None` where it was not measured or does not apply).
#[derive(Clone, Debug, PartialEq)]
pub struct HopRow {
    /// The stage.
    pub stage: usize,
    /// Who ran it: "local" or the peer's short id.
    pub executor: String,
    /// Its input's transfer to the peer that ran it (see [`HopTiming::network`]).
    pub network_ms: Option<f64>,
    /// Its run's part off the GPU (see [`HopTiming::queue`]).
    pub queue_ms: Option<f64>,
    /// Its GPU time, from timestamp queries.
    pub gpu_ms: Option<f64>,
    /// Its output's transfer back to this player, for the last stage of a remote hand-over.
    pub back_ms: Option<f64>,
}

impl HopRow {
    /// The row of `record`.
    pub fn of(record: &StageRecord) -> Self {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        let hop: HopTiming = record.hop;
        Self {
            stage: record.stage,
            executor: record.executor.to_string(),
            network_ms: ms(hop.network),
            queue_ms: ms(hop.queue()),
            gpu_ms: ms(hop.gpu),
            back_ms: ms(record.returned),
        }
    }
}

/// Where the time of the last `count` split predictions went, hop by hop: each stage's input
/// transfer, queue and GPU time and the last output's transfer back, under the time to result.
pub fn stages_ui(ui: &mut egui::Ui, history: &InferenceHistory, count: usize) {
    let split: Vec<&HistoryEntry> = history.entries().rev().filter(|e| !e.stages.is_empty()).take(count).collect();
    if split.is_empty() {
        ui.label("No split predictions yet: every request ran whole on this peer.");
        return;
    }
    ui.label("ms per hop. network: half the link's RTT plus receiving; queue: run minus GPU; GPU: timestamp queries.");
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    egui::Grid::new("inference stages").striped(true).show(ui, |ui| {
        for title in ["request", "stage", "who", "network", "queue", "GPU", "back"] {
            ui.strong(title);
        }
        ui.end_row();
        for entry in split {
            let result = format!("#{}: {:.2} ms to result, {} reruns", entry.id, entry.latency.as_secs_f64() * 1e3, entry.reruns);
            for (index, row) in entry.stages.iter().map(HopRow::of).enumerate() {
                ui.label(if index == 0 { result.as_str() } else { "" });
                ui.label(row.stage.to_string());
                ui.label(row.executor);
                for value in [row.network_ms, row.queue_ms, row.gpu_ms, row.back_ms] {
                    ui.label(cell(value));
                }
                ui.end_row();
            }
        }
    });
}

/// End-to-end latency of the kept predictions over time.
pub fn latency_plot_ui(ui: &mut egui::Ui, history: &InferenceHistory) {
    let points: Vec<[f64; 2]> = history.entries().map(|e| [e.at.as_secs_f64(), e.latency.as_secs_f64() * 1e3]).collect();
    Plot::new("inference latency")
        .height(120.0)
        .x_axis_label("s")
        .y_axis_label("ms")
        .allow_scroll(false)
        .show(ui, |plot| plot.line(Line::new("end to end", PlotPoints::from(points))));
}

/// The shared tensors table: owner, name, version, shape and top value (a class name where
/// `class_names` has one).
pub fn shared_ui(ui: &mut egui::Ui, rows: &[SharedRow], class_names: &[String]) {
    if rows.is_empty() {
        ui.label("No shared tensors");
        return;
    }
    egui::Grid::new("inference shared tensors").striped(true).show(ui, |ui| {
        for title in ["owner", "name", "version", "shape", "top"] {
            ui.strong(title);
        }
        ui.end_row();
        for row in rows {
            ui.label(&row.owner);
            ui.label(&row.name);
            ui.label(row.version.map_or("-".to_string(), |v| v.to_string()));
            ui.label(format!("{:?}", row.shape));
            ui.label(row.top.map_or("-".to_string(), |(i, v)| format!("{} ({v:.3})", class_name(class_names, i))));
            ui.end_row();
        }
    });
}

/// Everything: predictions, peers, shared tensors, stages and the latency plot, in collapsible
/// sections.
pub fn overlay_ui(ui: &mut egui::Ui, view: OverlayView, thumbnails: &mut ThumbnailCache) {
    let OverlayView { history, peers, shared, class_names } = view;
    egui::CollapsingHeader::new("Predictions").default_open(true).show(ui, |ui| predictions_ui(ui, history, class_names, thumbnails, 3));
    egui::CollapsingHeader::new("Peers").default_open(true).show(ui, |ui| peers_ui(ui, peers));
    egui::CollapsingHeader::new("Shared tensors").default_open(true).show(ui, |ui| shared_ui(ui, shared, class_names));
    egui::CollapsingHeader::new("Stages").default_open(true).show(ui, |ui| stages_ui(ui, history, 5));
    egui::CollapsingHeader::new("Latency").default_open(true).show(ui, |ui| latency_plot_ui(ui, history));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::stage_record::Executor;

    #[test]
    fn a_hop_row_splits_a_remote_stage_into_network_queue_gpu_and_the_way_back() {
        let micros = |us| Some(Duration::from_micros(us));
        let record = StageRecord {
            stage: 2,
            executor: Executor::Local,
            duration: Duration::from_micros(2000),
            hop: HopTiming { network: micros(300), run: micros(900), gpu: micros(250) },
            returned: micros(350),
            transfers: micros(1100),
            span: 1,
        };
        let row = HopRow::of(&record);
        assert_eq!((row.stage, row.executor.as_str()), (2, "local"));
        assert_eq!([row.network_ms, row.queue_ms, row.gpu_ms, row.back_ms], [Some(0.3), Some(0.65), Some(0.25), Some(0.35)]);
        let unmeasured = HopRow::of(&StageRecord { hop: HopTiming { gpu: None, ..record.hop }, ..record });
        assert_eq!((unmeasured.queue_ms, unmeasured.gpu_ms), (None, None), "no queue without a GPU time to take off the run");
    }
}
