//! The pipeline's hand-overs, chains, reruns and records, driven by hand.

use std::collections::HashMap;

use super::*;

const W1: PeerUuid = PeerUuid([1; 16]);
const W2: PeerUuid = PeerUuid([2; 16]);
const W3: PeerUuid = PeerUuid([3; 16]);

fn t(v: f32) -> Tensor {
    Tensor::new(vec![1], vec![v]).unwrap()
}

/// A pipeline keeping `k` in flight, with requests `0..requests` waiting (inputs `t(r)`).
fn queued(k: usize, requests: RequestId) -> Pipeline {
    let mut p = Pipeline::new(k, 3);
    for r in 0..requests {
        p.submit(r, t(r as f32));
    }
    p
}

fn three_stages() -> StageAssignment {
    assign_stages(3, &[PlayerSpeed { peer: W2, speed: 1.0 }, PlayerSpeed { peer: W1, speed: 1.0 }])
}

fn player(peer: PeerUuid, speed: f64) -> PlayerSpeed {
    PlayerSpeed { peer, speed }
}

/// How often each player runs a remote stage over `requests` consecutive requests.
fn remote_runs(assignment: &StageAssignment, requests: std::ops::Range<RequestId>) -> HashMap<PeerUuid, usize> {
    let mut runs = HashMap::new();
    for request in requests {
        for executor in assignment.for_request(request, 0).into_iter().skip(1) {
            let Executor::Peer(peer) = executor else { panic!("a remote stage ran locally") };
            *runs.entry(peer).or_default() += 1;
        }
    }
    runs
}

#[test]
fn stage_zero_is_local_and_equal_players_alternate_over_the_remote_stages() {
    assert_eq!(three_stages().for_request(0, 0), [Executor::Local, Executor::Peer(W1), Executor::Peer(W2)]);
    assert_eq!(three_stages().for_request(7, 0), [Executor::Local, Executor::Peer(W1), Executor::Peer(W2)]);
    assert_eq!(assign_stages(3, &[]).for_request(5, 0), [Executor::Local; 3]);
    assert_eq!(assign_stages(3, &[player(W1, 1.0)]).for_request(5, 0), [Executor::Local, Executor::Peer(W1), Executor::Peer(W1)]);
    assert_eq!(three_stages().shares(), [(W1, 0.5), (W2, 0.5)]);
}

#[test]
fn with_more_players_than_remote_stages_every_player_gets_requests_in_turn() {
    let speeds = [player(W1, 1.0), player(W2, 1.0), player(W3, 1.0)];
    let two_stages = assign_stages(2, &speeds);
    let remote_of = |request: RequestId| two_stages.for_request(request, 0)[1];
    assert_eq!((0..6).map(remote_of).collect::<Vec<_>>(), [W1, W2, W3, W1, W2, W3].map(Executor::Peer));
    let three_stages = assign_stages(3, &speeds);
    assert_eq!(remote_runs(&three_stages, 0..60).values().collect::<Vec<_>>(), [&40; 3], "120 remote stages, 40 each");
    // A rerun moves on to other turns.
    assert_ne!(three_stages.for_request(2, 0), three_stages.for_request(2, 1));
}

#[test]
fn players_get_remote_stages_in_proportion_to_their_speed_and_the_slowest_at_least_one_turn() {
    let desktop_and_phone = assign_stages(2, &[player(W1, 10.0), player(W2, 1.0)]);
    let runs = remote_runs(&desktop_and_phone, 0..600);
    assert_eq!((runs[&W1], runs[&W2]), (550, 50), "11 parts: 10 to the desktop, 1 to the phone");
    let one_slowed = assign_stages(3, &[player(W1, 1.0), player(W2, 1.0), player(W3, 0.1)]);
    let shares = one_slowed.shares();
    assert_eq!(shares.iter().map(|s| s.0).collect::<Vec<_>>(), [W1, W2, W3], "fastest first");
    assert!(shares[2].1 < 0.06 && shares[2].1 > 0.0, "{shares:?}");
    let crawling = assign_stages(3, &[player(W1, 1e6), player(W3, 1.0)]);
    assert_eq!(crawling.shares()[1], (W3, 1.0 / 60.0), "kept at one turn, so that it is still measured");
    let unknown = assign_stages(2, &[player(W1, 4.0), player(W2, f64::NAN)]);
    assert_eq!(unknown.shares()[1], (W2, 0.5), "a speed that is not a number counts as the slowest known");
}

