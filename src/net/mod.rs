//! The network layer, sans IO apart from one adapter: keys and tokens, the wire codec,
//! reassembly of chunked tensors, latency statistics, the per-peer link state machine
//! ([`Links`]), and (feature `p2p`) [`session::PeerSession`], which connects the links to a
//! matchbox WebRTC socket. Nothing here knows about ECS; within the crate it builds on `tensor`
//! alone.

pub mod auth;
pub mod codec;
mod collective_tag;
mod credentials;
mod hello;
mod ice;
mod lane;
pub mod latency;
mod pake;
mod peer_link;
mod rate_limit;
mod route_ticket;
mod reconnect;
mod room_key;
mod seal;
#[cfg(all(feature = "p2p", not(target_arch = "wasm32")))]
mod signaller;
mod token;
mod wire;
mod link_events;
pub mod links;
pub mod reassembly;
#[cfg(feature = "p2p")]
pub mod session;
#[cfg(feature = "p2p")]
mod transport;

pub use auth::{LinkKeys, PeerUuid, Permissions};
pub use pake::{ExchangeError, ExchangeStep, LinkKeyExchange, EXCHANGE_KIND};
pub use credentials::{RoomAuthority, RoomOwner};
pub use ice::IceServer;
pub use route_ticket::{Hop, RouteTicket, TicketError, TICKET_LIFETIME_MS};
pub use token::{CapabilityToken, IdentityKey, OwnerKey, OwnerPublicKey, PlayerIdentity, TokenError, TokenHolder, CLOCK_SKEW_MS, TOKEN_BYTES};
pub use codec::{decode_frame, encode_frame, seal_frame, Capabilities, Direction, FrameError, Hello, Lane, Message, ReplayGuard, SharedKey, TensorChunk, TensorHeader, MAX_SHARED_NAME};
pub use codec::{CollectiveOp, CollectiveTag, Reduction, MAX_MEMBERS};
pub use latency::RttStats;
pub use room_key::{RoomKey, RoomKeyError};
pub use seal::{TensorCipher, Unsealed, SEAL_TAG_BYTES, SESSION_NONCE_BYTES};
pub use links::{HandshakeError, RevokeError, MAX_UNPROVEN_RESTARTS, RESTART_INTERVAL, LinkSettings, LinkState, Links, LostReason, OutgoingFrame, PeerLink, ReconnectPolicy, RejectReason, SendError, SentTensor, SessionEvent};
pub use reassembly::{ChunkError, Reassembler, ReassemblyLimits, ReceivedTensor, TransferTiming};
