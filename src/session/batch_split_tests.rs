//! Splitting a batch over workers, and choosing it over a pipeline, by predicted time.

use super::*;

const DESKTOP: PeerUuid = PeerUuid([1; 16]);
const PHONE: PeerUuid = PeerUuid([2; 16]);
const LAPTOP: PeerUuid = PeerUuid([3; 16]);

fn worker(peer: PeerUuid, speed: f64) -> WorkerSpeed {
    WorkerSpeed { peer, speed }
}

fn rows(slices: &[BatchSlice]) -> Vec<(PeerUuid, usize)> {
    slices.iter().map(|s| (s.worker, s.rows.len())).collect()
}

#[test]
fn a_desktop_nine_times_a_phone_s_speed_gets_ninety_percent_of_the_batch() {
    let slices = split_rows(80, &[worker(DESKTOP, 9e12), worker(PHONE, 1e12)]);
    assert_eq!(rows(&slices), [(DESKTOP, 72), (PHONE, 8)]);
    assert_eq!(slices[0].rows, 0..72);
    assert_eq!(slices[1].rows, 72..80, "the slices cover the batch in order");
}

#[test]
fn slices_are_whole_blocks_of_rows_by_largest_remainder_and_a_worker_too_slow_for_one_is_left_out() {
    let equal = split_rows(64, &[worker(DESKTOP, 1.0), worker(PHONE, 1.0), worker(LAPTOP, 1.0)]);
    assert_eq!(rows(&equal), [(DESKTOP, 24), (PHONE, 24), (LAPTOP, 16)]);
    // Speeds that drift a little give the same sizes (no new batch to compile for).
    let drifted = split_rows(64, &[worker(DESKTOP, 1.05), worker(PHONE, 1.0), worker(LAPTOP, 0.97)]);
    assert_eq!(rows(&drifted), rows(&equal));
    let ragged = split_rows(20, &[worker(DESKTOP, 1.0), worker(PHONE, 1.0)]);
    assert_eq!(rows(&ragged), [(DESKTOP, 16), (PHONE, 4)], "the last block is cut to the batch");
    let slow = split_rows(32, &[worker(DESKTOP, 100.0), worker(PHONE, 1.0)]);
    assert_eq!(rows(&slow), [(DESKTOP, 32)]);
    assert_eq!(rows(&split_rows(8, &[worker(DESKTOP, 1.0), worker(PHONE, 1.0)])), [(DESKTOP, 8)], "one block is not split");
    assert_eq!(split_rows(4, &[worker(DESKTOP, f64::NAN)]), vec![], "no usable speed");
    assert_eq!(split_rows(0, &[worker(DESKTOP, 1.0)]), vec![]);
}

#[test]
fn a_batch_is_split_where_its_slices_finish_before_the_chain_would() {
    // Two remote stages of 1 MFLOP per row, 1 ms hops, two workers of 1 GFLOP/s.
    let work = RemoteWork { flops_per_row: vec![1e6, 1e6], hop_s: 1e-3 };
    let workers = [worker(DESKTOP, 1e9), worker(PHONE, 1e9)];
    // Batch 64 as a chain: 64 ms + 64 ms + 3 hops; split: 32 rows x 2 ms + 2 hops.
    assert!((pipeline_seconds(64, &work, &[1e9, 1e9]) - 0.131).abs() < 1e-9);
    let BatchPlan::Split(slices) = plan_batch(64, &work, &[1e9, 1e9], &workers) else { panic!("batch 64 is split") };
    assert!((split_seconds(&slices, &work, &workers) - 0.066).abs() < 1e-9);
    assert_eq!(rows(&slices), [(DESKTOP, 32), (PHONE, 32)]);
}

#[test]
fn a_single_row_or_a_single_worker_or_an_unmeasured_route_runs_as_a_pipeline() {
    let work = RemoteWork { flops_per_row: vec![1e6, 1e6], hop_s: 1e-3 };
    let workers = [worker(DESKTOP, 1e9), worker(PHONE, 1e9)];
    assert_eq!(plan_batch(1, &work, &[1e9, 1e9], &workers), BatchPlan::Pipeline);
    assert_eq!(plan_batch(64, &work, &[1e9, 1e9], &workers[..1]), BatchPlan::Pipeline);
    assert_eq!(plan_batch(64, &work, &[1e9, f64::NAN], &workers), BatchPlan::Pipeline);
}
