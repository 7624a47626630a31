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
fn a_desktop_ten_times_a_phone_s_speed_gets_ninety_percent_of_the_batch() {
    let slices = split_rows(100, &[worker(DESKTOP, 10e12), worker(PHONE, 1e12 * 10.0 / 9.0)]);
    assert_eq!(rows(&slices), [(DESKTOP, 90), (PHONE, 10)]);
    assert_eq!(slices[0].rows, 0..90);
    assert_eq!(slices[1].rows, 90..100, "the slices cover the batch in order");
}

#[test]
fn rows_are_rounded_by_largest_remainder_and_a_worker_too_slow_for_one_row_is_left_out() {
    let equal = split_rows(64, &[worker(DESKTOP, 1.0), worker(PHONE, 1.0), worker(LAPTOP, 1.0)]);
    assert_eq!(rows(&equal), [(DESKTOP, 22), (PHONE, 21), (LAPTOP, 21)]);
    let slow = split_rows(4, &[worker(DESKTOP, 100.0), worker(PHONE, 1.0)]);
    assert_eq!(rows(&slow), [(DESKTOP, 4)]);
    assert_eq!(split_rows(4, &[worker(DESKTOP, f64::NAN)]), vec![], "no usable speed");
    assert_eq!(split_rows(0, &[worker(DESKTOP, 1.0)]), vec![]);
}

#[test]
fn a_batch_is_split_where_its_slices_finish_before_the_chain_would() {
    // Two remote stages of 1 MFLOP per row, 1 ms hops, two workers of 1 GFLOP/s.
    let work = RemoteWork { flops_per_row: vec![1e6, 1e6], hop_s: 1e-3 };
    let workers = [worker(DESKTOP, 1e9), worker(PHONE, 1e9)];
    // Batch 64 as a chain: 64 ms + 64 ms + 3 hops; split: 32 rows × 2 ms + 2 hops.
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
