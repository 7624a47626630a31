//! A room formed through a real TURN relay (coturn) with every direct path between the players
//! blocked: each player runs in a network namespace of its own, linked only to the test's
//! namespace, which holds the signaling server and coturn and forwards nothing between them.

use std::process::Command;

use super::impair::{Impairment, Relay};
use super::*;

pub(super) const TURN_SECRET: &str = "turn-relay-test-secret";

/// A `peer` process in a network namespace of its own, joined to this one by a veth pair on
/// 10.`side`.0.0/24 (this side .1, the player .2) and routed only here: it reaches this
/// namespace's addresses, and nothing beyond, since this namespace forwards nothing.
pub(super) fn isolated_peer(side: u8, args: &[&str]) -> Process {
    let inner = format!("p{side}b");
    let script = format!(
        "while ! ip link show {inner} >/dev/null 2>&1; do sleep 0.05; done; ip link set lo up && ip addr add 10.{side}.0.2/24 dev {inner} \
         && ip link set {inner} up && ip route add default via 10.{side}.0.1 && exec \"$0\" \"$@\""
    );
    let mut command = Command::new("unshare");
    command.args(["-n", "sh", "-c", &script]).arg(examples_dir().join("peer")).args(args);
    let process = Process::run("peer", command);
    let pid = process.child.id().to_string();
    let outer = format!("p{side}a");
    let setup = format!(
        "ip link add {outer} type veth peer name {inner} && ip link set {inner} netns {pid} && ip addr add 10.{side}.0.1/24 dev {outer} && ip link set {outer} up"
    );
    let status = Command::new("sh").args(["-c", &setup]).status().expect("ip");
    assert!(status.success(), "could not link player {side}'s namespace");
    process
}

fn coturn() -> Process {
    let mut command = Command::new("turnserver");
    command.args([
        "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "0.0.0.0", "--listening-port", "3478", "--relay-ip", "10.99.0.1", "--use-auth-secret",
        "--static-auth-secret", TURN_SECRET, "--realm", "test", "--log-file", "stdout", "--simple-log", "--verbose",
    ]);
    let mut turn = Process::run("turnserver", command);
    assert!(
        turn.wait_for_line(Duration::from_secs(20), |l| l.text.contains("Total General servers") || l.text.contains("listener opened")).is_some(),
        "coturn did not start (tools/install-lavapipe.sh installs it): {:?}",
        turn.seen.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
    turn
}

/// Whether coturn's `turnserver` is here; outside CI a test without it is skipped (CI installs
/// it with tools/install-lavapipe.sh, and there a missing relay is a failure).
pub(super) fn coturn_installed() -> bool {
    if Command::new("turnserver").arg("--help").output().is_ok() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "the TURN test needs coturn's turnserver (tools/install-lavapipe.sh installs it)");
    eprintln!("skipped: no turnserver (coturn) here; tools/install-lavapipe.sh installs it");
    false
}

/// coturn and a signalling server that players in other namespaces reach, in this namespace.
pub(super) fn relay_and_signaling() -> (Process, Process) {
    let turn = coturn();
    let mut signaling = Process::spawn("signaling", &["--port", "3536", "--host", "0.0.0.0"]);
    assert!(signaling.wait_for_line(Duration::from_secs(20), |l| l.text.starts_with("signaling on")).is_some(), "the signaling server did not start");
    (turn, signaling)
}

/// The impairment relay in front of coturn (port 3479, for coturn's 3478): `way` on every
/// crossing, up to coturn and down from it.
pub(super) fn impaired_path(way: Impairment) -> Relay {
    Relay::start("0.0.0.0:3479".parse().unwrap(), "10.99.0.1:3478".parse().unwrap(), way, way).expect("the impairment relay")
}

/// An [`isolated_peer`] whose only way to the others is coturn through the impairment relay.
pub(super) fn relayed_peer(side: u8, args: &[&str]) -> Process {
    let turn = format!("turn:10.{side}.0.1:3479?transport=udp");
    isolated_peer(side, &[args, &["--turn", &turn, "--turn-secret", TURN_SECRET]].concat())
}

