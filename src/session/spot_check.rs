//! Spot checks: on a request chosen at random, the owner runs every remote hand-over again on
//! its own GPU, from the last input it computed itself (through the same cut encodings), and
//! compares what it gets with what the peers returned before the prediction is delivered, so
//! that a peer returning well-formed but wrong results is caught, wherever it sits in a chain.
//!
//! Where a chain came back early (a peer "could not pass it on"), the owner holds that
//! hand-over's output too: the check compares it, and a disagreement there blames that
//! hand-over's players alone ([`judge`]).

use bevy::prelude::Entity;

use crate::net::PeerUuid;
use crate::schedule::stage_record::StageRecord;
use crate::session::pipeline::{peers_of, Handover};
use crate::tensor::quant::{decode_values, encode_values};
use crate::tensor::{Tensor, TransferDtype};

/// A finished request whose remote stages this GPU is running again.
pub(super) struct SpotCheck {
    /// The request's entity.
    pub entity: Entity,
    /// What is run again, and what the peers returned.
    pub run: CheckedRun,
    /// This GPU's output at the end of each checked hand-over so far, in order.
    pub locals: Vec<Tensor>,
    /// The prediction's records, reruns and time in flight, for delivery.
    pub stages: Vec<StageRecord>,
    pub reruns: u32,
    pub in_flight: std::time::Duration,
    /// When the check started.
    pub started: bevy::platform::time::Instant,
}

/// One hand-over of a checked run: its stages, its players and the output this player got.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CheckedHandover {
    /// Its first and last stage.
    pub stage: usize,
    pub last: usize,
    /// The peers that ran its stages (none for a stage this player ran).
    pub peers: Vec<PeerUuid>,
    /// Its output, as this player received it.
    pub claimed: Tensor,
}

/// What a check runs again: every stage from `first` (the first remote hand-over's, whose
/// input this player computed itself or is the request's own) to the end.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CheckedRun {
    /// The first stage run again.
    pub first: usize,
    /// Its input, as this player held it.
    pub input: Tensor,
    /// The hand-overs from `first` on, in order; the last one's output is the request's.
    pub handovers: Vec<CheckedHandover>,
}

impl CheckedRun {
    /// The part of a finished request's `handovers` a check runs again: from its first remote
    /// hand-over to the end. `None` where no peer ran any stage.
    pub fn of(handovers: &[Handover]) -> Option<Self> {
        let from = handovers.iter().position(|h| !peers_of(&h.executors).is_empty())?;
        let (first, input) = (handovers[from].stage, handovers[from].input.tensor()?.clone());
        let handovers = handovers[from..]
            .iter()
            .map(|h| CheckedHandover { stage: h.stage, last: h.last(), peers: peers_of(&h.executors), claimed: h.output.clone() })
            .collect();
        Some(Self { first, input, handovers })
    }

    /// The last stage (the model's).
    pub fn last(&self) -> usize {
        self.handovers.last().map_or(self.first, |h| h.last)
    }

    /// Whether `stage` is the last of one of the checked hand-overs.
    pub fn ends_handover(&self, stage: usize) -> bool {
        self.handovers.iter().any(|h| h.last == stage)
    }

    /// The request's output as the peers returned it.
    pub fn claimed_output(&self) -> Option<&Tensor> {
        self.handovers.last().map(|h| &h.claimed)
    }

    /// Every peer that ran a checked stage, each once, in order of their ids.
    pub fn peers(&self) -> Vec<PeerUuid> {
        let mut peers: Vec<PeerUuid> = self.handovers.iter().flat_map(|h| h.peers.iter().copied()).collect();
        peers.sort();
        peers.dedup();
        peers
    }
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// This GPU agrees with every output the peers returned.
    Agree,
    /// The output of the hand-over from `stage` disagrees: `peers` are to blame (that
    /// hand-over's players where it can be told, else every peer of the check).
    Mismatch {
        /// The first stage of the hand-over blamed (the check's first stage where every peer is).
        stage: usize,
        /// The peers blamed.
        peers: Vec<PeerUuid>,
    },
}