#[test]
fn routed_per_request_every_remote_stage_of_a_request_runs_on_one_player_and_requests_follow_the_speeds() {
    let four_stages = assign_stages(4, &[player(W1, 2.0), player(W2, 1.0), player(W3, 1.0)]).routed(Routing::PerRequest);
    for request in 0..60 {
        let route = four_stages.for_request(request, 0);
        assert_eq!(route[0], Executor::Local);
        assert!(route[2..].iter().all(|e| *e == route[1]), "request {request}: {route:?}");
    }
    let runs = remote_runs(&four_stages, 0..60);
    assert_eq!((runs[&W1], runs[&W2], runs[&W3]), (90, 45, 45), "180 remote stages, by speed 2 : 1 : 1");
    // A rerun moves on to the next turn: another player.
    assert_ne!(four_stages.for_request(5, 0)[1], four_stages.for_request(5, 1)[1]);
    // Per stage (the default), the same request's stages go to different players.
    let per_stage = assign_stages(4, &[player(W1, 2.0), player(W2, 1.0), player(W3, 1.0)]);
    assert!((0..60).any(|r| per_stage.for_request(r, 0)[1] != per_stage.for_request(r, 0)[2]));
}

/// `pipeline` with requests 0..`requests` (request r's input `t(r)`) submitted and started.
fn started(mut pipeline: Pipeline, requests: u32, assignment: &StageAssignment, now: Instant) -> Pipeline {
    for r in 0..requests {
        pipeline.submit(r as RequestId, t(r as f32));
    }
    pipeline.start_waiting(assignment, now);
    pipeline
}

fn run(request: RequestId, stage: usize, executor: Executor, input: Tensor, onward: &[PeerUuid]) -> PipelineAction {
    PipelineAction::Run { request, stage, executor, input: input.into(), onward: onward.to_vec() }
}

fn timings(runs: &[(u16, u32)]) -> Vec<StageTiming> {
    runs.iter().map(|&(stage, run_us)| StageTiming { stage, run_us, gpu_us: Some(run_us / 4), network_us: Some(200) }).collect()
}

#[test]
fn remote_stages_run_as_one_chain_and_finishing_a_request_starts_the_next() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = Pipeline::new(2, 3);
    for r in 0..3 {
        p.submit(r, t(r as f32));
    }
    let started = p.start_waiting(&a, now);
    assert_eq!(started[0], run(0, 0, Executor::Local, t(0.0), &[W1, W2]), "stage 0's output starts the chain by itself");
    assert_eq!(started.len(), 2);
    assert_eq!((p.in_flight(), p.waiting()), (2, 1));
    p.note_local_run(0, 0, Duration::from_micros(700), Some(Duration::from_micros(300)));
    let next = p.stage_finished(0, 0, Executor::Local, t(10.0), &a, now).unwrap();
    assert_eq!(next, vec![], "already on its way to W1, whose output goes on to W2, not back");
    p.note_remote_runs(0, &timings(&[(1, 1000), (2, 1500)]), Some(Duration::from_micros(250)));
    let later = now + Duration::from_millis(4);
    let done = p.stage_finished(0, 2, Executor::Peer(W2), t(12.0), &a, later).unwrap();
    let PipelineAction::Finished { request: 0, stages, reruns: 0, .. } = &done[0] else { panic!("{done:?}") };
    assert_eq!(stages.len(), 3);
    for record in &stages[1..] {
        assert_eq!((record.duration, record.span, record.transfers), (Duration::from_millis(4), 2, Some(Duration::from_micros(1500))), "4 ms span, 2.5 ms of runs");
    }
    let micros = |us| Some(Duration::from_micros(us));
    assert_eq!(stages[0].hop, HopTiming { network: None, run: micros(700), gpu: micros(300) });
    assert_eq!(stages[0].hop.queue(), micros(400));
    assert_eq!(stages[2].hop, HopTiming { network: micros(200), run: micros(1500), gpu: micros(375) });
    assert_eq!(stages.iter().map(|s| s.returned).collect::<Vec<_>>(), [None, None, micros(250)], "only the chain's last output came back");
    assert_eq!(stages[0].transfers, None, "local");
    assert!(matches!(&done[1], PipelineAction::Run { request: 2, stage: 0, .. }));
}

