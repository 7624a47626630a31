//! Splitting a batch over players, and choosing it over a pipeline, by predicted time.

use super::*;

const DESKTOP: PeerUuid = PeerUuid([1; 16]);
const PHONE: PeerUuid = PeerUuid([2; 16]);
const LAPTOP: PeerUuid = PeerUuid([3; 16]);

fn player(peer: PeerUuid, speed: f64) -> PlayerSpeed {
    PlayerSpeed { peer, speed }
}

fn rows(slices: &[BatchSlice]) -> Vec<(PeerUuid, usize)> {
    slices.iter().map(|s| (s.player, s.rows.len())).collect()
}

#[test]
fn a_desktop_nine_times_a_phone_s_speed_gets_ninety_percent_of_the_batch() {
    let slices = split_rows(80, &[player(DESKTOP, 9e12), player(PHONE, 1e12)]);
    assert_eq!(rows(&slices), [(DESKTOP, 72), (PHONE, 8)]);
    assert_eq!(slices[0].rows, 0..72);
    assert_eq!(slices[1].rows, 72..80, "the slices cover the batch in order");
}

#[test]
fn slices_are_whole_blocks_of_rows_by_largest_remainder_and_a_player_too_slow_for_one_is_left_out() {
    let equal = split_rows(64, &[player(DESKTOP, 1.0), player(PHONE, 1.0), player(LAPTOP, 1.0)]);
    assert_eq!(rows(&equal), [(DESKTOP, 24), (PHONE, 24), (LAPTOP, 16)]);
    // Speeds that drift a little give the same sizes (no new batch to compile for).
    let drifted = split_rows(64, &[player(DESKTOP, 1.05), player(PHONE, 1.0), player(LAPTOP, 0.97)]);
    assert_eq!(rows(&drifted), rows(&equal));
    let ragged = split_rows(20, &[player(DESKTOP, 1.0), player(PHONE, 1.0)]);
    assert_eq!(rows(&ragged), [(DESKTOP, 16), (PHONE, 4)], "the last block is cut to the batch");
    let slow = split_rows(32, &[player(DESKTOP, 100.0), player(PHONE, 1.0)]);
    assert_eq!(rows(&slow), [(DESKTOP, 32)]);
    assert_eq!(rows(&split_rows(8, &[player(DESKTOP, 1.0), player(PHONE, 1.0)])), [(DESKTOP, 8)], "one block is not split");
    assert_eq!(split_rows(4, &[player(DESKTOP, f64::NAN)]), vec![], "no usable speed");
    assert_eq!(split_rows(0, &[player(DESKTOP, 1.0)]), vec![]);
}

#[test]
fn a_batch_is_split_where_its_slices_finish_before_the_chain_would() {
    // Two remote stages of 1 MFLOP per row, 1 ms hops, two players of 1 GFLOP/s.
    let work = RemoteWork { flops_per_row: vec![1e6, 1e6], hop_s: 1e-3 };
    let players = [player(DESKTOP, 1e9), player(PHONE, 1e9)];
    // Batch 64 as a chain: 64 ms + 64 ms + 3 hops; split: 32 rows x 2 ms + 2 hops.
    assert!((pipeline_seconds(64, &work, &[1e9, 1e9]) - 0.131).abs() < 1e-9);
    let BatchPlan::Split(slices) = plan_batch(64, &work, &[1e9, 1e9], &players) else { panic!("batch 64 is split") };
    assert!((split_seconds(&slices, &work, &players) - 0.066).abs() < 1e-9);
    assert_eq!(rows(&slices), [(DESKTOP, 32), (PHONE, 32)]);
}

#[test]
fn a_single_row_or_a_single_player_or_an_unmeasured_route_runs_as_a_pipeline() {
    let work = RemoteWork { flops_per_row: vec![1e6, 1e6], hop_s: 1e-3 };
    let players = [player(DESKTOP, 1e9), player(PHONE, 1e9)];
    assert_eq!(plan_batch(1, &work, &[1e9, 1e9], &players), BatchPlan::Pipeline);
    assert_eq!(plan_batch(64, &work, &[1e9, 1e9], &players[..1]), BatchPlan::Pipeline);
    assert_eq!(plan_batch(64, &work, &[1e9, f64::NAN], &players), BatchPlan::Pipeline);
}