#[test]
fn a_room_whose_players_cannot_reach_each_other_forms_through_a_turn_relay_and_every_request_matches() {
    let _serial = Serial::lock();
    if !coturn_installed() {
        return;
    }
    in_namespace("turn::a_room_whose_players_cannot_reach_each_other_forms_through_a_turn_relay_and_every_request_matches", || {
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward");
        assert_eq!(forwarding.trim(), "0", "this namespace must not route between the players");
        let (mut turn, _signaling) = relay_and_signaling();
        // Without the relay the same two players never meet: only their host candidates, on
        // networks with no path between them.
        let direct_server = ["--role", "server", "--room", "ws://10.4.0.1:3536/direct", "--key", KEY, "--plan", INT8_PLAN, "--lifetime-s", "20", "--owner", OWNER_PUBLIC];
        let _direct_server = isolated_peer(4, &direct_server);
        let direct_asker = ["--role", "asker", "--room", "ws://10.3.0.1:3536/direct", "--key", KEY, "--plan", INT8_PLAN, "--rounds", "1", "--servers", "1", "--lifetime-s", "12"];
        let (events, _) = isolated_peer(3, &[&direct_asker[..], &["--owner-key", OWNER_SECRET]].concat()).finish(Duration::from_secs(40));
        assert!(events_of(&events, "peer_trusted").is_empty() && events_of(&events, "summary").is_empty(), "a direct path between the players: {events:?}");
        let server_room = "ws://10.2.0.1:3536/test";
        let asker_room = "ws://10.1.0.1:3536/test";
        let server_args = ["--role", "server", "--room", server_room, "--key", KEY, "--plan", INT8_PLAN, "--lifetime-s", "150", "--owner", OWNER_PUBLIC];
        let _server = isolated_peer(2, &[&server_args[..], &["--turn", "turn:10.2.0.1:3478?transport=udp", "--turn-secret", TURN_SECRET]].concat());
        let asker_args = ["--role", "asker", "--room", asker_room, "--key", KEY, "--plan", INT8_PLAN, "--rounds", "1", "--servers", "1", "--lifetime-s", "150"];
        let asker = isolated_peer(1, &[&asker_args[..], &["--owner-key", OWNER_SECRET, "--turn", "turn:10.1.0.1:3478?transport=udp", "--turn-secret", TURN_SECRET]].concat());
        let (events, err) = asker.finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_eq!(json["requests"], 10, "{json}");
        assert_eq!(json["matches_single_peer"], 10, "{json}");
        assert_eq!(json["lost"], 0, "{json}");
        // The only way between them: both allocated a relay address on coturn and sent through it.
        turn.seen.extend(turn.lines.try_iter());
        let log: Vec<&str> = turn.seen.iter().map(|l| l.text.as_str()).collect();
        let allocations = log.iter().filter(|l| l.contains("ALLOCATE") && l.contains("success")).count();
        assert!(allocations >= 2, "each player allocates a relay address: {log:#?}");
    });
}

