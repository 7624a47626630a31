//! `wss://` signalling: the `signaling` example serving TLS with a certificate the test makes,
//! players that trust it (and one that does not), and a room kept within its size.

use super::certificate::TestCertificate;
use super::*;

const TLS_ROOM: &str = "wss://127.0.0.1:3536/test";

#[test]
fn a_room_forms_over_wss_with_the_game_s_own_certificate_a_player_without_it_never_joins_and_a_full_room_refuses_more() {
    let _serial = Serial::lock();
    in_namespace("signaling_tls::a_room_forms_over_wss_with_the_game_s_own_certificate_a_player_without_it_never_joins_and_a_full_room_refuses_more", || {
        let certificate = TestCertificate::new("p2p");
        let mut signaling = Process::spawn("signaling", &["--port", "3536", "--cert", &certificate.cert(), "--key", &certificate.key(), "--max-room-size", "2"]);
        assert!(signaling.wait_for_line(Duration::from_secs(20), |l| l.text == "signaling on wss://127.0.0.1:3536").is_some(), "the signaling server did not start: {:?}", signaling.seen);
        let trust = ["--signaling-root", &certificate.cert()];
        let server_args = ["--role", "server", "--room", TLS_ROOM, "--key", KEY, "--plan", INT8_PLAN, "--lifetime-s", "150", "--owner", OWNER_PUBLIC];
        let _server = Process::spawn("peer", &[&server_args[..], &trust].concat());
        let asker_args = ["--role", "asker", "--room", TLS_ROOM, "--key", KEY, "--plan", INT8_PLAN, "--rounds", "1", "--servers", "1", "--lifetime-s", "150", "--owner-key", OWNER_SECRET];
        let mut asker = Process::spawn("peer", &[&asker_args[..], &trust].concat());
        assert!(asker.wait_for_line(Duration::from_secs(90), |l| l.event().is_some_and(|e| e["event"] == "request")).is_some(), "no request over wss: {:?}", asker.seen);
        // A third player in a room of two is refused by the server; one that does not trust the
        // certificate never gets past TLS.
        let third_args = ["--role", "server", "--room", TLS_ROOM, "--key", KEY, "--plan", INT8_PLAN, "--lifetime-s", "6", "--owner", OWNER_PUBLIC];
        let _third = Process::spawn("peer", &[&third_args[..], &trust].concat());
        assert!(
            signaling.wait_for_line(Duration::from_secs(20), |l| l.text.contains("refused") && l.text.contains("room \"test\" has 2 players")).is_some(),
            "the third player was let in: {:?}",
            signaling.seen
        );
        // It trusts another certificate (through the same client as the others), not this one.
        let other = TestCertificate::new("p2p-other");
        let stranger_args = ["--role", "server", "--room", "wss://127.0.0.1:3536/other", "--key", KEY, "--plan", INT8_PLAN, "--lifetime-s", "6", "--owner", OWNER_PUBLIC];
        let _stranger = Process::spawn("peer", &[&stranger_args[..], &["--signaling-root", &other.cert()]].concat());
        assert!(signaling.wait_for_line(Duration::from_secs(20), |l| l.text.contains("TLS handshake with")).is_some(), "a player without the certificate: {:?}", signaling.seen);
        let (events, err) = asker.finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_every_request_matched(&events, json, 10);
        // The asker left: its place in the room is free again for the next one.
        let (events, err) = Process::spawn("peer", &[&asker_args[..], &trust].concat()).finish(Duration::from_secs(170));
        let json = summary(&events, &err);
        assert_every_request_matched(&events, json, 10);
    });
}
