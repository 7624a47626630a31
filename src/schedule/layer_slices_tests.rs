//! Cutting a model into layer slices, and learning how many slices a budget needs.

use super::*;
use crate::model::{import_onnx, run_reference};
use crate::tensor::Tensor;

const MS: Duration = Duration::from_millis(1);

fn shipped_model() -> Graph {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/fashion_mobilenetv2.onnx")).unwrap();
    import_onnx(&bytes).unwrap()
}

fn test_image() -> Tensor {
    let data = (0..28 * 28).map(|i| ((i * 37) % 255) as f32 / 255.0).collect();
    Tensor::new(vec![1, 1, 28, 28], data).unwrap()
}

#[test]
fn slices_tile_the_model_in_order_and_run_one_after_another_give_the_whole_model_s_output() {
    let graph = shipped_model();
    let input = test_image();
    let slices = cut_into_slices(&graph, input.shape(), 5).unwrap();
    assert_eq!(slices.len(), 5);
    assert_eq!(*slices[0].nodes.start(), 0);
    assert_eq!(*slices[4].nodes.end(), graph.nodes.len() - 1);
    for pair in slices.windows(2) {
        assert_eq!(*pair[1].nodes.start(), pair[0].nodes.end() + 1, "slices are consecutive");
    }
    let whole = run_reference(&graph, &input).unwrap();
    let mut activation = input;
    for slice in &slices {
        activation = run_reference(&slice.graph, &activation).unwrap();
    }
    assert_eq!(activation.shape(), whole.shape());
    assert!(activation.data().iter().zip(whole.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "the slices compute exactly the whole model");
}

#[test]
fn slices_are_balanced_in_flops_and_a_count_beyond_the_model_s_cut_points_is_capped() {
    let graph = shipped_model();
    let input = test_image();
    let one = cut_into_slices(&graph, input.shape(), 1).unwrap();
    assert_eq!(one.len(), 1);
    let total = one[0].flops;
    let four = cut_into_slices(&graph, input.shape(), 4).unwrap();
    assert_eq!(four.iter().map(|s| s.flops).sum::<u64>(), total);
    // No slice of four holds more than half the model (a balanced cut of a model this even).
    assert!(four.iter().all(|s| s.flops < total / 2), "{:?}", four.iter().map(|s| s.flops).collect::<Vec<_>>());
    let most = most_stages(&graph);
    assert!(most > FIRST_SLICES, "MobileNetV2 has more cut points than the first count");
    assert_eq!(cut_into_slices(&graph, input.shape(), most + 10).unwrap().len(), most);
}

#[test]
fn a_model_never_timed_starts_at_the_first_count_or_at_all_it_has() {
    assert_eq!(SliceCounter::new(2 * MS, 40).count(), FIRST_SLICES);
    assert_eq!(SliceCounter::new(2 * MS, 3).count(), 3);
    assert_eq!(SliceCounter::new(2 * MS, 0).count(), 1, "a model without a cut point runs whole");
}

#[test]
fn the_next_count_fits_the_measured_total_into_slices_of_three_quarters_of_the_budget() {
    let mut counter = SliceCounter::new(4 * MS, 40);
    // 16 slices of 0.5 ms: 8 ms in all, in slices of 3 ms: 3 slices.
    counter.observe(&[MS / 2; 16]);
    assert_eq!(counter.count(), 3);
    // A model far below the budget runs whole.
    counter.observe(&[MS / 10; 3]);
    assert_eq!(counter.count(), 1);
}

#[test]
fn a_count_whose_slowest_slice_overran_the_budget_is_never_used_again() {
    let mut counter = SliceCounter::new(4 * MS, 40);
    counter.observe(&[MS / 2; 16]);
    assert_eq!(counter.count(), 3);
    // Unbalanced: one slice of the three took 5 ms.
    counter.observe(&[5 * MS, MS, MS]);
    assert_eq!(counter.count(), 4, "more than the count that overran");
    // Faster again: the total alone would ask for 2 slices, but 3 overran once.
    counter.observe(&[MS, MS, MS, MS]);
    assert_eq!(counter.count(), 4);
}

#[test]
fn the_count_stays_within_the_model_s_cut_points_and_ignores_an_empty_run() {
    let mut counter = SliceCounter::new(MS, 5);
    counter.observe(&[10 * MS; 5]);
    assert_eq!(counter.count(), 5, "no more slices than cut points allow, even over budget");
    counter.observe(&[]);
    assert_eq!(counter.count(), 5);
    let mut unbounded = SliceCounter::new(Duration::ZERO, 5);
    unbounded.observe(&[MS; 5]);
    assert_eq!(unbounded.count(), 5, "a zero budget leaves the count alone");
}
