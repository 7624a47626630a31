//! The first step of every link's handshake ([`LinkKeyExchange`]): SPAKE2 over a password derived
//! from the room key, bound to both players' ids. The two players agree on a fresh secret, and
//! from it on the link's [`LinkKeys`], only if both hold the room key. Nothing before it is
//! authenticated and nothing in it helps a guesser: a listener (or a signaling server in the
//! middle) learns nothing it could test a guess of the room key or passphrase against, and an
//! impostor gets one online guess per connection, after which its first authenticated frame
//! fails and the link is refused. Every frame after the exchange is authenticated under the
//! link's keys, so it also proves, to a fresh challenge, that the sender holds the room key.
//!
//! The player with the lower id starts (SPAKE2's side A) and repeats its message until answered;
//! the other answers each start, the same start with the same answer. A different start from
//! the same peer after keys were agreed is not answered here ([`ExchangeStep::NewStart`]):
//! answering it is a guess the stranger gets, so [`super::Links`] decides, and answers it
//! ([`LinkKeyExchange::answer_again`]) only on a link whose peer has proved the room key, keeping
//! the agreed keys until a frame verifies under the new ones ([`LinkKeyExchange::adopt`]).
//!
//! ```text
//! exchange frame = magic "BP" | version u8 | kind 6 | SPAKE2 message [33]
//! ```

use spake2::{Ed25519Group, Identity, Password, Spake2};
use thiserror::Error;

use super::auth::{LinkKeys, PeerUuid};
use super::room_key::RoomKey;
use super::wire::{MAGIC, PROTOCOL_VERSION};

/// The message kind of a key-exchange frame (the only frame without a MAC).
pub const EXCHANGE_KIND: u8 = 6;
/// Bytes of a SPAKE2 message over Ed25519: its side and a curve point.
pub const EXCHANGE_MESSAGE_BYTES: usize = 33;
const EXCHANGE_FRAME_BYTES: usize = 4 + EXCHANGE_MESSAGE_BYTES;

/// Why a key-exchange message was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeError {
    /// Not a key-exchange frame of this protocol version, or of the wrong length.
    #[error("a malformed key-exchange frame")]
    Malformed,
    /// A message from the wrong side (the peer with the lower id starts), or one that is not
    /// a curve point.
    #[error("a key-exchange message SPAKE2 refuses: {0}")]
    Refused(&'static str),
}

/// What a key-exchange message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeStep {
    /// The link's keys are agreed.
    Agreed,
    /// A repeat of a message already handled (answered again where this player answers).
    Repeated,
    /// A different start from a peer whose keys were agreed: not answered (see
    /// [`LinkKeyExchange::answer_again`]).
    NewStart,
}

/// This player's side of the key exchange with one peer, sans IO: messages in, frames out
/// ([`Self::drain_outgoing`]), and the link's keys once agreed.
pub struct LinkKeyExchange {
    password: Password,
    /// SPAKE2's identities: the two players' ids, the lower first.
    ids: (Identity, Identity),
    side: Side,
    keys: Option<LinkKeys>,
    /// Keys of a new start answered on a proven link, until a frame verifies under them.
    pending: Option<LinkKeys>,
    outgoing: Vec<Vec<u8>>,
}

enum Side {
    /// This player has the lower id: it starts, and finishes with the peer's answer.
    Starts {
        pending: Option<Spake2<Ed25519Group>>,
        start: [u8; EXCHANGE_MESSAGE_BYTES],
    },
    /// This player answers: the start it last answered, and its answer.
    Answers { answered: Option<([u8; EXCHANGE_MESSAGE_BYTES], [u8; EXCHANGE_MESSAGE_BYTES])> },
}

impl LinkKeyExchange {
    /// Begins the exchange between `own` and `peer` in the room of `room_key`. The starting side
    /// queues its first message at once.
    pub fn new(room_key: &RoomKey, own: PeerUuid, peer: PeerUuid) -> Self {
        let (low, high) = if own < peer { (own, peer) } else { (peer, own) };
        let mut exchange = Self {
            password: Password::new(*room_key.exchange_password()),
            ids: (Identity::new(&low.0), Identity::new(&high.0)),
            side: Side::Answers { answered: None },
            keys: None,
            pending: None,
            outgoing: Vec::new(),
        };
        if own < peer {
            let (pending, start) = Spake2::<Ed25519Group>::start_a(&exchange.password, &exchange.ids.0, &exchange.ids.1);
            let start = message_array(&start);
            exchange.side = Side::Starts { pending: Some(pending), start };
            exchange.outgoing.push(exchange_frame(&start));
        }
        exchange
    }

    /// The link's keys, once agreed.
    pub fn keys(&self) -> Option<&LinkKeys> {
        self.keys.as_ref()
    }

    /// Whether this player starts the exchange (it has the lower id).
    pub fn starts(&self) -> bool {
        matches!(self.side, Side::Starts { .. })
    }

    /// The keys of a new start answered by [`Self::answer_again`], not yet adopted.
    pub fn pending_keys(&self) -> Option<&LinkKeys> {
        self.pending.as_ref()
    }

