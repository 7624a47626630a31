//! Two players' key exchanges talking to each other, and what a listener or an impostor gets.

use super::*;

const LOW: PeerUuid = PeerUuid([1; 16]);
const HIGH: PeerUuid = PeerUuid([2; 16]);

fn key(byte: u8) -> RoomKey {
    RoomKey::from_bytes([byte; 32])
}

/// Delivers every queued frame both ways until neither side has anything to say.
fn converse(low: &mut LinkKeyExchange, high: &mut LinkKeyExchange) -> Vec<Result<ExchangeStep, ExchangeError>> {
    let mut steps = Vec::new();
    loop {
        let (to_high, to_low) = (low.drain_outgoing(), high.drain_outgoing());
        if to_high.is_empty() && to_low.is_empty() {
            return steps;
        }
        steps.extend(to_high.iter().map(|frame| high.receive(frame)));
        steps.extend(to_low.iter().map(|frame| low.receive(frame)));
    }
}

fn same_keys(a: &LinkKeyExchange, b: &LinkKeyExchange) -> bool {
    let (Some(a), Some(b)) = (a.keys(), b.keys()) else { return false };
    a.frame_tag(LOW, HIGH, b"frame") == b.frame_tag(LOW, HIGH, b"frame")
}

#[test]
fn two_holders_of_the_room_key_agree_on_fresh_link_keys_in_one_round_trip() {
    let mut low = LinkKeyExchange::new(&key(7), LOW, HIGH);
    let mut high = LinkKeyExchange::new(&key(7), HIGH, LOW);
    assert!(low.awaits_answer() && !high.awaits_answer(), "the lower id starts");
    let steps = converse(&mut low, &mut high);
    assert_eq!(steps, vec![Ok(ExchangeStep::Agreed), Ok(ExchangeStep::Agreed)]);
    assert!(same_keys(&low, &high));
    assert!(!low.awaits_answer());

    // Another connection between the same players, with the same room key: other keys.
    let mut low_again = LinkKeyExchange::new(&key(7), LOW, HIGH);
    let mut high_again = LinkKeyExchange::new(&key(7), HIGH, LOW);
    converse(&mut low_again, &mut high_again);
    assert!(same_keys(&low_again, &high_again));
    let (first, second) = (low.keys().unwrap(), low_again.keys().unwrap());
    assert_ne!(first.frame_tag(LOW, HIGH, b"frame"), second.frame_tag(LOW, HIGH, b"frame"));
}

#[test]
fn a_player_without_the_room_key_ends_up_with_other_keys_and_nothing_on_the_wire_carries_the_key() {
    let mut low = LinkKeyExchange::new(&key(7), LOW, HIGH);
    let mut impostor = LinkKeyExchange::new(&key(8), HIGH, LOW);
    let start = low.drain_outgoing();
    assert!(start.iter().all(|frame| !frame.windows(32).any(|w| w == *key(7).exchange_password())));
    for frame in &start {
        assert_eq!(impostor.receive(frame), Ok(ExchangeStep::Agreed));
    }
    for frame in impostor.drain_outgoing() {
        assert_eq!(low.receive(&frame), Ok(ExchangeStep::Agreed));
    }
    assert!(low.keys().is_some() && impostor.keys().is_some());
    assert!(!same_keys(&low, &impostor), "SPAKE2 agrees only between holders of one password");
}

#[test]
fn a_repeated_start_gets_the_same_answer_and_a_new_start_is_answered_only_when_asked_and_kept_pending() {
    let mut low = LinkKeyExchange::new(&key(7), LOW, HIGH);
    let mut high = LinkKeyExchange::new(&key(7), HIGH, LOW);
    let start = low.drain_outgoing().remove(0);
    assert_eq!(high.receive(&start), Ok(ExchangeStep::Agreed));
    let answer = high.drain_outgoing();
    assert_eq!(high.receive(&start), Ok(ExchangeStep::Repeated), "its answer was lost");
    assert_eq!(high.drain_outgoing(), answer, "answered alike, so either copy finishes the start");
    assert_eq!(low.receive(&answer[0]), Ok(ExchangeStep::Agreed));
    assert_eq!(low.receive(&answer[0]), Ok(ExchangeStep::Repeated));
    assert!(same_keys(&low, &high));

    // The low player's transport connected the link again: a new start. The answering side
    // neither answers it nor computes anything on its own (a stranger's second guess)...
    let mut low = LinkKeyExchange::new(&key(7), LOW, HIGH);
    let again = low.drain_outgoing().remove(0);
    assert_eq!(high.receive(&again), Ok(ExchangeStep::NewStart));
    assert!(high.drain_outgoing().is_empty() && high.pending_keys().is_none());
    // ...until its caller answers it: the old keys stay until the new ones are adopted.
    high.answer_again(&again).unwrap();
    assert_eq!(low.receive(&high.drain_outgoing()[0]), Ok(ExchangeStep::Agreed));
    assert!(!same_keys(&low, &high), "the agreed keys stay until a frame verifies under the new ones");
    assert_eq!(low.keys().unwrap().frame_tag(LOW, HIGH, b"x"), high.pending_keys().unwrap().frame_tag(LOW, HIGH, b"x"));
    high.adopt();
    assert!(same_keys(&low, &high) && high.pending_keys().is_none());
    assert!(matches!(low.answer_again(&again), Err(ExchangeError::Refused(_))), "the starting side answers no start");
}

#[test]
fn malformed_or_wrong_side_messages_are_refused_and_the_starter_keeps_waiting() {
    let mut low = LinkKeyExchange::new(&key(7), LOW, HIGH);
    let mut high = LinkKeyExchange::new(&key(7), HIGH, LOW);
    let start = low.drain_outgoing().remove(0);
    assert_eq!(high.receive(&start[..20]), Err(ExchangeError::Malformed));
    let mut old_version = start.clone();
    old_version[2] = PROTOCOL_VERSION - 1;
    assert_eq!(high.receive(&old_version), Err(ExchangeError::Malformed));
    let mut not_a_point = start.clone();
    // y = 0x0202..02 is not the y of any point on the curve.
    not_a_point[5..].fill(2);
    assert!(matches!(high.receive(&not_a_point), Err(ExchangeError::Refused(_))));
    // The starter's own message reflected back to it is from the wrong side.
    assert!(matches!(low.receive(&start), Err(ExchangeError::Refused(_))));
    assert!(low.awaits_answer() && low.keys().is_none() && high.keys().is_none());
    // It waits on under a fresh start, which the honest peer answers.
    let steps = converse(&mut low, &mut high);
    assert_eq!(steps, vec![Ok(ExchangeStep::Agreed), Ok(ExchangeStep::Agreed)]);
    assert!(same_keys(&low, &high));
}
