//! Measured speeds: priors, smoothing, shares and what a stage cost as the requester saw it.

use std::time::Duration;

use super::*;
use crate::net::PeerUuid;
use crate::schedule::stage_record::HopTiming;

const FAST: Executor = Executor::Peer(PeerUuid([1; 16]));
const SLOW: Executor = Executor::Peer(PeerUuid([2; 16]));

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Whether `got` is `want` up to rounding.
fn close(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|got| (got - want).abs() <= want * 1e-9)
}

fn record(stage: usize, executor: Executor, duration: Duration, run: Option<Duration>, span: usize) -> StageRecord {
    StageRecord { stage, executor, duration, hop: HopTiming { network: None, run, gpu: None }, returned: None, transfers: None, span }
}

#[test]
fn a_calibration_prior_gives_way_to_the_first_measurement() {
    let mut capacity = Capacity::default();
    // It claims 1 GFLOP in 1 ms (1 TFLOP/s); it takes 10 ms.
    capacity.set_prior(SLOW, 1_000_000_000, ms(1));
    assert!(close(capacity.speed(SLOW), 1e12));
    capacity.observe(SLOW, 1_000_000_000, ms(10));
    assert!(close(capacity.speed(SLOW), 1e11));
    capacity.set_prior(SLOW, 1_000_000_000, ms(1));
    assert!(close(capacity.speed(SLOW), 1e11), "a prior no longer counts once work was measured");
}

#[test]
fn an_unmeasured_peer_s_prior_is_scaled_as_this_player_s_own_calibration_was() {
    let mut capacity = Capacity::default();
    // Calibrations include compiling: this player's took 100 ms for 1 GFLOP, and its stages
    // then ran at 1 ms per 100 MFLOP (100 GFLOP/s): ten times faster than its calibration.
    capacity.set_prior(Executor::Local, 1_000_000_000, ms(100));
    capacity.observe(Executor::Local, 100_000_000, ms(1));
    // A peer whose calibration took half as long is taken as twice as fast, until measured.
    capacity.set_prior(FAST, 1_000_000_000, ms(50));
    assert!(close(capacity.speed(FAST), 2e11), "{:?}", capacity.speed(FAST));
}

#[test]
fn one_outlier_moves_the_estimate_a_fifth_of_the_way() {
    let mut capacity = Capacity::default();
    for _ in 0..10 {
        capacity.observe(FAST, 1_000_000, ms(1));
    }
    capacity.observe(FAST, 1_000_000, ms(6));
    let seconds_per_flop = 1.0 / capacity.speed(FAST).unwrap();
    assert!((seconds_per_flop - 2e-9).abs() < 1e-12, "1 ms + (6 - 1) ms / 5 per MFLOP: {seconds_per_flop:e}");
}

#[test]
fn shares_are_the_parts_of_recent_work_and_sum_to_one() {
    let mut capacity = Capacity::new(0.2, 1.0);
    capacity.set_prior(SLOW, 100, ms(1));
    for _ in 0..9 {
        capacity.observe(FAST, 1000, ms(1));
    }
    capacity.observe(SLOW, 1000, ms(10));
    let speeds = capacity.speeds();
    assert_eq!(speeds.iter().map(|s| (s.executor, s.samples, s.share)).collect::<Vec<_>>(), [(FAST, 9, 0.9), (SLOW, 1, 0.1)]);
    capacity.forget(SLOW);
    assert_eq!(capacity.speeds().len(), 1);
}

#[test]
fn a_timeout_halves_the_speed() {
    let mut capacity = Capacity::default();
    capacity.observe(SLOW, 1000, ms(1));
    capacity.observe_timeout(SLOW);
    assert!(close(capacity.speed(SLOW), 5e5));
    capacity.set_prior(FAST, 1000, ms(1));
    capacity.observe_timeout(FAST);
    assert!(close(capacity.speed(FAST), 5e5), "an unmeasured prior is halved too");
    capacity.observe_timeout(Executor::Local);
    assert_eq!(capacity.speed(Executor::Local), None, "nothing known, nothing halved");
}

#[test]
fn zero_work_or_zero_time_measures_nothing() {
    let mut capacity = Capacity::default();
    capacity.observe(FAST, 0, ms(1));
    capacity.observe(FAST, 10, Duration::ZERO);
    capacity.set_prior(SLOW, 0, ms(1));
    assert!(capacity.speeds().is_empty());
}

#[test]
fn a_chain_s_span_is_split_by_reported_runs_and_the_transfers_shared_equally() {
    let flops = [10, 20, 30];
    let records = [
        record(0, Executor::Local, ms(3), Some(ms(2)), 1),
        record(1, FAST, ms(12), Some(ms(2)), 2),
        record(2, SLOW, ms(12), Some(ms(6)), 2),
    ];
    assert_eq!(stage_times(&records, &flops), [(Executor::Local, 10, ms(2)), (FAST, 20, ms(4)), (SLOW, 30, ms(8))], "4 ms of transfers, 2 each");
}