#[test]
fn a_local_output_that_could_not_go_on_by_itself_is_handed_over_and_a_request_in_flight_keeps_its_route() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = started(Pipeline::new(2, 3), 2, &a, now);
    p.keep_local_output(0);
    let next = p.stage_finished(0, 0, Executor::Local, t(5.0), &a, now).unwrap();
    assert_eq!(next, vec![run(0, 1, Executor::Peer(W1), t(5.0), &[W2])]);
    // The players' speeds changed and the stages were placed again: request 1 finishes on the
    // route it started with, whose chain its local stage has already started.
    let replanned = assign_stages(3, &[player(W2, 5.0), player(W1, 1.0)]);
    let next = p.stage_finished(1, 0, Executor::Local, t(6.0), &replanned, now).unwrap();
    assert_eq!(next, vec![], "already on its way to W1 and W2");
}

#[test]
fn results_from_the_wrong_peer_or_stage_are_refused_and_a_chain_cut_short_goes_on_from_its_output() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = started(Pipeline::new(2, 3), 1, &a, now);
    p.stage_finished(0, 0, Executor::Local, t(1.0), &a, now).unwrap();
    assert!(matches!(p.stage_finished(0, 1, Executor::Peer(W2), t(2.0), &a, now), Err(StaleResult::Unexpected { .. })));
    assert!(matches!(p.stage_finished(0, 2, Executor::Peer(W1), t(2.0), &a, now), Err(StaleResult::Unexpected { .. })));
    assert_eq!(p.stage_finished(9, 0, Executor::Local, t(2.0), &a, now), Err(StaleResult::UnknownRequest(9)));
    // W1 could not reach W2 and sent stage 1's output back: stage 2 goes to W2 from here.
    let next = p.stage_finished(0, 1, Executor::Peer(W1), t(2.0), &a, now).unwrap();
    assert_eq!(next, vec![run(0, 2, Executor::Peer(W2), t(2.0), &[])]);
}

#[test]
fn a_finished_request_lists_every_hand_over_with_what_came_back_even_where_a_chain_returned_early() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = started(Pipeline::new(2, 3), 1, &a, now);
    p.stage_finished(0, 0, Executor::Local, t(1.0), &a, now).unwrap();
    p.stage_finished(0, 1, Executor::Peer(W1), t(2.0), &a, now).unwrap();
    let done = p.stage_finished(0, 2, Executor::Peer(W2), t(3.0), &a, now).unwrap();
    let PipelineAction::Finished { handovers, .. } = &done[0] else { panic!("{done:?}") };
    let handover = |stage, input: f32, executor, output: f32| Handover { stage, input: t(input).into(), executors: vec![executor], output: t(output) };
    assert_eq!(
        *handovers,
        [handover(0, 0.0, Executor::Local, 1.0), handover(1, 1.0, Executor::Peer(W1), 2.0), handover(2, 2.0, Executor::Peer(W2), 3.0)],
        "W1's chain came back after stage 1: its output is kept, and stage 2 went on from it"
    );
}

