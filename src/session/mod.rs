//! [`PeerSessionPlugin`]: splits requests for one model across the players of a matchbox room
//! according to a partition plan. Every player is equal: each owns the requests its game makes
//! (it runs their stage 0 and schedules the rest over the players present now) and runs the
//! stages the others send it. A [`PeerRole`] only restricts that. User code does not change:
//! requests are still [`InferenceRequest`]s and results still [`Prediction`]s.
//!
//! The session's systems run in [`InferenceSystems::Session`] (in `PreUpdate`, after the
//! frame's results are received), one job each: prepare the stages, join the room once
//! calibrated, take local stage results, report problems with stages served for peers (which
//! run and return off the frame: `stage_server`), start the served stages that waited for
//! this frame's budget ([`ServeBudget`]), poll the socket, handle what it reported, and advance the pipeline. They run again in `Last` (stage results,
//! the socket, its events, the pipeline, shared tensors and collectives), so that what arrived
//! during the frame moves on in that frame; each poll's events reach this crate's systems
//! through a resource of their own, and the game through [`PeerSessionEvent`] messages. Image
//! requests for the split model run their stage 0 here, on the image, and the activation travels (`image_requests`).
//!
//! [`InferenceRequest`]: crate::InferenceRequest
//! [`Prediction`]: crate::Prediction

pub mod collective;
pub mod batch_split;
pub mod capacity;
mod image_requests;
pub mod pipeline;
mod problem;
pub mod shared;
mod serve_budget;
mod spot_check;
mod spot_check_tally;
mod split_batches;
mod stage_output;
mod stage_server;
mod state;
mod systems;

use std::time::Duration;

use bevy::prelude::*;

use crate::schedule::InferenceSystems;
use pipeline::{Routing, StealPolicy};
use crate::net::{IceServer, Permissions, RoomAuthority, RoomKey, SessionEvent};
pub use problem::SessionProblem;
pub use serve_budget::{BudgetGate, ServeBudget, ServeBudgetReport};
pub use collective::{CollectiveDone, CollectiveError, CollectiveFailed, CollectiveFailedEvent, CollectiveRequest, CollectiveResult, Collectives};
pub use shared::{PublishedTensor, RemoteTensor, RemoteTensorChanged, SharedTensorRules, SharedTensors};
pub use spot_check_tally::SpotCheckTally;
pub use state::{Distributed, RequestTraffic, StolenWork};

/// What a player does in the session: by default both ask and serve; a role only restricts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerRole {
    /// Asks for predictions (its requests are split across the room) and runs the stages the
    /// others send it: every player of a game.
    #[default]
    Player,
    /// Only runs the stages the others send it (a dedicated server); its own requests, if any,
    /// run whole on its GPU.
    Server,
    /// Only asks: its requests are split across the room, and it runs no stage for anyone (a
    /// spectator, or a device whose GPU should not work for others).
    Spectator,
}

impl PeerRole {
    /// What a player in this role asks the others to let it do.
    pub fn permissions(self) -> Permissions {
        match self {
            PeerRole::Player => Permissions::ALL,
            PeerRole::Server => Permissions::RUN_STAGES.union(Permissions::SHARE),
            PeerRole::Spectator => Permissions::SUBMIT_REQUESTS.union(Permissions::SHARE),
        }
    }

    /// Whether its game's requests are split across the room.
    pub fn asks(self) -> bool {
        self.permissions().contains(Permissions::SUBMIT_REQUESTS)
    }

    /// Whether it runs stages for the others.
    pub fn serves(self) -> bool {
        self.permissions().contains(Permissions::RUN_STAGES)
    }
}

/// How a player spreads the remote stages of its requests over the players.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// In proportion to each player's speed as this player measures it from the stages that
    /// come back (its calibration is only the prior): a player twice as fast gets twice the
    /// stages, and one slowed down gets fewer as soon as its results come back later.
    #[default]
    Measured,
    /// Equal turns for every player, whatever its speed (for comparison).
    Equal,
}

