//! The budget of GPU time for the others' stages, driven by hand.

use super::*;

const FRAME: Duration = Duration::from_micros(16_667);
const BUDGET: Duration = Duration::from_millis(2);
const STAGE: CostKey = (1, 1);

fn ms(ms: f64) -> Duration {
    Duration::from_secs_f64(ms / 1e3)
}

/// Offers `count` jobs at `now`; how many started.
fn offer_many(budget: &mut FrameBudget<u32>, count: u32, now: Instant) -> usize {
    (0..count).filter(|&job| matches!(budget.offer(STAGE, job, now), Admission::Start { .. })).count()
}

#[test]
fn a_stage_never_seen_is_charged_a_whole_frame_s_budget_and_the_next_waits() {
    let now = Instant::now();
    let mut budget = FrameBudget::new(BUDGET, FRAME, 8, now);
    assert_eq!(budget.offer(STAGE, 1, now), Admission::Start { job: 1, charged: BUDGET });
    assert_eq!(budget.offer(STAGE, 2, now), Admission::Queued);
    assert_eq!(budget.release(now), vec![], "the bucket is empty");
    assert_eq!(budget.release(now + FRAME).len(), 1, "a frame later it has filled again");
}

#[test]
fn measured_stages_start_while_the_frame_s_budget_lasts() {
    let now = Instant::now();
    let mut budget = FrameBudget::new(BUDGET, FRAME, 64, now);
    let Admission::Start { charged, .. } = budget.offer(STAGE, 0, now) else { panic!("the bucket starts full") };
    // It took 0.5 ms: the 1.5 ms it was over-charged comes back, and each next one costs 0.5 ms.
    budget.settle(STAGE, charged, ms(0.5));
    assert_eq!(offer_many(&mut budget, 10, now), 3, "1.5 ms left: three at 0.5 ms start (the third leaves it at zero)");
    assert_eq!(budget.waiting(), 7);
    // Ten frames later the bucket is full again, but it holds one frame's budget only.
    let later = now + FRAME * 10;
    assert_eq!(budget.release(later).len(), 4, "a full bucket holds one frame's budget: 2 ms, four stages");
}

#[test]
fn over_many_frames_the_gpu_time_started_stays_within_the_budget_per_frame() {
    let start = Instant::now();
    let mut budget = FrameBudget::new(BUDGET, FRAME, 1000, start);
    let gpu = ms(0.7);
    let mut started = Duration::ZERO;
    let mut job = 0;
    for frame in 0..600u32 {
        let now = start + FRAME * frame;
        // Others flood this player: five stages a frame.
        for _ in 0..5 {
            job += 1;
            if let Admission::Start { charged, .. } = budget.offer(STAGE, job, now) {
                budget.settle(STAGE, charged, gpu);
                started += gpu;
            }
        }
        for (_, charged) in budget.release(now) {
            budget.settle(STAGE, charged, gpu);
            started += gpu;
        }
    }
    // At most the bucket it started with, 599 frames' refills and one stage past the last.
    assert!(started <= BUDGET * 600 + gpu, "{started:?} over 600 frames");
    assert!(started >= BUDGET * 599 - gpu, "the budget is used, not wasted: {started:?}");
}

#[test]
fn past_the_waiting_bound_a_stage_is_handed_back() {
    let now = Instant::now();
    let mut budget = FrameBudget::new(BUDGET, FRAME, 2, now);
    budget.offer(STAGE, 1, now);
    assert_eq!((budget.offer(STAGE, 2, now), budget.offer(STAGE, 3, now)), (Admission::Queued, Admission::Queued));
    assert_eq!(budget.offer(STAGE, 4, now), Admission::Refused(4));
}

#[test]
fn a_stage_that_cost_more_than_charged_leaves_a_debt_the_next_frames_repay() {
    let now = Instant::now();
    let mut budget = FrameBudget::new(BUDGET, FRAME, 8, now);
    let Admission::Start { charged, .. } = budget.offer(STAGE, 1, now) else { panic!() };
    budget.settle(STAGE, charged, ms(6.0));
    budget.offer(STAGE, 2, now);
    assert_eq!(budget.release(now + FRAME * 3 / 2).len(), 0, "4 ms of debt, 3 ms repaid: nothing yet");
    assert_eq!(budget.release(now + FRAME * 3).len(), 1);
}