#[test]
fn runs_that_were_not_reported_or_claim_more_than_the_span_split_it_equally() {
    let flops = [10, 20, 30];
    let unreported = [record(1, FAST, ms(10), None, 2), record(2, SLOW, ms(10), Some(ms(1)), 2)];
    assert_eq!(stage_times(&unreported, &flops), [(FAST, 20, ms(5)), (SLOW, 30, ms(5))]);
    let inflated = [record(1, FAST, ms(10), Some(ms(9)), 2), record(2, SLOW, ms(10), Some(ms(9)), 2)];
    assert_eq!(stage_times(&inflated, &flops), [(FAST, 20, ms(5)), (SLOW, 30, ms(5))]);
    let alone = [record(1, SLOW, ms(10), Some(ms(1)), 1)];
    assert_eq!(stage_times(&alone, &flops), [(SLOW, 20, ms(10))], "a peer alone on a hand-over is measured by the requester's clock");
}

#[test]
fn a_request_s_records_update_every_executor_that_ran_it() {
    let mut capacity = Capacity::default();
    let records = [record(0, Executor::Local, ms(1), Some(ms(1)), 1), record(1, SLOW, ms(10), Some(ms(9)), 1)];
    capacity.observe_request(&records, &[1_000_000, 1_000_000]);
    assert!(close(capacity.speed(Executor::Local), 1e9), "{:?}", capacity.speed(Executor::Local));
    assert!(close(capacity.speed(SLOW), 1e8), "{:?}", capacity.speed(SLOW));
}

#[test]
fn a_straggler_outpaced_by_a_copy_is_measured_no_faster_than_its_wait_and_gets_no_share() {
    let mut capacity = Capacity::default();
    capacity.observe(FAST, 1_000_000, ms(1));
    capacity.observe(SLOW, 1_000_000, ms(1));
    let shares = |capacity: &Capacity| capacity.speeds().iter().map(|s| (s.executor, s.share)).collect::<Vec<_>>();
    let delivered = shares(&capacity);
    // It held 1 MFLOP for 101 ms: a fifth of the way from 1 ms to 101 ms, 21 ms.
    capacity.observe_at_least(SLOW, 1_000_000, ms(101));
    assert!(close(capacity.speed(SLOW), 1_000_000.0 / 0.021));
    // A wait shorter than its estimate says nothing.
    capacity.observe_at_least(SLOW, 1_000_000, ms(5));
    assert!(close(capacity.speed(SLOW), 1_000_000.0 / 0.021));
    assert_eq!(shares(&capacity), delivered, "only the work it delivered counts");
    // An executor never measured takes the wait as its first estimate.
    const NEW: Executor = Executor::Peer(PeerUuid([3; 16]));
    capacity.observe_at_least(NEW, 1_000_000, ms(40));
    assert!(close(capacity.speed(NEW), 1_000_000.0 / 0.040));
}

#[test]
fn an_outpaced_chain_blames_only_the_member_predicted_slowest_less_the_others_time() {
    const OTHER: Executor = Executor::Peer(PeerUuid([4; 16]));
    let mut capacity = Capacity::default();
    capacity.observe(FAST, 1_000_000, ms(1));
    capacity.observe(SLOW, 1_000_000, ms(10));
    capacity.observe(OTHER, 1_000_000, ms(1));
    // FAST ran two stages (2 ms predicted), SLOW one (10 ms): SLOW stalled, and took at least
    // 112 ms - 2 ms = 110 ms: a fifth of the way from 10 ms, 30 ms.
    capacity.observe_outpaced(&[(FAST, 1_000_000), (SLOW, 1_000_000), (FAST, 1_000_000)], ms(112));
    assert!(close(capacity.speed(SLOW), 1_000_000.0 / 0.030), "{:?}", capacity.speed(SLOW));
    assert!(close(capacity.speed(FAST), 1e9), "the member that kept its pace is not blamed");
    // A member never measured is the one suspected.
    const NEW: Executor = Executor::Peer(PeerUuid([3; 16]));
    capacity.observe_outpaced(&[(OTHER, 1_000_000), (NEW, 1_000_000)], ms(41));
    assert!(close(capacity.speed(NEW), 1_000_000.0 / 0.040));
    assert!(close(capacity.speed(OTHER), 1e9));
}

#[test]
fn a_peer_that_leaves_and_comes_back_gets_no_fresh_claimed_prior() {
    let mut capacity = Capacity::default();
    // It claims 1 TFLOP/s, is measured at 100 GFLOP/s, leaves and comes back claiming again.
    capacity.set_prior(SLOW, 1_000_000_000, ms(1));
    capacity.observe(SLOW, 1_000_000_000, ms(10));
    capacity.forget(SLOW);
    assert_eq!(capacity.speeds(), [], "gone: not listed");
    capacity.set_prior(SLOW, 1_000_000_000, ms(1));
    assert!(close(capacity.speed(SLOW), 1e11), "what was measured holds, not the claim: {:?}", capacity.speed(SLOW));
    // One that leaves before any of its work came back had its claim believed once already.
    capacity.set_prior(FAST, 1_000_000_000, ms(1));
    capacity.forget(FAST);
    capacity.set_prior(FAST, 1_000_000_000, ms(1));
    assert_eq!(capacity.speed(FAST), None, "no prior the second time: placed as the slowest until measured");
    capacity.observe(FAST, 1_000_000_000, ms(2));
    assert!(close(capacity.speed(FAST), 5e11), "then measured as anyone");
}