/// Joins a matchbox room and splits requests for [`Self::model`] across its players, as the
/// plan at [`Self::plan`] says.
#[derive(Clone, Debug)]
pub struct PeerSessionPlugin {
    /// Matchbox room URL, e.g. `ws://127.0.0.1:3536/my-room`.
    pub room_url: String,
    /// The room's shared secret ([`RoomKey::generate`], or a passphrase through
    /// [`RoomKey::from_text`]); frames are authenticated and tensors sealed with keys derived
    /// from it.
    pub room_key: RoomKey,
    /// Who decides what each player may do: an open room (the default), this player as the
    /// room's owner, or a member of a room whose owner's public key is given.
    pub authority: RoomAuthority,
    /// This player's role.
    pub role: PeerRole,
    /// Asset path of the model to split.
    pub model: String,
    /// Asset path of the partition plan (`.plan.ron`), loaded through the plan loader.
    pub plan: String,
    /// Requests in flight at once (K; default 2).
    pub max_in_flight: usize,
    /// Peers to wait for: the socket is rebuilt if they do not all arrive in time (default 0:
    /// no expectation).
    pub expected_peers: usize,
    /// A remote stage without an answer for this long is re-run elsewhere (default 2 s).
    pub stage_timeout: Duration,
    /// A request re-run this often without a result (lost peers, rejected data, timeouts)
    /// fails with [`crate::InferenceError::Abandoned`] (default 4).
    pub max_reruns: u32,
    /// Stages this player runs at once for any one peer (default 8); more are dropped, so that
    /// no peer can fill this GPU's queue.
    pub max_served_per_peer: usize,
    /// The largest batch (first axis) of a stage input this player runs for a peer (default
    /// 64); a larger one is dropped, so that no peer can make it cut and compile its model for
    /// ever new batches.
    pub max_served_batch: usize,
    /// One split request in this many (0: never, the default), drawn at random, has every
    /// remote hand-over run again on this GPU (from the last input this player computed
    /// itself) and compared with what the peers returned before it is delivered; a mismatch
    /// excludes the peers of the hand-over that disagrees (where that cannot be told, every
    /// peer of the check) and delivers this GPU's result ([`Distributed::spot_checks`]).
    pub spot_check_every: u32,
    /// A player whose stages time out this often in a row is excluded from the session
    /// (default 3): it may answer heartbeats, but it gets no more work.
    pub max_timeouts: u32,
    /// How the remote stages are spread over the players (default: by measured speed).
    pub placement: Placement,
    /// Whether each of a request's remote stages takes a player of its own, as a chain (the
    /// default), or all run on one player ([`Routing::PerRequest`]: faster on a fast GPU, but
    /// with work stealing a slow player's copies always lose, so that its speed is only ever
    /// bounded, never measured, and it keeps its placed share).
    pub routing: Routing,
    /// The stages are placed again when a player joins or leaves, or when a player's measured
    /// speed has moved by more than this fraction from the speed they were placed by (default
    /// 0.25). Requests in flight finish where they were placed.
    pub replan_drift: f64,
    /// Whether a request with a batch of more than one row may be split across the players,
    /// a slice of rows each in proportion to their measured speed, where that is predicted to
    /// finish before running it whole as a chain (see [`crate::session::batch_split`]).
    /// Off by default: where transfers cost more than compute (a fast GPU, a small model) a
    /// split was measured slower than a chain (BENCHMARKS.md), and the prediction does not
    /// yet weigh the owner's uplink that the slices share.
    pub batch_split: bool,
    /// When another player is predicted to finish a remote hand-over well before its own
    /// players (they are late, or measured slow), it is copied there and the first answer is
    /// used (default: [`StealPolicy::default`]; `None`: never, a late hand-over is re-run only
    /// at [`Self::stage_timeout`]). The straggler's copy still runs where it is.
    pub work_stealing: Option<StealPolicy>,
    /// How much GPU time this player gives the others' stages per frame (default: none set,
    /// every stage starts as it arrives). With a budget, stages beyond it wait for the next
    /// frames, and past [`ServeBudget::max_waiting`] are handed back to their owners, which run
    /// them elsewhere once they are overdue ([`SessionProblem::OverBudget`]).
    pub serve_budget: Option<ServeBudget>,
    /// What this player accepts of the tensors the others share (see [`PublishedTensor`]).
    pub shared_tensors: SharedTensorRules,
    /// A collective still missing parts after this long fails (default 10 s; see
    /// [`CollectiveRequest`]).
    pub collective_timeout: Duration,
    /// Bytes of parts kept for collectives this player has not started yet, from all players
    /// together (default 64 MiB; at most [`collective::MAX_EARLY_PARTS`] parts, each for at
    /// most [`Self::collective_timeout`]); a part beyond it is dropped and reported
    /// ([`SessionProblem::CollectivePartRefused`]).
    pub max_early_collective_bytes: usize,
    /// STUN and TURN servers for ICE (`"stun:host:3478".into()`, or [`IceServer::turn`] /
    /// [`IceServer::turn_rest`] for a relay). Empty by default: host candidates only, which
    /// reach peers on the same machine or network and contact no outside server.
    pub ice_servers: Vec<IceServer>,
    /// Certificates (DER) trusted for a `wss://` room URL besides the web's public roots (the
    /// game's own certificate authority, or a self-signed one in development). Natively only:
    /// in the browser the browser's trust store decides.
    pub signaling_roots: Vec<Vec<u8>>,
}

