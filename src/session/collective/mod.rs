//! Collectives over the room: broadcast, all-gather, all-reduce and scatter of tensors. A game
//! puts a [`CollectiveRequest`] on an entity; every player of the room puts one with the same
//! name and operation on one of its own (the n-th request of a name on each player is one
//! collective: its round). The members are this player and every player that asks (a
//! [`super::PeerRole::Player`] or `Spectator`: a dedicated `Server` takes no part) that it
//! trusts when its request starts; every member must count the same ones, or the collective
//! fails with a [`CollectiveError::Disagreement`] naming the player.
//!
//! Each member sends its part to the members that need it, over the session's links (sealed,
//! authenticated, as the request's dtype; a player's own part is rounded the same way, so that
//! every member combines the same values). The result is computed on each member's CPU in the
//! order of the players' ids ([`CollectiveRun`]), so every member that gets one gets the same
//! bits. It arrives as a [`CollectiveResult`] on the request's entity and a [`CollectiveDone`]
//! trigger; a failure as a [`CollectiveFailed`] component and trigger. If a member leaves before
//! its part arrives, or parts are missing after [`super::PeerSessionPlugin::collective_timeout`],
//! the collective fails on the players still waiting (it never gives a result over fewer
//! players: those that had the leaver's part would disagree with those that had not).

mod early;
mod run;

use std::collections::HashMap;
use std::time::Duration;

use bevy::platform::time::Instant;
use bevy::prelude::*;

pub use early::{EarlyPart, EarlyParts, PartRefusal, MAX_EARLY_PARTS};
pub use run::{CollectiveError, CollectiveRun, Part};

use super::spot_check::as_sent;
use super::{PolledEvents, SessionProblem};
use crate::net::session::PeerSession;
use crate::net::{CollectiveOp, Direction, PeerUuid, Permissions, SentTensor, SessionEvent, SharedKey, MAX_SHARED_NAME};
use crate::tensor::{Tensor, TransferDtype};

/// Asks the room for a collective (see the module documentation).
#[derive(Component, Clone, Debug, PartialEq)]
pub struct CollectiveRequest {
    /// Its name (at most [`MAX_SHARED_NAME`] bytes), the same on every member.
    pub name: String,
    /// The operation, the same on every member.
    pub op: CollectiveOp,
    /// This player's input, where the operation reads it (every member's for all-gather and
    /// all-reduce, the root's for broadcast and scatter).
    pub input: Option<Tensor>,
    /// How the parts travel: f32 exactly, f16 or int8 (rounded, on every member alike).
    pub dtype: TransferDtype,
}

/// A collective's result, on its request's entity.
#[derive(Component, Clone, Debug, PartialEq)]
pub struct CollectiveResult {
    /// The result.
    pub output: Tensor,
    /// The members, in the order of their ids.
    pub members: Vec<PeerUuid>,
}

/// Why a collective failed, on its request's entity.
#[derive(Component, Clone, Debug, PartialEq)]
pub struct CollectiveFailed {
    /// Why.
    pub error: CollectiveError,
}

/// Triggered on a request's entity when its collective's result is in.
#[derive(EntityEvent, Clone, Debug)]
pub struct CollectiveDone {
    /// The request's entity.
    pub entity: Entity,
    /// The result (also added to the entity).
    pub result: CollectiveResult,
}

/// Triggered on a request's entity when its collective failed.
#[derive(EntityEvent, Clone, Debug)]
pub struct CollectiveFailedEvent {
    /// The request's entity.
    pub entity: Entity,
    /// Why (also added to the entity).
    pub error: CollectiveError,
}

/// Marks a request whose collective has started.
#[derive(Component)]
pub(super) struct Started;

/// A collective in progress on this player.
struct Running {
    entity: Entity,
    run: CollectiveRun,
    started: Instant,
}

/// This player's collectives.
#[derive(Resource)]
pub struct Collectives {
    timeout: Duration,
    /// Rounds started per name.
    rounds: HashMap<String, u64>,
    /// By (name, round).
    running: HashMap<(String, u64), Running>,
    /// Parts for collectives not started here yet, bounded in count, bytes and age.
    early: EarlyParts,
}

impl Collectives {
    /// Collectives that fail after `timeout`, keeping at most `max_early_bytes` of parts for
    /// collectives not started here (each for at most `timeout`).
    pub(super) fn new(timeout: Duration, max_early_bytes: usize) -> Self {
        Self { timeout, rounds: HashMap::new(), running: HashMap::new(), early: EarlyParts::new(max_early_bytes, timeout) }
    }
}