#[test]
fn losing_any_peer_of_a_chain_reruns_the_chain_elsewhere_from_the_kept_input() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = started(Pipeline::new(2, 3), 1, &a, now);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &a, now).unwrap();
    let without_w2 = assign_stages(3, &[player(W1, 1.0)]);
    let rerun = p.rerun_peer(W2, &without_w2, now);
    assert_eq!(rerun, vec![run(0, 1, Executor::Peer(W1), t(5.0), &[W1])], "W2 ran the chain's second stage");
    // A late answer from the lost peer no longer counts.
    assert!(p.stage_finished(0, 2, Executor::Peer(W2), t(6.0), &without_w2, now).is_err());
    let done = p.stage_finished(0, 2, Executor::Peer(W1), t(7.0), &without_w2, now).unwrap();
    assert!(matches!(&done[0], PipelineAction::Finished { output, reruns: 1, .. } if *output == t(7.0)));
}

#[test]
fn a_request_whose_input_is_on_this_gpu_starts_here_and_is_rerun_from_its_first_activation() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = Pipeline::new(2, 3);
    p.submit_on_this_gpu(0, vec![1, 1, 28, 28]);
    let started = p.start_waiting(&a, now);
    let on_gpu = StageInput::OnThisGpu { shape: vec![1, 1, 28, 28] };
    assert_eq!(started, vec![PipelineAction::Run { request: 0, stage: 0, executor: Executor::Local, input: on_gpu, onward: vec![W1, W2] }]);
    assert_eq!(p.batch_of(0), Some(1));
    p.stage_finished(0, 0, Executor::Local, t(5.0), &a, now).unwrap();
    // W2 is lost mid-chain: the chain runs again from stage 0's output, not from the image.
    let rerun = p.rerun_peer(W2, &assign_stages(3, &[player(W1, 1.0)]), now);
    assert_eq!(rerun, vec![run(0, 1, Executor::Peer(W1), t(5.0), &[W1])]);
}

#[test]
fn a_dropped_answer_reruns_only_its_own_request_and_only_from_the_peer_holding_it() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = started(Pipeline::new(2, 3), 2, &a, now);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &a, now).unwrap();
    p.stage_finished(1, 0, Executor::Local, t(6.0), &a, now).unwrap();
    // Both requests are on the chain W1 → W2; W2's answer for request 1 did not open.
    let rerun = p.rerun_request(1, W2, &a, now);
    assert_eq!(rerun.len(), 1, "request 0 is untouched: {rerun:?}");
    assert!(matches!(rerun[0], PipelineAction::Run { request: 1, stage: 1, .. }));
    // A peer that does not hold a request cannot have it re-run by naming it.
    const STRANGER: PeerUuid = PeerUuid([9; 16]);
    assert_eq!(p.rerun_request(0, STRANGER, &a, now), vec![]);
    assert_eq!(p.rerun_request(7, W1, &a, now), vec![], "no such request");
    assert_eq!(p.in_flight(), 2);
}

#[test]
fn a_slice_pinned_to_a_player_runs_all_its_remote_stages_there_unless_the_player_is_gone() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = Pipeline::new(2, 3);
    p.submit_to(0, t(0.0), W2);
    p.submit_to(1, t(1.0), PeerUuid([9; 16]));
    let started = p.start_waiting(&a, now);
    assert_eq!(started[0], run(0, 0, Executor::Local, t(0.0), &[W2, W2]), "both remote stages on W2");
    assert_eq!(started[1], run(1, 0, Executor::Local, t(1.0), &[W1, W2]), "a player not placed: the usual route");
}

#[test]
fn overdue_remote_stages_are_rerun_but_local_ones_wait() {
    let a = three_stages();
    let start = Instant::now();
    let mut p = started(Pipeline::new(2, 3), 2, &a, start);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &a, start).unwrap();
    let later = start + Duration::from_secs(3);
    let rerun = p.rerun_overdue(Duration::from_secs(2), &a, later);
    assert_eq!(rerun.len(), 1, "request 1 is still on the local GPU");
    assert!(matches!(rerun[0], PipelineAction::Run { request: 0, stage: 1, .. }));
}