impl PeerSessionPlugin {
    /// A session in an open room with K = 2, a 2 s stage timeout, at most 4 reruns per request, players
    /// excluded after 3 timeouts in a row, and no STUN server.
    pub fn new(room_url: impl Into<String>, room_key: RoomKey, role: PeerRole, model: impl Into<String>, plan: impl Into<String>) -> Self {
        Self {
            room_url: room_url.into(),
            room_key,
            authority: RoomAuthority::Open,
            role,
            model: model.into(),
            plan: plan.into(),
            max_in_flight: 2,
            expected_peers: 0,
            stage_timeout: Duration::from_secs(2),
            max_reruns: 4,
            max_served_per_peer: 8,
            max_served_batch: 64,
            spot_check_every: 0,
            max_timeouts: 3,
            placement: Placement::Measured,
            routing: Routing::PerStage,
            replan_drift: 0.25,
            serve_budget: None,
            batch_split: false,
            work_stealing: Some(StealPolicy::default()),
            shared_tensors: SharedTensorRules::default(),
            collective_timeout: Duration::from_secs(10),
            max_early_collective_bytes: 64 << 20,
            ice_servers: Vec::new(),
            signaling_roots: Vec::new(),
        }
    }
}

/// Sent for everything the session observes (peers trusted and lost, rejected messages), for
/// logs, tests and the overlay.
#[derive(Message, Clone, Debug)]
pub struct PeerSessionEvent(pub SessionEvent);

/// The events of the session's latest poll, for this crate's own systems: each of them runs
/// after every poll (in `PreUpdate` and again in `Last`) and reads the batch here, so that what
/// a game does with the public [`PeerSessionEvent`]s (draining them, say) cannot take an event
/// from the pipeline, the shared tensors or the collectives.
#[derive(Resource, Default, Debug)]
pub(crate) struct PolledEvents(pub(crate) Vec<SessionEvent>);

impl Plugin for PeerSessionPlugin {
    fn build(&self, app: &mut App) {
        use systems::*;
        app.add_message::<PeerSessionEvent>()
            .add_message::<SessionProblem>()
            .insert_resource(Distributed::new(self.clone()))
            .insert_resource(SharedTensors::new(self.shared_tensors.clone()))
            .insert_resource(Collectives::new(self.collective_timeout, self.max_early_collective_bytes))
            .init_resource::<PolledEvents>()
            .configure_sets(PreUpdate, InferenceSystems::Session.after(InferenceSystems::ReceiveResults))
            .configure_sets(Last, InferenceSystems::Session.after(InferenceSystems::ReceiveResults))
            .add_systems(Startup, load_assets)
            .add_systems(
                PreUpdate,
                (prepare_stages, join_when_calibrated, take_local_stage_results, continue_spot_checks, report_served_stage_problems, release_budgeted_stages, poll_session, handle_session_events, advance_pipeline)
                    .chain()
                    .in_set(InferenceSystems::Session),
            )
            .add_systems(
                PreUpdate,
                (shared::publish_shared_tensors, shared::exchange_shared_tensors, collective::start_collectives, collective::advance_collectives)
                    .chain()
                    .after(poll_session)
                    .in_set(InferenceSystems::Session),
            )
            // Again at the frame's end: what arrived during the frame (a request's last output,
            // a stage's result, a shared value) moves on in this frame, not at the next one's
            // start.
            .add_systems(
                Last,
                (take_local_stage_results, poll_session, handle_session_events, advance_pipeline, shared::exchange_shared_tensors, collective::advance_collectives)
                    .chain()
                    .in_set(InferenceSystems::Session),
            )
            // Requests are claimed where they may be submitted, just before: in PreUpdate after
            // the session's systems (which prepare the stages and deliver predictions whose
            // observers may ask again), and in PostUpdate after the results taken there.
            .configure_sets(PreUpdate, InferenceSystems::SubmitRequests.after(InferenceSystems::Session))
            .add_systems(PreUpdate, (claim_requests, image_requests::claim_image_requests).after(InferenceSystems::Session).before(InferenceSystems::SubmitRequests))
            .add_systems(
                PostUpdate,
                (claim_requests, image_requests::claim_image_requests).after(InferenceSystems::ReceiveResults).before(InferenceSystems::SubmitRequests),
            );
    }
}
