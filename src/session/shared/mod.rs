//! Shared tensor components. A game puts a [`PublishedTensor`] on an entity to share a tensor
//! with every player of the room under a name (a player's latest prediction, an embedding of
//! what its NPC sees). Every other player gets it as a [`RemoteTensor`] on an entity of its own
//! for (owner, name), and a [`RemoteTensorChanged`] trigger on that entity with each new value.
//!
//! Values travel over the session's links (authenticated, sealed, chunked), encoded as the
//! dtype the publisher picks. Latest wins ([`SharedOutbox`]): a tensor changed every frame
//! keeps at most one value on its way to each player. A player that joins late gets the
//! current values. Only the owner's values are taken (the link refuses others'), and only
//! those [`SharedTensorRules`] allow ([`SharedInbox`]); a refused value is reported as a
//! [`super::SessionProblem::SharedTensorRefused`] naming the player. When a player leaves, its
//! tensors' entities are despawned.

mod inbox;
mod outbox;

use std::collections::HashMap;

use bevy::prelude::*;

pub use inbox::{SharedInbox, SharedRefusal, SharedTensorRules};
pub use outbox::{DueValue, SharedOutbox};

use super::{PolledEvents, SessionProblem};
use crate::net::session::PeerSession;
use crate::net::{Direction, SendError, SentTensor, SessionEvent, SharedKey, MAX_SHARED_NAME};
use crate::tensor::{Tensor, TransferDtype};

/// Shares `tensor` with every player of the room under `name`: put it on an entity, and change
/// it (a new value) whenever the game likes. Names are this player's own (another player's
/// tensor of the same name is a different one); one entity per name.
#[derive(Component, Clone, Debug, PartialEq)]
pub struct PublishedTensor {
    /// The name it is shared under (at most [`crate::net::MAX_SHARED_NAME`] bytes).
    pub name: String,
    /// The value.
    pub tensor: Tensor,
    /// How it travels: f32 exactly, f16 or int8 (smaller, rounded).
    pub dtype: TransferDtype,
}

/// Another player's shared tensor, on an entity this player's session keeps for it.
#[derive(Component, Clone, Debug, PartialEq)]
pub struct RemoteTensor {
    /// Whose it is and its name.
    pub key: SharedKey,
    /// The owner's version of this value (each new value counts up).
    pub version: u64,
    /// The value, as it arrived (rounded by `dtype` where that is lossy).
    pub tensor: Tensor,
    /// How it travelled.
    pub dtype: TransferDtype,
}

/// Triggered on a [`RemoteTensor`]'s entity when a new value of it arrives.
#[derive(EntityEvent, Clone, Debug)]
pub struct RemoteTensorChanged {
    /// The entity holding the [`RemoteTensor`].
    pub entity: Entity,
    /// Whose tensor and its name.
    pub key: SharedKey,
    /// The new value's version.
    pub version: u64,
}

/// What this player shares and holds of the others' shared tensors.
#[derive(Resource)]
pub struct SharedTensors {
    outbox: SharedOutbox,
    inbox: SharedInbox,
    /// The values shared now, by name.
    published: HashMap<String, (Tensor, TransferDtype)>,
    /// The name each publishing entity shares under.
    names: HashMap<Entity, String>,
    /// The entity of each of the others' tensors.
    remote: HashMap<SharedKey, Entity>,
    /// Values of the others' tensors taken since joining.
    pub updates_received: u64,
}

impl SharedTensors {
    pub(super) fn new(rules: SharedTensorRules) -> Self {
        Self { outbox: SharedOutbox::default(), inbox: SharedInbox::new(rules), published: HashMap::new(), names: HashMap::new(), remote: HashMap::new(), updates_received: 0 }
    }

    /// The entity holding `key`'s value, once one has arrived.
    pub fn entity(&self, key: &SharedKey) -> Option<Entity> {
        self.remote.get(key).copied()
    }

    fn withdraw(&mut self, entity: Entity) {
        if let Some(name) = self.names.remove(&entity) {
            self.published.remove(&name);
            self.outbox.withdrawn(&name);
        }
    }
}

