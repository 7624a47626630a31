//! Split inference over real matchbox WebRTC between separate processes (the `signaling` and
//! `peer` examples), each peer with its own GPU context, inside a network namespace that each
//! test makes for itself (`unshare -n`, a veth pair, nothing routed outside). Needs root, as CI
//! has.

mod certificate;
mod impair;
mod netns;
mod signaling_tls;
mod soak;
mod turn;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use netns::{examples_dir, in_namespace, Serial};
use serde_json::Value;

const ROOM: &str = "ws://127.0.0.1:3536/test";
const KEY: &str = "test-room-key";
/// The room's owner (the asker) signs every server's token with this key
/// (`room_key --owner` made the pair)...
const OWNER_SECRET: &str = "1c07862bd8ef01e4282258fdd3dd07bc8e45ad0f99411786d3fc9bcc651f24dd";
/// ...and the servers accept only tokens that this public key verifies.
const OWNER_PUBLIC: &str = "0e2784f5423b59d991385c2d4c728678e901d8b623e401002ef4020654274aa9";
const F32_PLAN: &str = "plans/fashion_3_f32.plan.ron";
const INT8_PLAN: &str = "plans/fashion_3_int8.plan.ron";

/// One line of a child's output, with when it arrived.
#[derive(Debug)]
struct Line {
    text: String,
    at: Instant,
    stderr: bool,
}

impl Line {
    /// The event a JSON line of standard output reports (`None` for anything else).
    fn event(&self) -> Option<Value> {
        if self.stderr {
            return None;
        }
        serde_json::from_str::<Value>(&self.text).ok().filter(|v| v.get("event").is_some())
    }

    fn is_event(&self, kind: &str) -> bool {
        self.event().is_some_and(|e| e["event"] == kind)
    }
}

/// A spawned example whose stdout and stderr lines are collected as they arrive.
struct Process {
    child: Child,
    lines: mpsc::Receiver<Line>,
    seen: Vec<Line>,
}

impl Process {
    fn spawn(name: &str, args: &[&str]) -> Process {
        let mut command = Command::new(examples_dir().join(name));
        command.args(args);
        Process::run(name, command)
    }

    /// Runs `command` (the `name` example, perhaps behind a wrapper), collecting its lines.
    fn run(name: &str, mut command: Command) -> Process {
        let mut child = command
            .env("BEVY_ASSET_ROOT", env!("CARGO_MANIFEST_DIR"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} example (cargo test builds it): {e}"));
        let (tx, lines) = mpsc::channel();
        for (stream, stderr) in [(Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, false), (Box::new(child.stderr.take().unwrap()), true)] {
            let tx = tx.clone();
            thread::spawn(move || {
                for text in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(Line { text, at: Instant::now(), stderr });
                }
            });
        }
        Process { child, lines, seen: Vec::new() }
    }

    /// A server that leaves when the asker does, or after `lifetime_s`; a member of the
    /// room the asker owns.
    fn server(key: &str, plan: &str, lifetime_s: &str, extra: &[&str]) -> Process {
        let mut args = vec!["--role", "server", "--room", ROOM, "--key", key, "--plan", plan, "--lifetime-s", lifetime_s, "--owner", OWNER_PUBLIC];
        args.extend_from_slice(extra);
        Process::spawn("peer", &args)
    }

    /// A player that asks (`rounds` over the images, with `others` other players to wait for)
    /// and serves; the owner of the room if `owner`.
    fn player(owner: bool, others: &str, rounds: &str) -> Process {
        Process::player_with(owner, others, rounds, &[])
    }

    /// [`Self::player`] with `extra` arguments. Stages are re-run only after 10 s without an
    /// answer (late ones are copied to another player long before): three players sharing the
    /// two cores of a CI machine often take longer than the default 2 s, and timeouts would
    /// exclude players that are merely slow.
    fn player_with(owner: bool, others: &str, rounds: &str, extra: &[&str]) -> Process {
        let authority = if owner { ["--owner-key", OWNER_SECRET] } else { ["--owner", OWNER_PUBLIC] };
        let mut args = vec!["--role", "player", "--room", ROOM, "--key", KEY, "--plan", INT8_PLAN, "--rounds", rounds, "--servers", others, "--lifetime-s", "150", "--share-predictions", "--ensemble", "--stage-timeout-s", "10"];
        args.extend_from_slice(&authority);
        args.extend_from_slice(extra);
        Process::spawn("peer", &args)
    }