#[test]
fn a_request_rerun_more_often_than_allowed_is_abandoned_and_frees_its_slot() {
    let a = three_stages();
    let start = Instant::now();
    let mut p = started(Pipeline::new(1, 2), 2, &a, start);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &a, start).unwrap();
    for reruns in 1..=2 {
        let rerun = p.rerun_peer(W1, &a, start);
        assert!(matches!(rerun[..], [PipelineAction::Run { request: 0, stage: 1, .. }]), "rerun {reruns}: {rerun:?}");
    }
    let given_up = p.rerun_peer(W1, &a, start);
    assert_eq!(given_up[0], PipelineAction::Abandoned { request: 0, reruns: 2 });
    assert_eq!(given_up[1], run(1, 0, Executor::Local, t(1.0), &[W1, W2]), "the waiting request takes the slot");
    assert_eq!((p.in_flight(), p.waiting()), (1, 0));
}

#[test]
fn an_aborted_request_frees_its_slot_for_a_waiting_one() {
    let a = three_stages();
    let now = Instant::now();
    let mut p = started(Pipeline::new(1, 3), 2, &a, now);
    assert_eq!(p.abort(0, &a, now), vec![run(1, 0, Executor::Local, t(1.0), &[W1, W2])]);
    assert_eq!((p.in_flight(), p.waiting()), (1, 0));
    assert_eq!(p.abort(7, &a, now), vec![], "an unknown request changes nothing");
}

#[test]
fn the_peers_of_an_overdue_chain_are_named_once() {
    let a = three_stages();
    let start = Instant::now();
    let mut p = started(Pipeline::new(2, 3), 1, &a, start);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &a, start).unwrap();
    assert_eq!(p.overdue_peers(Duration::from_secs(2), start + Duration::from_secs(1)), vec![]);
    assert_eq!(p.overdue_peers(Duration::from_secs(2), start + Duration::from_secs(3)), vec![W1, W2]);
}

/// Request 0 of a three-stage pipeline over W1 (chain of stages 1 and 2) with W2 idle: stage 0
/// done at `now`, so that its chain waits on W1.
fn waiting_on_w1(now: Instant) -> (Pipeline, StageAssignment) {
    let only_w1 = assign_stages(3, &[player(W1, 1.0)]);
    let mut p = started(Pipeline::new(1, 3), 1, &only_w1, now);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &only_w1, now).unwrap();
    (p, assign_stages(3, &[player(W1, 1.0), player(W2, 1.0)]))
}

const TEN_MS: Option<Duration> = Some(Duration::from_millis(10));

#[test]
fn a_hand_over_late_by_three_times_a_copy_s_time_is_copied_once_to_another_player() {
    let now = Instant::now();
    let (mut p, both) = waiting_on_w1(now);
    let policy = StealPolicy { margin: 3.0, min_wait: Duration::from_millis(20), max_copies: 1 };
    let predicted = |stage: usize, executors: &[Executor], batch: usize| {
        assert!(stage >= 1 && stage + executors.len() <= 3 && batch == 1, "{stage} {executors:?} {batch}");
        TEN_MS
    };
    // A copy on idle W2 takes 10 ms: worth it once W1 is 3 × 10 ms late.
    assert_eq!(p.steal_from_stragglers(&policy, &both, predicted, now + Duration::from_millis(39)), vec![], "29 ms late");
    let copied = p.steal_from_stragglers(&policy, &both, predicted, now + Duration::from_millis(40));
    assert_eq!(copied, vec![run(0, 1, Executor::Peer(W2), t(5.0), &[W2])], "W2 runs the whole chain from the kept input");
    assert_eq!(p.steal_from_stragglers(&policy, &both, predicted, now + Duration::from_millis(90)), vec![], "copied once");
    // Without a prediction (nothing measured yet) nothing is copied.
    let (mut p, both) = waiting_on_w1(now);
    assert_eq!(p.steal_from_stragglers(&policy, &both, |_, _, _| None, now + Duration::from_secs(1)), vec![]);
    // A fast GPU's jitter is no straggler: under min_wait nothing is copied.
    assert_eq!(p.steal_from_stragglers(&policy, &both, |_, _, _| Some(Duration::from_micros(100)), now + Duration::from_millis(19)), vec![]);
}