/// Takes the game's new, changed and removed [`PublishedTensor`]s.
pub(super) fn publish_shared_tensors(
    mut shared: ResMut<SharedTensors>,
    published: Query<(Entity, Ref<PublishedTensor>)>,
    mut removed: RemovedComponents<PublishedTensor>,
    mut problems: MessageWriter<SessionProblem>,
) {
    for entity in removed.read() {
        shared.withdraw(entity);
    }
    for (entity, tensor) in &published {
        if !tensor.is_changed() {
            continue;
        }
        if shared.names.get(&entity).is_some_and(|name| *name != tensor.name) {
            shared.withdraw(entity);
        }
        if tensor.name.len() > MAX_SHARED_NAME {
            problems.write(SessionProblem::SharedNameTooLong(tensor.name.clone()));
            continue;
        }
        shared.names.insert(entity, tensor.name.clone());
        shared.published.insert(tensor.name.clone(), (tensor.tensor.clone(), tensor.dtype));
        shared.outbox.changed(&tensor.name);
    }
}

/// Keeps the others up to date with this player's shared tensors and takes theirs: players
/// joining and leaving, values sent and failed, values arrived; then sends what is due.
pub(super) fn exchange_shared_tensors(
    mut commands: Commands,
    mut shared: ResMut<SharedTensors>,
    mut session: Option<ResMut<PeerSession>>,
    polled: Res<PolledEvents>,
    mut problems: MessageWriter<SessionProblem>,
) {
    let shared = &mut *shared;
    for event in &polled.0 {
        match event {
            SessionEvent::PeerTrusted { peer, .. } => shared.outbox.peer_joined(*peer),
            SessionEvent::PeerLost { peer, .. } => {
                shared.outbox.peer_left(*peer);
                for key in shared.inbox.forget_owner(*peer) {
                    if let Some(entity) = shared.remote.remove(&key) {
                        commands.entity(entity).despawn();
                    }
                }
            }
            SessionEvent::TensorSent { tensor, .. } => {
                if let Some(key) = &tensor.shared {
                    shared.outbox.sent(tensor.peer, &key.name, tensor.request);
                }
            }
            SessionEvent::SendFailed { tensor, error } => {
                let Some(key) = &tensor.shared else { continue };
                problems.write(SessionProblem::CannotShare { peer: tensor.peer, name: key.name.clone(), error: error.clone() });
                match error {
                    // The transport stopped for a moment: the newest value is due again.
                    SendError::SocketClosed => shared.outbox.failed(tensor.peer, &key.name, tensor.request),
                    // This value cannot go (too large for the wire): the next one may.
                    _ => shared.outbox.sent(tensor.peer, &key.name, tensor.request),
                }
            }
            SessionEvent::Tensor(received) if received.direction == Direction::Shared => {
                let Some(key) = received.header.shared.clone() else { continue };
                let (version, tensor) = (received.shared.request, &received.shared.tensor);
                if let Err(reason) = shared.inbox.accept(&key, version, tensor.shape()) {
                    problems.write(SessionProblem::SharedTensorRefused { peer: received.from, name: key.name, reason });
                    continue;
                }
                shared.updates_received += 1;
                let value = RemoteTensor { key: key.clone(), version, tensor: tensor.clone(), dtype: received.shared.dtype };
                let entity = match shared.remote.get(&key) {
                    Some(&entity) => {
                        commands.entity(entity).insert(value);
                        entity
                    }
                    None => {
                        let entity = commands.spawn(value).id();
                        shared.remote.insert(key.clone(), entity);
                        entity
                    }
                };
                commands.trigger(RemoteTensorChanged { entity, key, version });
            }
            _ => {}
        }
    }
    let Some(session) = session.as_deref_mut() else { return };
    let Some(owner) = session.id() else { return };
    for DueValue { peer, name, version } in shared.outbox.due() {
        let Some((tensor, dtype)) = shared.published.get(&name) else { continue };
        let sent = SentTensor {
            peer,
            request: version,
            stage: 0,
            direction: Direction::Shared,
            onward: None,
            trace: Vec::new(),
            shared: Some(SharedKey { owner, name: name.clone() }),
            collective: None,
        };
        if let Err(error) = session.send_tensor(sent, tensor.clone(), *dtype) {
            shared.outbox.failed(peer, &name, version);
            problems.write(SessionProblem::CannotShare { peer, name, error });
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
