//! What a request's record says about each of its stages: who ran it and how its time went.
//! A single player's requests have one local stage; a session's split requests one per stage of
//! the partition plan.

use std::time::Duration;

use crate::net::auth::PeerUuid;

/// Who runs a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Executor {
    /// This peer's GPU.
    Local,
    /// Another player's GPU.
    Peer(PeerUuid),
}

impl Executor {
    /// The peer, for a remote executor.
    pub fn peer(self) -> Option<PeerUuid> {
        match self {
            Executor::Local => None,
            Executor::Peer(peer) => Some(peer),
        }
    }
}

impl std::fmt::Display for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Executor::Local => f.write_str("local"),
            Executor::Peer(peer) => write!(f, "peer {peer}"),
        }
    }
}

/// How one stage of a request went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageRecord {
    /// The stage.
    pub stage: usize,
    /// Who ran it.
    pub executor: Executor,
    /// From handing the input over to the output being back at the owner. The stages of
    /// a chain are one hand-over and one result: each of their records holds the chain's span.
    pub duration: Duration,
    /// How the stage's own time went where it ran: its input's transfer there, its queue and
    /// its GPU time, as far as they were measured.
    pub hop: HopTiming,
    /// For the last stage of a remote hand-over, the estimated transfer of its output back to
    /// this player (see [`crate::net::TransferTiming::estimate`]).
    pub returned: Option<Duration>,
    /// For a remote stage, the part of `duration` not spent running the stages it covers
    /// (its own, or its chain's): the transfers between the peers and the waits around them.
    /// `None` where a peer did not report its run time.
    pub transfers: Option<Duration>,
    /// How many stages `duration` covers: 1, or the length of the stage's chain.
    pub span: usize,
}

/// One stage's own time on the player that ran it (the hop into it included), as that player
/// measured it; a part is `None` where it was not measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HopTiming {
    /// The estimated transfer of the stage's input into the peer that ran it, from send to
    /// verified (see [`crate::net::TransferTiming::estimate`]); `None` for a local stage.
    pub network: Option<Duration>,
    /// From the input being ready where the stage ran to its output being read back there.
    pub run: Option<Duration>,
    /// The GPU's part of `run`, from timestamps around the stage's compute passes.
    pub gpu: Option<Duration>,
}

impl HopTiming {
    /// The part of `run` not spent on the GPU: waiting to be submitted, the input's upload and
    /// the output's copy and readback.
    pub fn queue(&self) -> Option<Duration> {
        Some(self.run?.saturating_sub(self.gpu?))
    }
}