#[test]
fn the_copy_that_comes_back_first_is_used_once_and_the_straggler_is_reported_with_its_wait() {
    let now = Instant::now();
    let (mut p, both) = waiting_on_w1(now);
    p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, now + Duration::from_millis(100));
    let back = now + Duration::from_millis(140);
    let done = p.stage_finished(0, 2, Executor::Peer(W2), t(7.0), &both, back).unwrap();
    assert_eq!(done[0], PipelineAction::Outpaced { request: 0, stage: 1, executors: vec![Executor::Peer(W1); 2], by: W2, waited: Duration::from_millis(140), batch: 1 });
    let PipelineAction::Finished { output, stages, reruns: 0, handovers, .. } = &done[1] else { panic!("{done:?}") };
    assert_eq!(*output, t(7.0));
    assert_eq!(stages[1..].iter().map(|s| (s.executor, s.duration)).collect::<Vec<_>>(), [(Executor::Peer(W2), Duration::from_millis(40)); 2], "the copy's own span");
    assert_eq!(handovers.last().unwrap().executors, [Executor::Peer(W2); 2]);
    // The straggler's answer comes after: stale, not used a second time.
    assert_eq!(p.stage_finished(0, 2, Executor::Peer(W1), t(7.0), &both, back), Err(StaleResult::UnknownRequest(0)));
}

#[test]
fn when_the_straggler_answers_first_the_copy_is_stale_and_nothing_is_outpaced() {
    let now = Instant::now();
    let (mut p, both) = waiting_on_w1(now);
    p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, now + Duration::from_millis(100));
    let done = p.stage_finished(0, 2, Executor::Peer(W1), t(7.0), &both, now + Duration::from_millis(120)).unwrap();
    assert!(matches!(&done[..], [PipelineAction::Finished { .. }]), "{done:?}");
    assert!(p.stage_finished(0, 2, Executor::Peer(W2), t(7.0), &both, now + Duration::from_millis(130)).is_err());
}

