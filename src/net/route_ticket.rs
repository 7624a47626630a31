//! Route tickets: the owner of a request, when it sends a stage input that runs on along a chain
//! of players, signs which request, from which stage, along which route and until when, with its
//! identity key. Each player of the chain checks the ticket and that the input came from the
//! hop before it, so that nobody (a member allowed only to run stages, say) can feed a player an
//! input for someone else's request, or reorder a route.
//!
//! ```text
//! ticket = first_stage u16 | hops u8 | route [16 × hops] | expires_at_ms u64 | signature [64]
//! ```

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use thiserror::Error;

use super::auth::PeerUuid;
use super::token::{IdentityKey, PlayerIdentity, CLOCK_SKEW_MS};

const TICKET_CONTEXT: &[u8] = b"bevy_p2p_inference route ticket v1";

/// How long a ticket is valid after it was signed: longer than any stage may take.
pub const TICKET_LIFETIME_MS: u64 = 120_000;

/// Why a chained stage input's ticket was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    /// A chained input without a ticket.
    #[error("a chained stage input without the owner's route ticket")]
    Missing,
    /// Not signed by the request's owner for this request, or changed since.
    #[error("the route ticket is not the owner's signature for this request")]
    Forged,
    /// The ticket's time is up.
    #[error("the route ticket expired")]
    Expired,
    /// This player does not run this stage on the ticket's route, or the route onward differs.
    #[error("this stage is not this player's on the ticket's route")]
    NotOnRoute,
    /// The input came from another player than the hop before this one.
    #[error("the input did not come from the hop before this one")]
    NotPreviousHop,
}

/// The owner's signature on one chain of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTicket {
    /// The stage the route's first player runs.
    pub first_stage: u16,
    /// Every player of the chain, the first included, in order.
    pub route: Vec<PeerUuid>,
    /// Unix time in milliseconds after which it is void.
    pub expires_at_ms: u64,
    /// The owner's Ed25519 signature over the owner's id, the request and the fields above.
    pub signature: [u8; 64],
}

/// Where a chained stage input stands, as its receiver checks it against the ticket.
pub struct Hop<'a> {
    /// The request's owner.
    pub owner: PeerUuid,
    /// The owner's identity key (from its hello).
    pub owner_identity: IdentityKey,
    /// The request the input names.
    pub request: u64,
    /// The stage the input names.
    pub stage: u16,
    /// The players after this one, as the input names them.
    pub onward: &'a [PeerUuid],
    /// The player that sent the input.
    pub from: PeerUuid,
    /// This player.
    pub receiver: PeerUuid,
}

impl RouteTicket {
    /// The owner `owner`'s ticket, signed with its `identity`, for `request` from `first_stage`
    /// along `route`, valid until `expires_at_ms`.
    pub fn sign(identity: &PlayerIdentity, owner: PeerUuid, request: u64, first_stage: u16, route: Vec<PeerUuid>, expires_at_ms: u64) -> Self {
        let mut ticket = Self { first_stage, route, expires_at_ms, signature: [0; 64] };
        ticket.signature = identity.signing_key().sign(&ticket.signed_bytes(owner, request)).to_bytes();
        ticket
    }

    fn signed_bytes(&self, owner: PeerUuid, request: u64) -> Vec<u8> {
        let route: Vec<u8> = self.route.iter().flat_map(|p| p.0).collect();
        [TICKET_CONTEXT, &owner.0, &request.to_le_bytes(), &self.first_stage.to_le_bytes(), &[self.route.len() as u8], &route, &self.expires_at_ms.to_le_bytes()].concat()
    }