/// Judges a checked run from this GPU's outputs at the end of each of its hand-overs
/// (`locals`, in order; `dtypes[s]` is how stage `s`'s input travels).
///
/// Each hand-over before the last whose output this player received is compared first, as the
/// next stage's peer received it ([`values_agree`]: through lossy cuts, an activation has no
/// classes to compare): the first that disagrees is blamed alone. Then the request's output,
/// with [`outputs_agree`]: a disagreement there blames the last hand-over where no earlier one
/// could have moved it unnoticed (every cut f32, or only one remote hand-over), else every peer
/// of the check (which of them lied cannot be told).
pub(super) fn judge(run: &CheckedRun, locals: &[Tensor], dtypes: &[TransferDtype]) -> Verdict {
    let all_f32 = |to: usize| dtypes.get(run.first..=to).is_some_and(|d| d.iter().all(|d| *d == TransferDtype::F32));
    let (Some(last), Some(local_output)) = (run.handovers.last(), locals.get(run.handovers.len().saturating_sub(1))) else {
        return Verdict::Mismatch { stage: run.first, peers: run.peers() };
    };
    for (handover, local) in run.handovers.iter().zip(locals).take(run.handovers.len() - 1) {
        let Some(&dtype) = dtypes.get(handover.last + 1) else { continue };
        if !handover.peers.is_empty() && !values_agree(&handover.claimed, &as_sent(local, dtype), all_f32(handover.last + 1)) {
            return Verdict::Mismatch { stage: handover.stage, peers: handover.peers.clone() };
        }
    }
    let exact = all_f32(last.last);
    if outputs_agree(&last.claimed, local_output, exact) {
        return Verdict::Agree;
    }
    let remote = run.handovers.iter().filter(|h| !h.peers.is_empty()).count();
    match !last.peers.is_empty() && (exact || remote == 1) {
        true => Verdict::Mismatch { stage: last.stage, peers: last.peers.clone() },
        false => Verdict::Mismatch { stage: run.first, peers: run.peers() },
    }
}

/// `tensor` as the wire carries it as `dtype`: what the peer of the next stage received.
pub(super) fn as_sent(tensor: &Tensor, dtype: TransferDtype) -> Tensor {
    let (bytes, params) = encode_values(tensor.data(), dtype);
    let data = decode_values(&bytes, tensor.len(), dtype, params).expect("values decode as they were encoded");
    Tensor::new(tensor.shape().to_vec(), data).expect("the same shape")
}

/// Whether `claimed` has `local`'s shape and values: through f32 cuts (`exact`) to within what
/// different GPUs round differently (1e-4 of the largest magnitude), through lossy ones within
/// 5% of it.
pub fn values_agree(claimed: &Tensor, local: &Tensor, exact: bool) -> bool {
    if claimed.shape() != local.shape() {
        return false;
    }
    let scale = 1.0 + local.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = claimed.data().iter().zip(local.data()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    worst <= if exact { 1e-4 } else { 0.05 } * scale
}

/// Whether the peers' output `claimed` agrees with this GPU's `local`: the same shape and,
/// through f32 cuts (`exact`), the same values to within what different GPUs round
/// differently (1e-4 of the largest magnitude); through lossy cuts, where a value rounded to
/// the other side of an int8 step moves the rest, the same top class in every row and values
/// within 5% of the largest magnitude.
pub fn outputs_agree(claimed: &Tensor, local: &Tensor, exact: bool) -> bool {
    if !values_agree(claimed, local, exact) {
        return false;
    }
    if exact {
        return true;
    }
    let classes = local.shape().last().copied().unwrap_or(1).max(1);
    let top = |t: &Tensor| -> Vec<usize> {
        t.data().chunks(classes).map(|row| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)).collect()
    };
    top(claimed) == top(local)
}

#[cfg(test)]
#[path = "spot_check_tests.rs"]
mod tests;
