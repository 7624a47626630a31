//! The network layer: keys and tokens, the wire codec, reassembly of chunked tensors, latency
//! statistics, and (feature `p2p`) the session over a matchbox WebRTC socket. Apart from the
//! session's Bevy resource, nothing here knows about ECS.

pub mod auth;
pub mod codec;
pub mod latency;
pub mod reassembly;
#[cfg(feature = "p2p")]
pub mod session;

pub use auth::{CapabilityToken, PeerUuid, Permissions, RoomKeys};
pub use codec::{decode_frame, encode_frame, Capabilities, Direction, FrameError, Hello, Message, ReplayGuard, TensorChunk, TensorHeader};
pub use latency::RttStats;
pub use reassembly::{ChunkError, Reassembler, ReassemblyLimits, ReceivedTensor};