    /// The asker, which owns the room, for at most 150 s.
    fn asker(plan: &str, rounds: &str, extra: &[&str]) -> Process {
        Process::asker_for("150", plan, rounds, extra)
    }

    /// [`Self::asker`] for at most `lifetime_s`.
    fn asker_for(lifetime_s: &str, plan: &str, rounds: &str, extra: &[&str]) -> Process {
        let mut args = vec!["--role", "asker", "--room", ROOM, "--key", KEY, "--plan", plan, "--rounds", rounds, "--lifetime-s", lifetime_s, "--owner-key", OWNER_SECRET];
        args.extend_from_slice(extra);
        Process::spawn("peer", &args)
    }

    /// Collects lines until `pred` matches one (returning when it arrived) or the timeout.
    fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&Line) -> bool) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line).then_some(line.at);
                    self.seen.push(line);
                    if hit.is_some() {
                        return hit;
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits for the process to exit and returns the events it printed and its stderr.
    fn finish(mut self, timeout: Duration) -> (Vec<Value>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.try_wait().expect("wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(200));
        self.seen.extend(self.lines.try_iter());
        let events = self.seen.iter().filter_map(Line::event).collect();
        let stderr = self.seen.iter().filter(|l| l.stderr).map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n");
        (events, stderr)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events of one kind, in order.
fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// The asker's summary: its last event.
fn summary<'a>(events: &'a [Value], stderr: &str) -> &'a Value {
    events.last().filter(|e| e["event"] == "summary").unwrap_or_else(|| panic!("the asker printed no summary\nevents: {events:?}\nstderr:\n{stderr}"))
}

/// The asker's summary says all of its `requests` requests matched single-peer and none
/// was lost; otherwise the asker's events that tell why (peers lost, data dropped,
/// problems, failed requests) are shown.
fn assert_every_request_matched(events: &[Value], json: &Value, requests: u64) {
    let why: Vec<&Value> = events.iter().filter(|e| ["peer_lost", "rejected", "problem", "request_failed", "handshake_failed"].iter().any(|kind| e["event"] == *kind)).collect();
    assert_eq!((json["requests"].as_u64(), json["matches_single_peer"].as_u64(), json["lost"].as_u64()), (Some(requests), Some(requests), Some(0)), "{json}\n{why:?}");
}

/// Whether a peer's messages were dropped for failing authentication.
fn rejected_for_bad_mac(events: &[Value]) -> bool {
    events_of(events, "rejected").iter().any(|e| e["reason"] == "bad_mac")
}

fn signaling() -> Process {
    let mut server = Process::spawn("signaling", &["--port", "3536"]);
    assert!(server.wait_for_line(Duration::from_secs(20), |l| l.text.starts_with("signaling on")).is_some(), "the signaling server did not start");
    server
}

#[test]
fn three_peers_with_f32_cuts_give_bit_identical_results_to_a_single_peer() {
    let _serial = Serial::lock();
    in_namespace("three_peers_with_f32_cuts_give_bit_identical_results_to_a_single_peer", || {
        let _server = signaling();
        let _w1 = Process::server(KEY, F32_PLAN, "150", &[]);
        let _w2 = Process::server(KEY, F32_PLAN, "150", &[]);
        // Each remote stage on a server of its own: the chain's hop from server to server.
        let (events, err) = Process::asker(F32_PLAN, "2", &["--routing", "per-stage"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_eq!(json["requests"], 20, "{json}");
        assert_eq!(json["matches_single_peer"], 20, "{json}\n{events:?}");
        assert_eq!(json["lost"], 0, "{json}");
        let requests = events_of(&events, "request");
        let remote = |r: &Value, stage: u64| r["stages"].as_array().is_some_and(|s| s.iter().any(|s| s["stage"] == stage && s["remote"] == true));
        let remote_stages = requests.iter().filter(|r| remote(r, 1) && remote(r, 2)).count();
        assert_eq!(remote_stages, 20, "every request ran stages 1 and 2 on the servers:\n{requests:?}");
        assert!(json["bytes_per_request"].as_u64() > Some(0));
        // Every hop is timed: each stage's GPU time (lavapipe writes timestamps, measured where
        // it ran) within its run there, and that run within the span its owner measured from
        // hand-over to output (a clock of another process: the two are measured independently);
        // and, once the links have measured a round trip, the transfers in and back.
        for request in &requests {
            let stages = request["stages"].as_array().unwrap();
            for stage in stages {
                let (run, gpu) = (stage["run_ms"].as_f64(), stage["gpu_ms"].as_f64());
                // The upload and the readback take time too: the GPU's part is less than the run.
                assert!(matches!((run, gpu), (Some(r), Some(g)) if 0.0 < g && g < r), "{stage}");
            }
            // A chain's stages share one span, which holds all of their runs.
            let mut first = 0;
            while first < stages.len() {
                let span = stages[first]["span"].as_u64().unwrap() as usize;
                let runs: f64 = stages[first..first + span].iter().map(|s| s["run_ms"].as_f64().unwrap()).sum();
                assert!(runs <= stages[first]["ms"].as_f64().unwrap() + 1e-3, "the runs of {:?} outlast their span", &stages[first..first + span]);
                first += span;
            }
        }
        let last = requests.last().unwrap()["stages"].as_array().unwrap();
        // Each hop from one player to another (measured placement may give a slowed server's
        // turn to the other, which then runs both remote stages without a hop between them).
        let hops: Vec<&Value> = last.windows(2).filter(|pair| pair[0]["executor"] != pair[1]["executor"]).map(|pair| &pair[1]).collect();
        assert!(!hops.is_empty() && hops.iter().all(|s| s["network_ms"].as_f64() > Some(0.0)), "the inputs' hops to the servers: {last:?}");
        assert!(last[2]["returned_ms"].as_f64() > Some(0.0), "the output's hop back: {last:?}");
    });
}

#[test]
fn image_requests_run_stage_0_on_the_image_here_and_split_bit_identically_to_a_single_peer() {
    let _serial = Serial::lock();
    in_namespace("image_requests_run_stage_0_on_the_image_here_and_split_bit_identically_to_a_single_peer", || {
        let _server = signaling();
        let _w1 = Process::server(KEY, F32_PLAN, "150", &[]);
        let _w2 = Process::server(KEY, F32_PLAN, "150", &[]);
        // The references are the same image requests run whole on the asker.
        let (events, err) = Process::asker(F32_PLAN, "1", &["--image-requests"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_every_request_matched(&events, json, 10);
        let requests = events_of(&events, "request");
        let executors = |r: &Value| r["stages"].as_array().map(|s| s.iter().map(|s| s["remote"].as_bool()).collect::<Vec<_>>());
        assert!(requests.iter().all(|r| executors(r) == Some(vec![Some(false), Some(true), Some(true)])), "stage 0 here, on the image; 1 and 2 on the servers: {requests:?}");
        // Each image was read on this GPU and no tensor went up to it; what came back is stage 0's
        // activation, to travel.
        assert_eq!(json["transfers"], serde_json::json!({"tensor_uploads": 0, "image_inputs": 10, "readbacks": 10}), "{json}");
    });
}

#[test]
fn a_batch_of_64_split_across_three_servers_equals_the_single_peer_result() {
    let _serial = Serial::lock();
    in_namespace("a_batch_of_64_split_across_three_servers_equals_the_single_peer_result", || {
        let _server = signaling();
        // A slice of 21 rows takes lavapipe seconds per stage, and four processes share two
        // cores: a CI machine has taken 42 s for one request. Stages are re-run only after a
        // minute, and the run may take five.
        let _servers: Vec<Process> = (0..3).map(|_| Process::server(KEY, F32_PLAN, "300", &[])).collect();
        let asker = Process::asker_for("300", F32_PLAN, "2", &["--servers", "3", "--batch", "64", "--batch-split", "--stage-timeout-s", "60"]);
        let (events, err) = asker.finish(Duration::from_secs(320));
        let json = summary(&events, &err);
        // f32 cuts: bit-identical to the whole batch run on the asker's GPU.
        assert_every_request_matched(&events, json, 2);
        for request in events_of(&events, "request") {
            let stages = request["stages"].as_array().expect("stage records");
            assert_eq!(stages.iter().filter(|s| s["stage"] == 0).count(), 3, "one slice per server, each with its own stage 0: {request}");
            let mut servers: Vec<&str> = stages.iter().filter(|s| s["remote"] == true).filter_map(|s| s["executor"].as_str()).collect();
            servers.sort();
            servers.dedup();
            // A slice re-run (its server was lost, or dropped this player's link) runs elsewhere.
            if request["reruns"] == 0 {
                assert_eq!(servers.len(), 3, "the batch's slices ran on every server: {request}");
            }
        }
    });
}

#[test]
fn a_server_slowed_tenfold_gets_a_small_measured_share_and_every_request_still_matches() {
    let _serial = Serial::lock();
    in_namespace("a_server_slowed_tenfold_gets_a_small_measured_share_and_every_request_still_matches", || {
        let _server = signaling();
        let _w1 = Process::server(KEY, F32_PLAN, "150", &[]);
        let _w2 = Process::server(KEY, F32_PLAN, "150", &[]);
        let slow = Process::server(KEY, F32_PLAN, "150", &["--slowdown", "10"]);
        let (events, err) = Process::asker(F32_PLAN, "3", &["--servers", "3", "--stage-timeout-s", "30"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_every_request_matched(&events, json, 30);
        let (slow_events, slow_err) = slow.finish(Duration::from_secs(30));
        let slow_id = events_of(&slow_events, "serving_summary").last().map(|s| s["id"].clone()).unwrap_or_else(|| panic!("no summary from the slow server:\n{slow_err}"));
        let measured = json["measured"].as_array().expect("measured speeds");
        let of = |id: &Value| measured.iter().find(|m| m["executor"] == *id).unwrap_or_else(|| panic!("{id} was not measured: {json}"));
        eprintln!("slow server {slow_id}; measured {}; placed {}", json["measured"], json["placed"]);
        let slow_share = of(&slow_id)["share"].as_f64().unwrap();
        assert!(slow_share < 0.15, "the slow server did {:.0}% of the recent stage work: {json}", slow_share * 100.0);
        let fast: Vec<&Value> = measured.iter().filter(|m| m["executor"] != slow_id && m["executor"] != "local").collect();
        assert_eq!(fast.len(), 2, "{json}");
        for server in fast {
            assert!(server["gflops"].as_f64() > of(&slow_id)["gflops"].as_f64(), "measured slower than the slowed one: {json}");
            assert!(server["share"].as_f64() > Some(slow_share), "{json}");
        }
        let placed = json["placed"].as_array().expect("placement");
        let slow_placed = placed.iter().find(|p| p["peer"] == slow_id).and_then(|p| p["share"].as_f64());
        assert!(slow_placed < Some(0.15), "placed {slow_placed:?} of the remote stages on the slow server: {json}");
    });
}

#[test]
fn work_is_stolen_from_a_stalled_server_and_every_request_still_matches_without_a_rerun() {
    let _serial = Serial::lock();
    in_namespace("work_is_stolen_from_a_stalled_server_and_every_request_still_matches_without_a_rerun", || {
        let _server = signaling();
        let _fast = Process::server(KEY, F32_PLAN, "150", &[]);
        // Holds every output back for 49 times its run: each of its hand-overs straggles far
        // past what its calibration predicts, but long before the 30 s stage timeout.
        let stalled = Process::server(KEY, F32_PLAN, "150", &["--slowdown", "50"]);
        let (events, err) = Process::asker(F32_PLAN, "2", &["--servers", "2", "--stage-timeout-s", "30"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_every_request_matched(&events, json, 20);
        let stolen = &json["stolen"];
        eprintln!("stolen {stolen}; measured {}; placed {}", json["measured"], json["placed"]);
        assert!(stolen["copied"].as_u64() >= Some(1) && stolen["won"].as_u64() >= Some(1), "no straggling hand-over was taken over: {json}");
        assert!(stolen["won"].as_u64() <= stolen["copied"].as_u64(), "{json}");
        for request in events_of(&events, "request") {
            assert_eq!(request["reruns"], 0, "a request waited for the stage timeout instead: {request}");
        }
        let (stalled_events, stalled_err) = stalled.finish(Duration::from_secs(30));
        let stalled_id = events_of(&stalled_events, "serving_summary").last().map(|s| s["id"].clone()).unwrap_or_else(|| panic!("no summary from the stalled server:\n{stalled_err}"));
        let measured = json["measured"].as_array().expect("measured speeds");
        let gflops = |id: &Value| measured.iter().find(|m| m["executor"] == *id).and_then(|m| m["gflops"].as_f64());
        let fast = measured.iter().find(|m| m["executor"] != stalled_id && m["executor"] != "local").expect("the fast server was measured");
        assert!(fast["gflops"].as_f64() > gflops(&stalled_id), "the stalled server was not measured slower for what it held: {json}");
    });
}

#[test]
fn a_serving_player_spends_no_more_gpu_time_on_others_than_its_frame_budget_and_every_request_still_matches() {
    let _serial = Serial::lock();
    in_namespace("a_serving_player_spends_no_more_gpu_time_on_others_than_its_frame_budget_and_every_request_still_matches", || {
        let _server = signaling();
        // 5 ms of every 50 ms frame: a tenth of its GPU time.
        let (budget_ms, frame_ms) = (5.0, 50.0);
        let server = Process::server(KEY, F32_PLAN, "150", &["--serve-budget-ms", "5", "--budget-frame-ms", "50"]);
        let (events, err) = Process::asker(F32_PLAN, "2", &["--servers", "1", "--stage-timeout-s", "30"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_every_request_matched(&events, json, 20);
        let (server_events, server_err) = server.finish(Duration::from_secs(30));
        let served = events_of(&server_events, "serving_summary").last().copied().unwrap_or_else(|| panic!("no summary from the server:\n{server_err}"));
        let budget = &served["serve_budget"];
        eprintln!("served under the budget: {budget}");
        let ms = |field: &str| budget[field].as_f64().unwrap_or_else(|| panic!("no {field}: {served}"));
        assert_eq!(budget["stages"], served["stages_served"], "every stage it served went through the budget: {served}");
        assert!(budget["stages"].as_u64() >= Some(20), "{served}");
        assert!(budget["waited"].as_u64() > Some(0), "no stage ever waited for the budget: {served}");
        assert_eq!(budget["handed_back"], 0, "{served}");
        // Its GPU time for the others: at most the budget's rate over the time it served, the
        // frame's budget it started with, and the two stages (K = 2) that may start on the
        // last of its credit.
        let allowed = ms("span_ms") * budget_ms / frame_ms + budget_ms + 2.0 * ms("longest_ms");
        assert!(ms("gpu_ms") <= allowed, "{:.1} ms of GPU time for others over {:.0} ms, {allowed:.1} ms allowed: {served}", ms("gpu_ms"), ms("span_ms"));
    });
}

#[test]
fn a_tampered_chunk_is_rejected_and_the_request_still_completes() {
    let _serial = Serial::lock();
    in_namespace("a_tampered_chunk_is_rejected_and_the_request_still_completes", || {
        let _server = signaling();
        let _w1 = Process::server(KEY, INT8_PLAN, "150", &["--tamper-once"]);
        let _w2 = Process::server(KEY, INT8_PLAN, "150", &["--tamper-once"]);
        // Each request's remote stages on one server, so that every server's tensor frames go
        // to the asker (per stage, a server's first frame may be a hop to the other).
        let (events, err) = Process::asker(INT8_PLAN, "1", &["--routing", "per-request"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert!(rejected_for_bad_mac(&events), "the corrupted frame was not reported as failing authentication:\n{events:?}");
        assert_eq!(json["lost"], 0, "{json}");
        assert_eq!(json["matches_single_peer"], 10, "int8 cuts keep every top-1: {json}\n{events:?}");
        let reruns: Vec<u64> = events_of(&events, "request").iter().filter_map(|r| r["reruns"].as_u64()).collect();
        // The answer dropped names no request: once late, it is copied to the other server
        // (work stealing) or, at the stage timeout, re-run.
        let copies_won = json["stolen"]["won"].as_u64().unwrap_or(0);
        assert!(reruns.iter().any(|&n| n == 1 || n == 2) || copies_won > 0, "the dropped answer was neither copied nor re-run: reruns {reruns:?}, {json}");
    });
}

#[test]
fn a_server_returning_wrong_results_is_caught_by_spot_checks_and_costs_no_request() {
    let _serial = Serial::lock();
    in_namespace("a_server_returning_wrong_results_is_caught_by_spot_checks_and_costs_no_request", || {
        let _server = signaling();
        let _liar = Process::server(KEY, F32_PLAN, "150", &["--wrong-results"]);
        let _honest = Process::server(KEY, F32_PLAN, "150", &[]);
        let (events, err) = Process::asker(F32_PLAN, "1", &["--spot-check-every", "1"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        let mismatches = events_of(&events, "result_mismatch");
        assert!(!mismatches.is_empty(), "no spot check caught the lying server:\n{events:?}");
        assert_eq!(json["lost"], 0, "{json}");
        assert_eq!(json["matches_single_peer"], 10, "a caught request gets this GPU's output: {json}\n{events:?}");
    });
}

#[test]
fn a_peer_with_the_wrong_room_key_never_runs_a_stage() {
    let _serial = Serial::lock();
    in_namespace("a_peer_with_the_wrong_room_key_never_runs_a_stage", || {
        let _server = signaling();
        let mut intruder = Process::server("not-the-room-key", INT8_PLAN, "40", &[]);
        let _w1 = Process::server(KEY, INT8_PLAN, "150", &[]);
        let _w2 = Process::server(KEY, INT8_PLAN, "150", &[]);
        // The intruder is in the room once a handshake with a server has failed: at the first
        // authenticated frame after their key exchange, or by timeout on the side that was
        // refused first.
        let joined = intruder.wait_for_line(Duration::from_secs(60), |l| l.is_event("handshake_failed"));
        assert!(joined.is_some(), "the intruder never met the servers");
        // The asker starts only once the intruder is connected too, so that its frames
        // reach the asker however slowly the links come up.
        let (events, err) = Process::asker(INT8_PLAN, "2", &["--room-size", "3"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_eq!(json["lost"], 0, "{json}");
        assert_eq!(json["matches_single_peer"], 20, "{json}");
        let refusals: Vec<&str> = events_of(&events, "handshake_failed").iter().filter_map(|e| e["reason"].as_str()).collect();
        assert!(
            refusals.len() == 1 && (refusals[0] == "WrongRoomKey" || refusals[0].starts_with("Timeout")),
            "the asker refused the intruder once, for its key or by timeout: {refusals:?}\n{events:?}"
        );
        let (intruder_events, intruder_err) = intruder.finish(Duration::from_secs(60));
        let report = intruder_events.last().filter(|e| e["event"] == "serving_summary").unwrap_or_else(|| panic!("intruder printed no summary:\n{intruder_err}"));
        assert_eq!(report["stages_served"], 0, "{report}");
        assert!(events_of(&intruder_events, "peer_trusted").is_empty(), "the intruder trusted a player of the room: {intruder_events:?}");
        assert!(events_of(&intruder_events, "handshake_failed").len() >= 3, "every player of the room refused it: {intruder_events:?}");
    });
}

#[test]
fn a_killed_server_is_declared_lost_within_a_second_and_no_request_is_lost() {
    let _serial = Serial::lock();
    in_namespace("a_killed_server_is_declared_lost_within_a_second_and_no_request_is_lost", || {
        let _server = signaling();
        let mut victim = Process::server(KEY, INT8_PLAN, "150", &[]);
        let _w2 = Process::server(KEY, INT8_PLAN, "150", &[]);
        let mut asker = Process::asker(INT8_PLAN, "4", &[]);
        let started = asker.wait_for_line(Duration::from_secs(120), |l| l.is_event("request")).is_some();
        assert!(started, "no request finished before the kill");
        victim.kill();
        let killed = Instant::now();
        let noticed = asker
            .wait_for_line(Duration::from_secs(10), |l| l.at >= killed && l.is_event("peer_lost"))
            .expect("the killed server was never declared lost");
        let detection = noticed.saturating_duration_since(killed);
        eprintln!("killed server declared lost after {detection:?}");
        assert!(detection < Duration::from_secs(1), "declared lost after {detection:?}");
        let (events, err) = asker.finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_eq!(json["requests"], 40, "{json}");
        assert_eq!(json["lost"], 0, "{json}");
        assert_eq!(json["matches_single_peer"], 40, "{json}");
    });
}

#[test]
fn a_server_revoked_by_the_owner_is_refused_by_everyone_and_no_request_is_lost() {
    let _serial = Serial::lock();
    in_namespace("a_server_revoked_by_the_owner_is_refused_by_everyone_and_no_request_is_lost", || {
        let _server = signaling();
        let w1 = Process::server(KEY, INT8_PLAN, "150", &[]);
        let w2 = Process::server(KEY, INT8_PLAN, "150", &[]);
        let (events, err) = Process::asker(INT8_PLAN, "2", &["--revoke-after", "3"]).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        let revoked = events_of(&events, "revoked");
        assert_eq!(revoked.len(), 1, "{events:?}");
        let peer = &revoked[0]["peer"];
        assert!(events_of(&events, "peer_lost").iter().any(|e| e["peer"] == *peer && e["reason"] == "Revoked"), "{events:?}");
        assert_eq!(json["lost"], 0, "{json}");
        assert_eq!(json["matches_single_peer"], 20, "{json}\n{events:?}");
        // After the revocation (3 requests done, at most K = 2 in flight), no stage ran on the
        // revoked server.
        let requests = events_of(&events, "request");
        let after: Vec<_> = requests.iter().skip(3 + 2).filter(|r| r["stages"].as_array().is_some_and(|s| s.iter().any(|s| s["executor"] == *peer))).collect();
        assert!(after.is_empty(), "stages ran on the revoked server: {after:?}");
        // The other server was told: it reports the revoked one lost, as revoked.
        let mut told = false;
        for server in [w1, w2] {
            let (server_events, _) = server.finish(Duration::from_secs(60));
            told |= events_of(&server_events, "peer_lost").iter().any(|e| e["reason"] == "Revoked");
        }
        assert!(told, "no server heard of the revocation");
    });
}

#[test]
fn players_ask_and_serve_one_joins_mid_run_and_all_share_predictions_and_one_bit_identical_ensemble() {
    let _serial = Serial::lock();
    in_namespace("players_ask_and_serve_one_joins_mid_run_and_all_share_predictions_and_one_bit_identical_ensemble", || {
        let _server = signaling();
        // Two players start; each splits its requests over the other (and itself).
        let mut first = Process::player(true, "1", "3");
        let second = Process::player(false, "1", "3");
        // A third joins once the first has results: from then on it serves the others' stages.
        let started = first.wait_for_line(Duration::from_secs(120), |l| l.is_event("request"));
        assert!(started.is_some(), "the first player got no result");
        let late = Process::player(false, "2", "1");
        let mut summaries = Vec::new();
        for (name, player, requests) in [("first", first, 30), ("second", second, 30), ("late", late, 10)] {
            let (events, err) = player.finish(Duration::from_secs(170));
            let summary = events_of(&events, "summary").first().copied().cloned().unwrap_or_else(|| panic!("{name} printed no summary:\n{err}"));
            assert_eq!(summary["lost"], 0, "{name}: {summary}\nfailed: {:?}", events_of(&events, "request_failed"));
            assert_eq!(summary["matches_single_peer"], requests, "{name}: int8 cuts keep every top-1: {summary}");
            assert!(summary["served_by_others"].as_u64() > Some(0), "{name}'s stages all ran at home: {summary}");
            let served = events.last().filter(|e| e["event"] == "serving_summary").unwrap_or_else(|| panic!("{name} printed no serving summary:\n{err}"));
            assert!(served["stages_served"].as_u64() > Some(0), "{name} served no one: {served}");
            let first_stage_ms = served["first_stage_after_trust_ms"].as_f64().unwrap_or_else(|| panic!("{name} never timed its first stage: {served}"));
            eprintln!("{name}: first stage for another player {first_stage_ms:.0} ms after an asker trusted it");
            // The one that joins mid-run serves soon after its handshake (the two that start
            // together also wait for each other to calibrate and join). On the 2-core VM with
            // three lavapipe processes: 0.3-0.65 s before the integrity work of 2026-12-07,
            // 0.48-1.14 s since (not yet explained; see that day's closing note), so 1.5 s.
            if name == "late" {
                assert!(first_stage_ms < 1500.0, "the late player's first stage came {first_stage_ms:.0} ms after it trusted an asker");
            }
            let ensemble = events_of(&events, "ensemble").first().copied().cloned().unwrap_or_else(|| panic!("{name} has no ensemble:\n{events:?}"));
            assert_eq!(ensemble["members"], 3, "{name}: {ensemble}");
            summaries.push((name, summary, served.clone(), ensemble));
        }
        // The ensemble (an all-reduce of the players' class probabilities) is the same bits on
        // every player, and the mean of their last predictions' probabilities, worked out here.
        let softmax = |logits: &[f64]| {
            let largest = logits.iter().copied().fold(f64::MIN, f64::max);
            let exp: Vec<f64> = logits.iter().map(|v| (v - largest).exp()).collect();
            exp.iter().map(|v| v / exp.iter().sum::<f64>()).collect::<Vec<f64>>()
        };
        let floats = |v: &Value| v.as_array().expect("numbers").iter().map(|x| x.as_f64().expect("a number")).collect::<Vec<f64>>();
        let probabilities: Vec<Vec<f64>> = summaries.iter().map(|(_, summary, ..)| softmax(&floats(&summary["published"]))).collect();
        let ensemble = floats(&summaries[0].3["values"]);
        for (name, .., other) in &summaries {
            assert_eq!(other["values"], summaries[0].3["values"], "{name}'s ensemble differs from the first's");
        }
        for (class, &got) in ensemble.iter().enumerate() {
            let expected = probabilities.iter().map(|p| p[class]).sum::<f64>() / 3.0;
            assert!((got - expected).abs() < 1e-5, "class {class}: {got} against {expected}");
        }
        // Each player shared its latest prediction; every other player holds exactly that value
        // (f32: bit for bit), the late one included.
        for (owner_name, owner, ..) in &summaries {
            for (holder_name, _, served, _) in summaries.iter().filter(|(n, ..)| n != owner_name) {
                let held = served["shared"].as_array().and_then(|s| s.iter().find(|v| v["owner"] == owner["id"] && v["name"] == "prediction"));
                let held = held.unwrap_or_else(|| panic!("{holder_name} holds no prediction of {owner_name}: {served}"));
                assert_eq!(held["values"], owner["published"], "{holder_name}'s copy of {owner_name}'s prediction");
            }
        }
    });
}

#[test]
fn a_player_that_leaves_mid_run_costs_nothing_and_a_forged_shared_value_is_refused() {
    let _serial = Serial::lock();
    in_namespace("a_player_that_leaves_mid_run_costs_nothing_and_a_forged_shared_value_is_refused", || {
        let _server = signaling();
        let mut first = Process::player(true, "2", "3");
        let mut leaver = Process::player(false, "2", "3");
        // Once it has a result, the forger sends every peer it trusts a value of that peer's own
        // shared tensor.
        let forger = Process::player_with(false, "2", "3", &["--forge-shared-once"]);
        let started = first.wait_for_line(Duration::from_secs(120), |l| l.is_event("request"));
        assert!(started.is_some(), "the first player got no result");
        leaver.kill();
        let mut results = Vec::new();
        for (name, player) in [("first", first), ("forger", forger)] {
            let (events, err) = player.finish(Duration::from_secs(170));
            let summary = events_of(&events, "summary").first().copied().cloned().unwrap_or_else(|| panic!("{name} printed no summary:\n{err}"));
            assert_eq!(summary["lost"], 0, "{name}: the leaver's stages ran elsewhere: {summary}");
            assert_eq!(summary["matches_single_peer"], 30, "{name}: {summary}");
            // The ensemble is over the players still there.
            let ensemble = events_of(&events, "ensemble").first().copied().cloned().unwrap_or_else(|| panic!("{name} has no ensemble:\n{events:?}"));
            assert_eq!(ensemble["members"], 2, "{name}: {ensemble}");
            results.push(events);
        }
        let forged = events_of(&results[1], "forged").first().copied().cloned().expect("the forger sent its values");
        assert!(forged["peers"].as_array().is_some_and(|p| !p.is_empty()), "{forged}");
        let refused = events_of(&results[0], "rejected").into_iter().filter(|e| e["reason"] == "not_owner").count();
        assert_eq!(refused, 1, "the first player refused the forged value of its own tensor once: {:?}", results[0]);
        // Shared values still flow: the forger holds the first player's last prediction as it
        // was published.
        let first_summary = events_of(&results[0], "summary")[0].clone();
        let served = results[1].last().expect("the forger's serving summary");
        let held = served["shared"].as_array().and_then(|s| s.iter().find(|v| v["owner"] == first_summary["id"])).expect("the first player's prediction");
        assert_eq!(held["values"], first_summary["published"]);
    });
}