#[test]
fn through_the_relay_at_an_emulated_50_ms_round_trip_and_2_percent_loss_every_request_completes_and_matches() {
    let _serial = Serial::lock();
    if !coturn_installed() {
        return;
    }
    in_namespace("turn::through_the_relay_at_an_emulated_50_ms_round_trip_and_2_percent_loss_every_request_completes_and_matches", || {
        let (_turn, _signaling) = relay_and_signaling();
        // Every packet between the players crosses the impairment relay twice (the sender's way
        // up to coturn, the receiver's way down): 12.5 ms each way there is a 50 ms round trip,
        // and 1 % loss each way about 2 % per trip.
        let way = Impairment { delay: Duration::from_micros(12_500), jitter: Duration::from_millis(2), loss: 0.01, rate_bps: Some(50_000_000) };
        let relay = impaired_path(way);
        let server_args = ["--role", "server", "--room", "ws://10.2.0.1:3536/test", "--key", KEY, "--plan", INT8_PLAN, "--lifetime-s", "150", "--owner", OWNER_PUBLIC];
        let _server = relayed_peer(2, &server_args);
        let asker_args = ["--role", "asker", "--room", "ws://10.1.0.1:3536/test", "--key", KEY, "--plan", INT8_PLAN, "--rounds", "2", "--servers", "1", "--lifetime-s", "150"];
        let asker = relayed_peer(1, &[&asker_args[..], &["--owner-key", OWNER_SECRET]].concat());
        let (events, err) = asker.finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_eq!(json["requests"], 20, "{json}");
        assert_eq!(json["matches_single_peer"], 20, "{json}");
        assert_eq!(json["lost"], 0, "{json}");
        let dropped = *relay.dropped.lock().unwrap();
        eprintln!("50 ms RTT, 2 % loss: median {} ms, p95 {} ms; the relay dropped {dropped:?} packets (up, down)", json["median_ms"], json["p95_ms"]);
        assert!(dropped.0 + dropped.1 > 0, "the relay lost packets as told");
        // The round trip is on the path: no request is faster than one trip there and back.
        assert!(json["median_ms"].as_f64() > Some(50.0), "{json}");
    });
}

#[test]
fn a_two_second_blackout_of_the_path_between_two_players_loses_no_request_and_the_room_carries_on() {
    let _serial = Serial::lock();
    if !coturn_installed() {
        return;
    }
    in_namespace("turn::a_two_second_blackout_of_the_path_between_two_players_loses_no_request_and_the_room_carries_on", || {
        let (_turn, _signaling) = relay_and_signaling();
        // 20 ms round trips through the impairment relay, which goes dark for 2 s while the
        // asker keeps two requests in flight; it asks for 30 s in all.
        let way = Impairment { delay: Duration::from_millis(5), ..Impairment::NONE };
        let relay = impaired_path(way);
        let server_args = ["--role", "server", "--room", "ws://10.2.0.1:3536/test", "--key", KEY, "--plan", INT8_PLAN, "--lifetime-s", "150", "--owner", OWNER_PUBLIC];
        let _server = relayed_peer(2, &server_args);
        let asker_args = ["--role", "asker", "--room", "ws://10.1.0.1:3536/test", "--key", KEY, "--plan", INT8_PLAN, "--for-s", "30", "--servers", "1", "--lifetime-s", "150"];
        let mut asker = relayed_peer(1, &[&asker_args[..], &["--owner-key", OWNER_SECRET]].concat());
        assert!(asker.wait_for_line(Duration::from_secs(90), |l| l.event().is_some_and(|e| e["event"] == "request")).is_some(), "no request finished");
        relay.black_out(Duration::from_secs(2));
        let (events, err) = asker.finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        let requests = json["requests"].as_u64().unwrap_or(0);
        assert_every_request_matched(&events, json, requests);
        let dropped = *relay.dropped.lock().unwrap();
        assert!(dropped.0 > 0 && dropped.1 > 0, "the blackout dropped packets both ways: {dropped:?}");
        // In order: the server lost in the dark, work in flight then run again, the server
        // trusted again, and a request running on it after that.
        let position = |from: usize, found: &dyn Fn(&Value) -> bool| events.iter().skip(from).position(found).map(|i| i + from);
        let remote = |e: &Value| e["event"] == "request" && e["stages"].as_array().is_some_and(|s| s.iter().any(|s| s["remote"] == true));
        let lost = position(0, &|e| e["event"] == "peer_lost").unwrap_or_else(|| panic!("the server was never lost in the dark: {events:?}"));
        assert!(events.iter().any(|e| e["event"] == "request" && e["reruns"].as_u64() > Some(0)), "no request was in flight in the dark: {events:?}");
        let back = position(lost, &|e| e["event"] == "peer_trusted").unwrap_or_else(|| panic!("the server never came back: {events:?}"));
        assert!(position(back, &remote).is_some(), "no request ran on the server after it came back: {events:?}");
    });
}
