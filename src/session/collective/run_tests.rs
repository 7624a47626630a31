//! Collectives among three players, parts delivered by hand.

use super::*;

const A: PeerUuid = PeerUuid([1; 16]);
const B: PeerUuid = PeerUuid([2; 16]);
const C: PeerUuid = PeerUuid([3; 16]);

/// Player `i`'s input: values that do not add up exactly in f32, so that the order matters.
fn input(i: usize) -> Tensor {
    Tensor::new(vec![2, 3], (0..6).map(|j| ((i * 7 + j) as f32 * 0.1).sin() * 1e3 + 1e-3 * j as f32).collect()).unwrap()
}

/// Every player starts `op` (player i with `inputs[i]`) and every part is delivered, in an
/// order that differs per receiver; the results.
fn run_everywhere(op: CollectiveOp, inputs: [Option<Tensor>; 3]) -> Vec<Tensor> {
    let players = [A, B, C];
    let mut runs = Vec::new();
    let mut sent = Vec::new();
    for (&own, input) in players.iter().zip(inputs) {
        let (run, parts) = CollectiveRun::start(op, own, players.to_vec(), input).expect("starts");
        sent.extend(parts.into_iter().map(|part| (own, part)));
        runs.push(run);
    }
    sent.reverse();
    for (from, Part { to, tensor }) in sent {
        let index = players.iter().position(|p| *p == to).unwrap();
        let tag = runs[index].tag().clone();
        runs[index].receive(from, &tag, tensor).expect("a member's part");
    }
    runs.iter().map(|run| run.result().expect("every part in")).collect()
}

#[test]
fn every_player_gets_the_same_bits_from_an_all_reduce_and_they_match_the_cpu_reference() {
    let inputs = [input(0), input(1), input(2)];
    for reduction in [Reduction::Sum, Reduction::Mean, Reduction::Max] {
        let results = run_everywhere(CollectiveOp::AllReduce(reduction), inputs.clone().map(Some));
        for result in &results {
            assert_eq!(result.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), results[0].data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{reduction:?}: bit-identical on every player");
        }
        // The reference: in f64, in any order; f32 in the players' order is within rounding.
        for (j, &got) in results[0].data().iter().enumerate() {
            let column = inputs.iter().map(|t| t.data()[j] as f64);
            let expected = match reduction {
                Reduction::Sum => column.sum::<f64>(),
                Reduction::Mean => column.sum::<f64>() / 3.0,
                Reduction::Max => column.fold(f64::MIN, f64::max),
            };
            assert!((got as f64 - expected).abs() <= 1e-6 * expected.abs().max(1.0), "{reduction:?}[{j}]: {got} against {expected}");
        }
    }
}

#[test]
fn all_gather_stacks_in_id_order_broadcast_copies_the_root_and_scatter_hands_out_its_rows() {
    let inputs = [input(0), input(1), input(2)];
    let gathered = run_everywhere(CollectiveOp::AllGather, inputs.clone().map(Some));
    let stacked: Vec<f32> = inputs.iter().flat_map(|t| t.data().iter().copied()).collect();
    for result in &gathered {
        assert_eq!((result.shape(), result.data()), (&[6, 3][..], &stacked[..]));
    }
    let broadcast = run_everywhere(CollectiveOp::Broadcast { root: B }, [None, Some(input(1)), None]);
    assert!(broadcast.iter().all(|r| *r == input(1)));
    let rows = Tensor::new(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let scattered = run_everywhere(CollectiveOp::Scatter { root: C }, [None, None, Some(rows)]);
    let row = |a: f32, b: f32| Tensor::new(vec![1, 2], vec![a, b]).unwrap();
    assert_eq!(scattered, vec![row(1.0, 2.0), row(3.0, 4.0), row(5.0, 6.0)]);
}

#[test]
fn disagreements_wrong_shapes_strangers_and_bad_inputs_are_refused_with_the_player_named() {
    let (mut run, _) = CollectiveRun::start(CollectiveOp::AllReduce(Reduction::Sum), A, vec![A, B, C], Some(input(0))).unwrap();
    let ours = run.tag().clone();
    let theirs = CollectiveTag { members: vec![A, B], ..ours.clone() };
    assert_eq!(run.receive(B, &theirs, input(1)), Err(CollectiveError::Disagreement { peer: B, theirs: theirs.clone(), ours: ours.clone() }));
    let max = CollectiveTag { op: CollectiveOp::AllReduce(Reduction::Max), ..ours.clone() };
    assert!(matches!(run.receive(B, &max, input(1)), Err(CollectiveError::Disagreement { peer: B, .. })));
    let wrong = Tensor::zeros(vec![3, 2]);
    assert_eq!(run.receive(B, &ours, wrong), Err(CollectiveError::ShapesDisagree { peer: B, expected: vec![2, 3], got: vec![3, 2] }));
    let stranger = PeerUuid([9; 16]);
    assert_eq!(run.receive(stranger, &ours, input(1)), Err(CollectiveError::Stranger(stranger)));
    assert_eq!(run.receive(B, &ours, input(1)), Ok(()));
    assert_eq!(run.receive(B, &ours, input(1)), Err(CollectiveError::Stranger(B)), "a second part from the same member");
    assert_eq!(run.missing(), vec![C]);
    assert_eq!(run.result(), None);

    assert!(matches!(CollectiveRun::start(CollectiveOp::AllGather, A, vec![B, C], Some(input(0))), Err(CollectiveError::BadMembers(_))));
    assert!(matches!(CollectiveRun::start(CollectiveOp::AllGather, A, vec![A, B], None), Err(CollectiveError::BadInput(_))));
    assert!(matches!(CollectiveRun::start(CollectiveOp::Scatter { root: A }, A, vec![A, B, C], Some(Tensor::zeros(vec![4, 2]))), Err(CollectiveError::BadInput(_))));
    assert!(matches!(CollectiveRun::start(CollectiveOp::Broadcast { root: C }, A, vec![A, B], None), Err(CollectiveError::BadMembers(_))));
}

#[test]
fn a_member_that_leaves_before_its_part_arrives_fails_the_collective_and_one_that_contributed_does_not() {
    let (mut run, _) = CollectiveRun::start(CollectiveOp::AllGather, A, vec![A, B, C], Some(input(0))).unwrap();
    let tag = run.tag().clone();
    run.receive(B, &tag, input(1)).unwrap();
    assert_eq!(run.member_left(B), None, "its part is in");
    assert_eq!(run.member_left(C), Some(CollectiveError::PlayerLeft(C)));
    let (broadcast, _) = CollectiveRun::start(CollectiveOp::Broadcast { root: B }, A, vec![A, B, C], None).unwrap();
    assert_eq!(broadcast.member_left(C), None, "a broadcast waits for its root only");
    assert_eq!(broadcast.member_left(B), Some(CollectiveError::PlayerLeft(B)));
}

#[test]
fn a_scatter_of_rows_without_values_hands_out_empty_parts_instead_of_panicking() {
    // Found by the `inboxes` fuzz target: a [3, 0] input divided chunks(0).
    let (run, parts) = CollectiveRun::start(CollectiveOp::Scatter { root: A }, A, vec![A, B, C], Some(Tensor::zeros(vec![3, 0]))).unwrap();
    assert_eq!(parts.len(), 2, "one part for each other member");
    assert!(parts.iter().all(|part| part.tensor.shape() == [1, 0]));
    assert_eq!(run.result().map(|t| t.shape().to_vec()), Some(vec![1, 0]));
}
