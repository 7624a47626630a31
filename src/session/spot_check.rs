//! Spot checks: every so often the owner runs a finished request's remote stages again
//! on its own GPU, from the input it sent, and compares its output with the one the peers
//! returned before the prediction is delivered, so that a peer returning well-formed but wrong
//! results is caught.

use bevy::prelude::Entity;

use crate::net::PeerUuid;
use crate::schedule::stage_record::StageRecord;
use crate::tensor::quant::{decode_values, encode_values};
use crate::tensor::{Tensor, TransferDtype};

/// A finished request whose remote stages this GPU is running again.
pub(super) struct SpotCheck {
    /// The request's entity.
    pub entity: Entity,
    /// The output the peers returned.
    pub claimed: Tensor,
    /// The peers that ran the checked stages.
    pub peers: Vec<PeerUuid>,
    /// The last stage.
    pub last: usize,
    /// Whether every checked cut travels as f32 (the outputs must then agree to rounding).
    pub exact: bool,
    /// The prediction's records, reruns and time in flight, for delivery.
    pub stages: Vec<StageRecord>,
    pub reruns: u32,
    pub in_flight: std::time::Duration,
    /// When the check started.
    pub started: bevy::platform::time::Instant,
}

/// `tensor` as the wire carries it as `dtype`: what the peer of the next stage received.
pub(super) fn as_sent(tensor: &Tensor, dtype: TransferDtype) -> Tensor {
    let (bytes, params) = encode_values(tensor.data(), dtype);
    let data = decode_values(&bytes, tensor.len(), dtype, params).expect("values decode as they were encoded");
    Tensor::new(tensor.shape().to_vec(), data).expect("the same shape")
}

/// Whether the peers' output `claimed` agrees with this GPU's `local`: the same shape and,
/// through f32 cuts (`exact`), the same values to within what different GPUs round
/// differently (1e-4 of the largest magnitude); through lossy cuts, where a value rounded to
/// the other side of an int8 step moves the rest, the same top class in every row and values
/// within 5% of the largest magnitude.
pub fn outputs_agree(claimed: &Tensor, local: &Tensor, exact: bool) -> bool {
    if claimed.shape() != local.shape() {
        return false;
    }
    let scale = 1.0 + local.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = claimed.data().iter().zip(local.data()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    if exact {
        return worst <= 1e-4 * scale;
    }
    let classes = local.shape().last().copied().unwrap_or(1).max(1);
    let top = |t: &Tensor| -> Vec<usize> {
        t.data().chunks(classes).map(|row| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)).collect()
    };
    top(claimed) == top(local) && worst <= 0.05 * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(rows: &[[f32; 3]]) -> Tensor {
        Tensor::new(vec![rows.len(), 3], rows.iter().flatten().copied().collect()).unwrap()
    }

    #[test]
    fn through_f32_cuts_only_rounding_differences_agree() {
        let local = logits(&[[1.0, 5.0, -2.0]]);
        assert!(outputs_agree(&logits(&[[1.0, 5.0 + 1e-5, -2.0]]), &local, true));
        assert!(!outputs_agree(&logits(&[[1.0, 5.01, -2.0]]), &local, true));
        assert!(!outputs_agree(&Tensor::new(vec![3, 1], vec![1.0, 5.0, -2.0]).unwrap(), &local, true), "another shape");
    }

    #[test]
    fn through_lossy_cuts_the_top_class_and_a_small_drift_agree() {
        let local = logits(&[[1.0, 5.0, -2.0], [3.0, 0.0, 0.5]]);
        assert!(outputs_agree(&logits(&[[1.1, 4.8, -2.0], [2.9, 0.1, 0.5]]), &local, false));
        assert!(!outputs_agree(&logits(&[[1.0, 5.0, -2.0], [0.5, 0.0, 3.0]]), &local, false), "another top class in row 2");
        assert!(!outputs_agree(&logits(&[[1.0, 5.0, 2.0], [3.0, 0.0, 0.5]]), &local, false), "a value off by 4 of 6");
    }

    #[test]
    fn a_tensor_as_sent_as_int8_is_rounded_and_as_f32_is_unchanged() {
        let t = Tensor::new(vec![1, 4], vec![0.1, -0.333, 2.0, 0.0]).unwrap();
        assert_eq!(as_sent(&t, TransferDtype::F32), t);
        let rounded = as_sent(&t, TransferDtype::Int8);
        assert_ne!(rounded, t);
        assert!(rounded.data().iter().zip(t.data()).all(|(a, b)| (a - b).abs() < 0.01));
    }
}
