//! When continuous runs start.

use super::*;

/// Which of `frames` frames start a run, finishing each run `latency` frames after it started
/// with `gpu` of GPU time.
fn starts(cadence: &mut RunCadence, frames: usize, latency: usize, gpu: Option<Duration>) -> Vec<usize> {
    let mut started = Vec::new();
    let mut finishing: Vec<usize> = Vec::new();
    for frame in 0..frames {
        for _ in finishing.extract_if(.., |at| *at == frame) {
            cadence.finished(gpu);
        }
        if cadence.frame(false) {
            started.push(frame);
            finishing.push(frame + latency);
        }
    }
    started
}

#[test]
fn every_n_frames_starts_on_the_nth_frame_and_every_nth_after() {
    let mut cadence = RunCadence::new(Cadence::EveryFrames(3), 4, None);
    assert_eq!(starts(&mut cadence, 10, 1, None), vec![0, 3, 6, 9]);
    let mut every_frame = RunCadence::new(Cadence::EveryFrames(1), 4, None);
    assert_eq!(starts(&mut every_frame, 4, 1, None), vec![0, 1, 2, 3]);
}

#[test]
fn no_more_than_k_runs_are_in_flight() {
    // Runs take 4 frames; with two in flight a run starts as soon as one finishes.
    let mut cadence = RunCadence::new(Cadence::EveryFrames(1), 2, None);
    assert_eq!(starts(&mut cadence, 10, 4, None), vec![0, 1, 4, 5, 8, 9]);
}

#[test]
fn on_demand_runs_only_when_asked() {
    let mut cadence = RunCadence::new(Cadence::OnDemand, 1, None);
    assert!(!cadence.frame(false));
    assert!(cadence.frame(true));
    assert_eq!(cadence.in_flight(), 1);
    // Asked again while the one allowed run is in flight: not yet.
    assert!(!cadence.frame(true));
    cadence.finished(None);
    assert!(cadence.frame(true));
}

#[test]
fn with_a_budget_runs_costing_more_than_it_start_only_as_often_as_the_budget_pays_for() {
    // Each run measured at 3 ms of GPU time against 1 ms per frame: after the first (unmeasured)
    // run, one every third frame.
    let mut cadence = RunCadence::new(Cadence::EveryFrames(1), 4, Some(Duration::from_millis(1)));
    let started = starts(&mut cadence, 20, 1, Some(Duration::from_millis(3)));
    let gaps: Vec<usize> = started.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[1..].iter().all(|gap| *gap == 3), "{started:?}");
    // Cheaper than the budget: every frame.
    let mut cheap = RunCadence::new(Cadence::EveryFrames(1), 4, Some(Duration::from_millis(1)));
    assert_eq!(starts(&mut cheap, 6, 1, Some(Duration::from_micros(500))), vec![0, 1, 2, 3, 4, 5]);
}