/// Starts the collectives asked for since the last frame, once the session has an id.
pub(super) fn start_collectives(
    mut commands: Commands,
    mut collectives: ResMut<Collectives>,
    mut session: Option<ResMut<PeerSession>>,
    requests: Query<(Entity, &CollectiveRequest), Without<Started>>,
) {
    let Some(session) = session.as_deref_mut() else { return };
    let Some(own) = session.id() else { return };
    let now = Instant::now();
    for (entity, request) in &requests {
        commands.entity(entity).insert(Started);
        if request.name.len() > MAX_SHARED_NAME {
            fail(&mut commands, entity, CollectiveError::BadInput("a collective's name is longer than the wire allows"));
            continue;
        }
        let mut members: Vec<PeerUuid> = session.links().trusted_with(Permissions::SUBMIT_REQUESTS.union(Permissions::SHARE)).iter().map(|(id, _)| *id).collect();
        members.push(own);
        let input = request.input.as_ref().map(|t| as_sent(t, request.dtype));
        let (run, parts) = match CollectiveRun::start(request.op, own, members, input) {
            Ok(started) => started,
            Err(error) => {
                fail(&mut commands, entity, error);
                continue;
            }
        };
        let round = collectives.rounds.entry(request.name.clone()).or_insert(0);
        *round += 1;
        let key = (request.name.clone(), *round);
        let mut running = Running { entity, run, started: now };
        let mut error = None;
        for Part { to, tensor } in parts {
            let sent = SentTensor {
                peer: to,
                request: key.1,
                stage: 0,
                direction: Direction::Collective,
                onward: None,
                trace: Vec::new(),
                shared: Some(SharedKey { owner: own, name: key.0.clone() }),
                collective: Some(running.run.tag().clone()),
            };
            if session.send_tensor(sent, tensor, request.dtype).is_err() {
                error.get_or_insert(CollectiveError::CannotSend(to));
            }
        }
        for (_, from, tag, tensor) in collectives.early.take(&key) {
            if let Err(refused) = running.run.receive(from, &tag, tensor) {
                error.get_or_insert(refused);
            }
        }
        match error {
            Some(error) => fail(&mut commands, entity, error),
            None => {
                collectives.running.insert(key, running);
            }
        }
    }
}

/// Takes the parts that arrived, notices members that left and collectives out of time, and
/// delivers results and failures.
pub(super) fn advance_collectives(
    mut commands: Commands,
    mut collectives: ResMut<Collectives>,
    polled: Res<PolledEvents>,
    mut problems: MessageWriter<SessionProblem>,
) {
    let collectives = &mut *collectives;
    let mut failed: Vec<((String, u64), CollectiveError)> = Vec::new();
    for event in &polled.0 {
        match event {
            SessionEvent::Tensor(received) if received.direction == Direction::Collective => {
                let (Some(key), Some(tag)) = (&received.header.shared, &received.header.collective) else { continue };
                let id = (key.name.clone(), received.shared.request);
                let tensor = received.shared.tensor.clone();
                match collectives.running.get_mut(&id) {
                    Some(running) => {
                        if let Err(error) = running.run.receive(received.from, tag, tensor) {
                            failed.push((id, error));
                        }
                    }
                    None => {
                        let kept = match collectives.rounds.get(&id.0).is_none_or(|&r| r < id.1) {
                            true => collectives.early.keep((id.clone(), received.from, tag.clone(), tensor), Instant::now()),
                            false => Err(PartRefusal::RoundStarted),
                        };
                        if let Err(reason) = kept {
                            problems.write(SessionProblem::CollectivePartRefused { peer: received.from, name: id.0, round: id.1, reason });
                        }
                    }
                }
            }
            SessionEvent::PeerLost { peer, .. } => {
                failed.extend(collectives.running.iter().filter_map(|(id, running)| Some((id.clone(), running.run.member_left(*peer)?))));
                collectives.early.forget(*peer);
            }
            SessionEvent::SendFailed { tensor, .. } if tensor.direction == Direction::Collective => {
                if let Some(key) = &tensor.shared {
                    failed.push(((key.name.clone(), tensor.request), CollectiveError::CannotSend(tensor.peer)));
                }
            }
            _ => {}
        }
    }
    let now = Instant::now();
    collectives.early.expire(now);
    let timeout = collectives.timeout;
    failed.extend(
        collectives
            .running
            .iter()
            .filter(|(_, running)| now.saturating_duration_since(running.started) > timeout)
            .map(|(id, running)| (id.clone(), CollectiveError::TimedOut { missing: running.run.missing() })),
    );
    for (id, error) in failed {
        if let Some(running) = collectives.running.remove(&id) {
            fail(&mut commands, running.entity, error);
        }
    }
    let done: Vec<(String, u64)> = collectives.running.iter().filter(|(_, r)| r.run.result().is_some()).map(|(id, _)| id.clone()).collect();
    for id in done {
        let running = collectives.running.remove(&id).expect("listed above");
        let output = running.run.result().expect("listed above");
        let result = CollectiveResult { output, members: running.run.tag().members.clone() };
        if let Ok(mut target) = commands.get_entity(running.entity) {
            target.insert(result.clone());
            commands.trigger(CollectiveDone { entity: running.entity, result });
        }
    }
}

fn fail(commands: &mut Commands, entity: Entity, error: CollectiveError) {
    if let Ok(mut target) = commands.get_entity(entity) {
        target.insert(CollectiveFailed { error: error.clone() });
        commands.trigger(CollectiveFailedEvent { entity, error });
    }
}