    /// Makes the pending keys the link's keys (a frame verified under them).
    pub fn adopt(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.keys = Some(pending);
        }
    }

    /// Answers a new start (`frame`, reported as [`ExchangeStep::NewStart`]) from a peer that
    /// began the link again; the keys it agrees are pending until [`Self::adopt`].
    pub fn answer_again(&mut self, frame: &[u8]) -> Result<(), ExchangeError> {
        let message = read_exchange_frame(frame)?;
        let Side::Answers { answered } = &mut self.side else { return Err(ExchangeError::Refused("a start sent to the starting side")) };
        let (state, answer) = Spake2::<Ed25519Group>::start_b(&self.password, &self.ids.0, &self.ids.1);
        let secret = state.finish(&message).map_err(refused)?;
        let answer = message_array(&answer);
        *answered = Some((message, answer));
        self.outgoing.push(exchange_frame(&answer));
        self.pending = Some(link_keys(&secret));
        Ok(())
    }

    /// Whether this player is waiting for the answer to its start (and should repeat it now and
    /// then: the peer drops frames until its transport reports this player connected).
    pub fn awaits_answer(&self) -> bool {
        matches!(self.side, Side::Starts { pending: Some(_), .. })
    }

    /// Queues this player's start again, while it awaits the answer.
    pub fn repeat_start(&mut self) {
        if let Side::Starts { pending: Some(_), start } = &self.side {
            self.outgoing.push(exchange_frame(start));
        }
    }

    /// Handles a key-exchange frame from the peer.
    pub fn receive(&mut self, frame: &[u8]) -> Result<ExchangeStep, ExchangeError> {
        let message = read_exchange_frame(frame)?;
        match &mut self.side {
            Side::Starts { pending, start } => {
                let Some(state) = pending.take() else { return Ok(ExchangeStep::Repeated) };
                match state.finish(&message) {
                    Ok(secret) => {
                        self.keys = Some(link_keys(&secret));
                        Ok(ExchangeStep::Agreed)
                    }
                    Err(error) => {
                        // A stray message does not end the wait for the real answer; SPAKE2's
                        // state is spent, so the wait goes on under a fresh start.
                        let (fresh, message) = Spake2::<Ed25519Group>::start_a(&self.password, &self.ids.0, &self.ids.1);
                        *pending = Some(fresh);
                        *start = message_array(&message);
                        self.outgoing.push(exchange_frame(start));
                        Err(refused(error))
                    }
                }
            }
            Side::Answers { answered } => {
                if let Some((start, answer)) = answered
                    && *start == message
                {
                    self.outgoing.push(exchange_frame(answer));
                    return Ok(ExchangeStep::Repeated);
                }
                if self.keys.is_some() {
                    return Ok(ExchangeStep::NewStart);
                }
                let (state, answer) = Spake2::<Ed25519Group>::start_b(&self.password, &self.ids.0, &self.ids.1);
                let secret = state.finish(&message).map_err(refused)?;
                let answer = message_array(&answer);
                *answered = Some((message, answer));
                self.outgoing.push(exchange_frame(&answer));
                self.keys = Some(link_keys(&secret));
                Ok(ExchangeStep::Agreed)
            }
        }
    }

    /// The frames to send the peer since the last call.
    pub fn drain_outgoing(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outgoing)
    }
}

/// Whether `frame` is a key-exchange frame (by its kind byte; it is checked when read).
pub fn is_exchange_frame(frame: &[u8]) -> bool {
    frame.len() >= 4 && frame[0..2] == MAGIC && frame[3] == EXCHANGE_KIND
}

fn exchange_frame(message: &[u8; EXCHANGE_MESSAGE_BYTES]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(EXCHANGE_FRAME_BYTES);
    frame.extend_from_slice(&MAGIC);
    frame.push(PROTOCOL_VERSION);
    frame.push(EXCHANGE_KIND);
    frame.extend_from_slice(message);
    frame
}

fn read_exchange_frame(frame: &[u8]) -> Result<[u8; EXCHANGE_MESSAGE_BYTES], ExchangeError> {
    if frame.len() != EXCHANGE_FRAME_BYTES || !is_exchange_frame(frame) || frame[2] != PROTOCOL_VERSION {
        return Err(ExchangeError::Malformed);
    }
    Ok(message_array(&frame[4..]))
}

fn message_array(message: &[u8]) -> [u8; EXCHANGE_MESSAGE_BYTES] {
    message.try_into().expect("SPAKE2 over Ed25519 sends 33-byte messages")
}

fn link_keys(secret: &[u8]) -> LinkKeys {
    LinkKeys::from_secret(secret.try_into().expect("SPAKE2 over Ed25519 agrees on 32 bytes"))
}

fn refused(error: spake2::Error) -> ExchangeError {
    ExchangeError::Refused(match error {
        spake2::Error::BadSide => "a message from the wrong side",
        spake2::Error::WrongLength => "a message of the wrong length",
        spake2::Error::CorruptMessage => "not a curve point",
    })
}

#[cfg(test)]
#[path = "pake_tests.rs"]
mod tests;
