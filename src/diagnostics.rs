//! Inference diagnostics: a history of recent predictions for inspectors, and the same numbers
//! published through Bevy's `DiagnosticsStore` so standard Bevy tooling sees them.

use std::collections::VecDeque;
use std::time::Duration;

use bevy::diagnostic::{Diagnostic, DiagnosticPath, Diagnostics, RegisterDiagnostic};
use bevy::prelude::*;

use crate::schedule::stage_record::StageRecord;
use crate::schedule::{InferenceRequest, Prediction};
use crate::tensor::Tensor;

/// End-to-end latency of each prediction, in milliseconds.
pub const LATENCY_MS: DiagnosticPath = DiagnosticPath::const_new("inference/latency_ms");
/// Stage runs repeated per split prediction (lost peers, rejected data).
pub const RERUNS: DiagnosticPath = DiagnosticPath::const_new("inference/reruns");
/// Per-stage time of split predictions, in milliseconds (stage 0 to 7).
pub const STAGE_MS: [DiagnosticPath; 8] = [
    DiagnosticPath::const_new("inference/stage_0_ms"),
    DiagnosticPath::const_new("inference/stage_1_ms"),
    DiagnosticPath::const_new("inference/stage_2_ms"),
    DiagnosticPath::const_new("inference/stage_3_ms"),
    DiagnosticPath::const_new("inference/stage_4_ms"),
    DiagnosticPath::const_new("inference/stage_5_ms"),
    DiagnosticPath::const_new("inference/stage_6_ms"),
    DiagnosticPath::const_new("inference/stage_7_ms"),
];

/// One finished prediction as inspectors show it.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    /// Increasing number of the prediction.
    pub id: u64,
    /// App time when it arrived.
    pub at: Duration,
    /// The request's input (the overlay draws a thumbnail of image-shaped inputs).
    pub input: Option<Tensor>,
    /// Top classes with probabilities.
    pub top_k: Vec<(usize, f32)>,
    /// End-to-end latency.
    pub latency: Duration,
    /// Per-stage breakdown (empty when the request ran whole on this peer).
    pub stages: Vec<StageRecord>,
    /// Stage runs that were repeated.
    pub reruns: u32,
}

/// The most recent predictions, newest last.
#[derive(Resource, Debug)]
pub struct InferenceHistory {
    capacity: usize,
    entries: VecDeque<HistoryEntry>,
    next_id: u64,
}

impl InferenceHistory {
    /// An empty history keeping `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: VecDeque::new(), next_id: 0 }
    }

    /// Adds an entry, dropping the oldest beyond capacity; returns its id.
    pub fn push(&mut self, mut entry: HistoryEntry) -> u64 {
        entry.id = self.next_id;
        self.next_id += 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
        self.next_id - 1
    }

    /// Entries, oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &HistoryEntry> + ExactSizeIterator {
        self.entries.iter()
    }

    /// Predictions recorded since start (including those no longer kept).
    pub fn total(&self) -> u64 {
        self.next_id
    }
}

/// Records every prediction in [`InferenceHistory`] and in the `DiagnosticsStore`.
pub struct InferenceDiagnosticsPlugin {
    /// Predictions kept in the history.
    pub history: usize,
}

impl Default for InferenceDiagnosticsPlugin {
    fn default() -> Self {
        Self { history: 120 }
    }
}

impl Plugin for InferenceDiagnosticsPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(InferenceHistory::new(self.history))
            .register_diagnostic(Diagnostic::new(LATENCY_MS).with_suffix(" ms"))
            .register_diagnostic(Diagnostic::new(RERUNS));
        for path in STAGE_MS {
            app.register_diagnostic(Diagnostic::new(path).with_suffix(" ms"));
        }
        app.add_systems(PostUpdate, record_predictions);
    }
}

/// Records each prediction once: a new one, or one that replaced the entity's last (a
/// [`ContinuousInference`](crate::ContinuousInference)'s runs arrive on its entity).
fn record_predictions(
    predictions: Query<(&Prediction, Option<&InferenceRequest>), Changed<Prediction>>,
    mut history: ResMut<InferenceHistory>,
    mut diagnostics: Diagnostics,
    time: Res<Time<Real>>,
) {
    for (prediction, request) in &predictions {
        diagnostics.add_measurement(&LATENCY_MS, || prediction.latency.as_secs_f64() * 1e3);
        if !prediction.stages.is_empty() {
            diagnostics.add_measurement(&RERUNS, || prediction.reruns as f64);
        }
        for stage in &prediction.stages {
            if let Some(path) = STAGE_MS.get(stage.stage) {
                diagnostics.add_measurement(path, || stage.duration.as_secs_f64() * 1e3);
            }
        }
        history.push(HistoryEntry {
            id: 0,
            at: time.elapsed(),
            input: request.map(|r| r.input.clone()),
            top_k: prediction.top_k.clone(),
            latency: prediction.latency,
            stages: prediction.stages.clone(),
            reruns: prediction.reruns,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ms: u64) -> HistoryEntry {
        HistoryEntry {
            id: 0,
            at: Duration::ZERO,
            input: None,
            top_k: vec![(1, 0.9)],
            latency: Duration::from_millis(ms),
            stages: Vec::new(),
            reruns: 0,
        }
    }

    #[test]
    fn the_history_keeps_the_newest_entries_with_increasing_ids() {
        let mut history = InferenceHistory::new(2);
        for ms in 0..3 {
            history.push(entry(ms));
        }
        let kept: Vec<(u64, u128)> = history.entries().map(|e| (e.id, e.latency.as_millis())).collect();
        assert_eq!(kept, [(1, 1), (2, 2)]);
        assert_eq!(history.total(), 3);
    }
}
