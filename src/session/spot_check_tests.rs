//! Spot checks: which hand-overs a check runs again, how outputs are compared, and whom a
//! disagreement blames.

use super::*;
use crate::schedule::stage_record::Executor;

const W1: PeerUuid = PeerUuid([1; 16]);
const W2: PeerUuid = PeerUuid([2; 16]);
const W3: PeerUuid = PeerUuid([3; 16]);
const F32: TransferDtype = TransferDtype::F32;

fn logits(rows: &[[f32; 3]]) -> Tensor {
    Tensor::new(vec![rows.len(), 3], rows.iter().flatten().copied().collect()).unwrap()
}

fn t(values: &[f32]) -> Tensor {
    Tensor::new(vec![1, values.len()], values.to_vec()).unwrap()
}

fn handover(stage: usize, input: Tensor, executors: &[Executor], output: Tensor) -> Handover {
    Handover { stage, input: input.into(), executors: executors.to_vec(), output }
}

/// A request of four stages: stage 0 here (input `x`, output `a`); W1 ran stage 1 and sent
/// its output `b` back ("could not pass it on"); the chain W2, W3 ran stages 2 and 3 from it
/// and returned `out`.
fn chain_cut_short(a: Tensor, b: Tensor, out: Tensor) -> Vec<Handover> {
    vec![
        handover(0, t(&[0.0]), &[Executor::Local], a.clone()),
        handover(1, a, &[Executor::Peer(W1)], b.clone()),
        handover(2, b, &[Executor::Peer(W2), Executor::Peer(W3)], out),
    ]
}

#[test]
fn a_check_runs_every_remote_hand_over_again_from_the_last_input_this_player_computed() {
    let (a, b, out) = (t(&[1.0]), t(&[2.0]), logits(&[[0.0, 1.0, 0.0]]));
    let run = CheckedRun::of(&chain_cut_short(a.clone(), b.clone(), out.clone())).unwrap();
    assert_eq!(run.first, 1, "from stage 1, whose input this player computed, not from stage 2's");
    assert_eq!(run.input, a);
    assert_eq!(
        run.handovers,
        [
            CheckedHandover { stage: 1, last: 1, peers: vec![W1], claimed: b },
            CheckedHandover { stage: 2, last: 3, peers: vec![W2, W3], claimed: out.clone() },
        ]
    );
    assert_eq!((run.last(), run.peers(), run.claimed_output()), (3, vec![W1, W2, W3], Some(&out)));
    assert!(run.ends_handover(1) && run.ends_handover(3) && !run.ends_handover(2));
    let local_only = [handover(0, t(&[0.0]), &[Executor::Local, Executor::Local], out)];
    assert_eq!(CheckedRun::of(&local_only), None, "nothing ran remotely: nothing to check");
}

#[test]
fn a_liar_at_the_head_of_a_chain_that_came_back_early_is_caught_and_blamed_alone() {
    // W1 returned a wrong but well-shaped stage-1 output; W2 and W3 computed honestly from it.
    let (a, true_b, lie) = (t(&[1.0, 1.0]), t(&[2.0, 4.0]), t(&[2.0, -4.0]));
    let (true_out, out_from_lie) = (logits(&[[0.0, 9.0, 0.0]]), logits(&[[9.0, 0.0, 0.0]]));
    let run = CheckedRun::of(&chain_cut_short(a, lie, out_from_lie)).unwrap();
    assert_eq!(judge(&run, &[true_b, true_out], &[F32; 4]), Verdict::Mismatch { stage: 1, peers: vec![W1] });
}

#[test]
fn a_liar_at_the_end_of_the_chain_is_blamed_alone_where_the_earlier_outputs_agree() {
    let (a, b) = (t(&[1.0, 1.0]), t(&[2.0, 4.0]));
    let (true_out, lie) = (logits(&[[0.0, 9.0, 0.0]]), logits(&[[9.0, 0.0, 0.0]]));
    let run = CheckedRun::of(&chain_cut_short(a, b.clone(), lie)).unwrap();
    assert_eq!(judge(&run, &[b.clone(), true_out.clone()], &[F32; 4]), Verdict::Mismatch { stage: 2, peers: vec![W2, W3] });
    // Through lossy cuts an earlier small drift could have moved the output: every peer.
    let lossy = [F32, TransferDtype::Int8, TransferDtype::Int8, TransferDtype::Int8];
    assert_eq!(judge(&run, &[b, true_out], &lossy), Verdict::Mismatch { stage: 1, peers: vec![W1, W2, W3] });
}

#[test]
fn honest_outputs_agree_at_every_hand_over() {
    let (a, b, out) = (t(&[1.0, 1.0]), t(&[2.0, 4.0]), logits(&[[0.0, 9.0, 0.0]]));
    let run = CheckedRun::of(&chain_cut_short(a, b.clone(), out.clone())).unwrap();
    let rounded = t(&[2.0, 4.0 + 1e-5]);
    assert_eq!(judge(&run, &[rounded, out.clone()], &[F32; 4]), Verdict::Agree, "rounding differences are no lie");
    let int8 = [F32, TransferDtype::Int8, TransferDtype::Int8, TransferDtype::Int8];
    assert_eq!(judge(&run, &[t(&[2.02, 3.98]), out], &int8), Verdict::Agree, "nor a small drift through lossy cuts");
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