#[test]
fn a_copy_goes_where_it_would_finish_before_the_straggler_has_waited_and_goes_on_if_the_straggler_leaves() {
    let now = Instant::now();
    let late = now + Duration::from_secs(1);
    let only = |peer| assign_stages(3, &[player(peer, 1.0)]);
    // Request 0 takes 10 ms on W1, which holds all of it; W2 takes 400 ms for anything, and is
    // handed request 1 when request 0 has waited 500 ms.
    let predict = |_: usize, executors: &[Executor], _: usize| Some(Duration::from_millis(if executors.contains(&Executor::Peer(W2)) { 400 } else { 10 }));
    let mut p = Pipeline::new(2, 3);
    p.submit(0, t(0.0));
    p.start_waiting(&only(W1), now);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &only(W1), now).unwrap();
    let handed = now + Duration::from_millis(500);
    p.submit(1, t(1.0));
    p.start_waiting(&only(W2), handed);
    p.stage_finished(1, 0, Executor::Local, t(6.0), &only(W2), handed).unwrap();
    let both = assign_stages(3, &[player(W1, 1.0), player(W2, 1.0)]);
    assert_eq!(p.steal_from_stragglers(&StealPolicy::default(), &both, predict, handed), vec![], "W2 would finish a copy in 800 ms; W1 is 490 ms late");
    // Two seconds on, both are late: each is copied to the other player, the older first, and
    // the other only as many copies are allowed at once.
    let two_seconds_on = handed + Duration::from_secs(2);
    let copied = p.steal_from_stragglers(&StealPolicy::default(), &both, predict, two_seconds_on);
    assert_eq!(copied, vec![run(0, 1, Executor::Peer(W2), t(5.0), &[W2])], "one copy at a time by default");
    let two_copies = StealPolicy { max_copies: 2, ..StealPolicy::default() };
    let copied = p.steal_from_stragglers(&two_copies, &both, predict, two_seconds_on);
    assert_eq!(copied, vec![run(1, 1, Executor::Peer(W1), t(6.0), &[W1])]);
    // A player known to be slow is copied from at once, long before it is late.
    let slow_w2 = |_: usize, executors: &[Executor], _: usize| Some(Duration::from_millis(if executors.contains(&Executor::Peer(W2)) { 5000 } else { 100 }));
    let mut p = Pipeline::new(1, 3);
    p.submit(0, t(0.0));
    p.start_waiting(&only(W2), now);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &only(W2), now).unwrap();
    let copied = p.steal_from_stragglers(&StealPolicy::default(), &both, slow_w2, now + Duration::from_millis(100));
    assert_eq!(copied, vec![run(0, 1, Executor::Peer(W1), t(5.0), &[W1])]);
    // A chain over both players straggles: either may run the whole chain's copy (the one
    // that holds all of a hand-over never does).
    let mut p = started(Pipeline::new(1, 3), 1, &both, now);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &both, now).unwrap();
    assert_eq!(p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, late), vec![run(0, 1, Executor::Peer(W1), t(5.0), &[W1])]);
    // With W1 alone busy, W2 copies; then W1 leaves: the copy goes on, nothing is re-run.
    let (mut p, both) = waiting_on_w1(now);
    assert_eq!(p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, late).len(), 1);
    let without_w1 = assign_stages(3, &[player(W2, 1.0)]);
    assert_eq!(p.rerun_peer(W1, &without_w1, late), vec![]);
    let done = p.stage_finished(0, 2, Executor::Peer(W2), t(7.0), &without_w1, late).unwrap();
    assert!(matches!(&done[..], [PipelineAction::Finished { reruns: 0, .. }]), "{done:?}");
    // Had the thief left instead, the straggler's answer would still count.
    let (mut p, both) = waiting_on_w1(now);
    p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, late);
    assert_eq!(p.rerun_peer(W2, &assign_stages(3, &[player(W1, 1.0)]), late), vec![]);
    assert!(p.stage_finished(0, 2, Executor::Peer(W1), t(7.0), &both, late).is_ok());
}

#[test]
fn a_copy_that_is_late_itself_is_copied_again_to_a_player_not_tried_yet_and_used_once() {
    let now = Instant::now();
    let both = assign_stages(3, &[player(W1, 1.0), player(W2, 1.0)]);
    let mut p = started(Pipeline::new(1, 3), 1, &both, now);
    p.stage_finished(0, 0, Executor::Local, t(5.0), &both, now).unwrap();
    // Nothing measured apart yet: the chain over both players is copied to W1, which holds a
    // part of it. W1 is the one that stalled, so its copy is late too.
    let late = now + Duration::from_secs(1);
    assert_eq!(p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, late), vec![run(0, 1, Executor::Peer(W1), t(5.0), &[W1])]);
    let copy_late = late + Duration::from_millis(99);
    assert_eq!(p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, copy_late), vec![], "the copy has waited under min_wait");
    let copy_late = late + Duration::from_millis(100);
    assert_eq!(p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, copy_late), vec![run(0, 1, Executor::Peer(W2), t(5.0), &[W2])], "copied again, in the same place");
    assert_eq!(p.steal_from_stragglers(&StealPolicy::default(), &both, |_, _, _| TEN_MS, copy_late + Duration::from_secs(1)), vec![], "every player was tried");
    // W2's copy answers first; the chain's and W1's copy's answers come after and are stale.
    let back = copy_late + Duration::from_millis(30);
    let done = p.stage_finished(0, 2, Executor::Peer(W2), t(7.0), &both, back).unwrap();
    assert!(matches!(&done[..], [PipelineAction::Outpaced { by: W2, .. }, PipelineAction::Finished { reruns: 0, .. }]), "{done:?}");
    assert_eq!(p.stage_finished(0, 2, Executor::Peer(W1), t(7.0), &both, back), Err(StaleResult::UnknownRequest(0)));
}