    /// Checks `hop` against the ticket at `now_ms`: the owner's signature, the expiry, that
    /// this stage is the receiver's on the route with the same route onward, and that the input
    /// came from the hop before (the owner, for the route's first player).
    pub fn check(&self, hop: &Hop, now_ms: u64) -> Result<(), TicketError> {
        let key = VerifyingKey::from_bytes(&hop.owner_identity.0).map_err(|_| TicketError::Forged)?;
        // The owner and the request are signed in: a ticket of another request, or presented
        // as another owner's, does not verify.
        key.verify(&self.signed_bytes(hop.owner, hop.request), &Signature::from_bytes(&self.signature)).map_err(|_| TicketError::Forged)?;
        if now_ms > self.expires_at_ms.saturating_add(CLOCK_SKEW_MS) {
            return Err(TicketError::Expired);
        }
        let position = hop.stage.checked_sub(self.first_stage).map(usize::from).filter(|&i| self.route.get(i) == Some(&hop.receiver)).ok_or(TicketError::NotOnRoute)?;
        if self.route[position + 1..] != *hop.onward {
            return Err(TicketError::NotOnRoute);
        }
        let previous = if position == 0 { hop.owner } else { self.route[position - 1] };
        if hop.from != previous {
            return Err(TicketError::NotPreviousHop);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: PeerUuid = PeerUuid([1; 16]);
    const B: PeerUuid = PeerUuid([2; 16]);
    const C: PeerUuid = PeerUuid([3; 16]);
    const D: PeerUuid = PeerUuid([4; 16]);

    fn hop(identity: &PlayerIdentity, stage: u16, onward: &[PeerUuid], from: PeerUuid, receiver: PeerUuid) -> Hop<'static> {
        Hop { owner: OWNER, owner_identity: identity.public(), request: 42, stage, onward: onward.to_vec().leak(), from, receiver }
    }

    #[test]
    fn each_hop_of_the_signed_route_checks_out_and_nothing_else_does() {
        let owner = PlayerIdentity::generate().unwrap();
        let ticket = RouteTicket::sign(&owner, OWNER, 42, 1, vec![B, C, D], 10_000);
        assert_eq!(ticket.check(&hop(&owner, 1, &[C, D], OWNER, B), 0), Ok(()));
        assert_eq!(ticket.check(&hop(&owner, 2, &[D], B, C), 0), Ok(()));
        assert_eq!(ticket.check(&hop(&owner, 3, &[], C, D), 10_000 + CLOCK_SKEW_MS), Ok(()));
        assert_eq!(ticket.check(&hop(&owner, 3, &[], B, D), 0), Err(TicketError::NotPreviousHop), "B skipped C");
        assert_eq!(ticket.check(&hop(&owner, 2, &[D], OWNER, C), 0), Err(TicketError::NotPreviousHop));
        assert_eq!(ticket.check(&hop(&owner, 2, &[], B, C), 0), Err(TicketError::NotOnRoute), "the route onward cut short");
        assert_eq!(ticket.check(&hop(&owner, 1, &[C, D], OWNER, C), 0), Err(TicketError::NotOnRoute), "another player's stage");
        assert_eq!(ticket.check(&hop(&owner, 0, &[C, D], OWNER, B), 0), Err(TicketError::NotOnRoute));
        assert_eq!(ticket.check(&hop(&owner, 3, &[], C, D), 10_001 + CLOCK_SKEW_MS), Err(TicketError::Expired));
        let other_request = Hop { request: 43, ..hop(&owner, 1, &[C, D], OWNER, B) };
        assert_eq!(ticket.check(&other_request, 0), Err(TicketError::Forged));
        let someone_else = PlayerIdentity::generate().unwrap();
        assert_eq!(ticket.check(&hop(&someone_else, 1, &[C, D], OWNER, B), 0), Err(TicketError::Forged));
        let rerouted = RouteTicket { route: vec![B, D, C], ..ticket.clone() };
        assert_eq!(rerouted.check(&hop(&owner, 2, &[C], B, D), 0), Err(TicketError::Forged));
        let extended = RouteTicket { expires_at_ms: u64::MAX, ..ticket };
        assert_eq!(extended.check(&hop(&owner, 1, &[C, D], OWNER, B), 0), Err(TicketError::Forged));
    }
}