#[test]
fn a_newcomer_runs_stage_1_of_the_next_request_at_once_even_with_k_in_flight() {
    let now = Instant::now();
    let mut p = queued(2, 4);
    assert_eq!(p.start_waiting(&three_stages(), now).len(), 2, "K = 2 in flight");
    // W3 joins mid-run: request 2 is admitted beyond K, its stage 1 on W3 (stage 2 where its turn says).
    let with_w3 = assign_stages(3, &[player(W1, 1.0), player(W2, 1.0), player(W3, 1.0)]);
    p.welcome(W3);
    let started = p.start_waiting(&with_w3, now);
    let expected_onward = with_w3.for_request(2, 0)[2].peer().unwrap();
    assert_eq!(started, vec![run(2, 0, Executor::Local, t(2.0), &[W3, expected_onward])]);
    assert_eq!((p.in_flight(), p.waiting()), (3, 1));
    // Welcomed once: request 3 waits for a slot.
    assert!(p.start_waiting(&with_w3, now).is_empty());
}

#[test]
fn a_newcomer_gone_before_its_welcome_gets_none_and_k_holds() {
    let now = Instant::now();
    let mut p = queued(1, 3);
    assert_eq!(p.start_waiting(&three_stages(), now).len(), 1);
    p.welcome(W3);
    // W3 left (or was excluded) before a request came: the assignment no longer places it.
    assert!(p.start_waiting(&three_stages(), now).is_empty());
    assert_eq!((p.in_flight(), p.waiting()), (1, 2));
    assert!(p.newcomers.is_empty());
}

#[test]
fn newcomers_are_welcomed_one_at_a_time_never_more_than_one_request_beyond_k() {
    const W4: PeerUuid = PeerUuid([4; 16]);
    let now = Instant::now();
    let mut p = queued(1, 4);
    assert_eq!(p.start_waiting(&three_stages(), now).len(), 1, "K = 1");
    // Two join: one request beyond K for the first; the second waits for a slot.
    let all = assign_stages(3, &[player(W1, 1.0), player(W2, 1.0), player(W3, 1.0), player(W4, 1.0)]);
    p.welcome(W3);
    p.welcome(W4);
    let started = p.start_waiting(&all, now);
    assert!(matches!(&started[..], [PipelineAction::Run { onward, .. }] if onward[0] == W3), "{started:?}");
    assert_eq!(p.in_flight(), 2);
    assert!(p.start_waiting(&all, now).is_empty(), "never two beyond K");
    // A slot frees: the next request welcomes W4 (one beyond K again).
    p.abort(0, &all, now);
    assert_eq!(p.in_flight(), 2);
    assert!(p.start_waiting(&all, now).is_empty());
}

#[test]
fn a_slice_pinned_to_its_player_is_not_admitted_beyond_k_for_a_welcome() {
    let now = Instant::now();
    let with_w3 = assign_stages(3, &[player(W1, 1.0), player(W2, 1.0), player(W3, 1.0)]);
    let mut p = Pipeline::new(1, 3);
    p.submit(0, t(0.0));
    p.submit_to(1, t(1.0), W1);
    assert_eq!(p.start_waiting(&with_w3, now).len(), 1);
    p.welcome(W3);
    assert_eq!(p.newcomers, [W3]);
    assert!(p.start_waiting(&with_w3, now).is_empty(), "the pinned slice waits for a slot");
    assert_eq!((p.in_flight(), p.waiting()), (1, 1));
}
