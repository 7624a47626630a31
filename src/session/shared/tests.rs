//! The shared tensors' systems in an app without a network: session events in, components,
//! triggers and problems out.

use bevy::prelude::*;

use super::*;
use crate::net::{PeerUuid, ReceivedTensor, TensorHeader, TransferTiming};
use crate::tensor::quant::QuantParams;

const B: PeerUuid = PeerUuid([2; 16]);
const C: PeerUuid = PeerUuid([3; 16]);

fn app(rules: SharedTensorRules) -> App {
    let mut app = App::new();
    app.add_message::<SessionProblem>()
        .init_resource::<PolledEvents>()
        .insert_resource(SharedTensors::new(rules))
        .init_resource::<Changes>()
        .add_systems(Update, (publish_shared_tensors, exchange_shared_tensors).chain())
        .add_observer(|changed: On<RemoteTensorChanged>, mut changes: ResMut<Changes>| changes.0.push((changed.key.clone(), changed.version)));
    app
}

/// Every [`RemoteTensorChanged`] seen.
#[derive(Resource, Default)]
struct Changes(Vec<(SharedKey, u64)>);

fn key(owner: PeerUuid, name: &str) -> SharedKey {
    SharedKey { owner, name: name.into() }
}

/// Version `version` of `owner`'s tensor `name`, arriving from `owner`.
fn value(owner: PeerUuid, name: &str, version: u64, tensor: Tensor) -> SessionEvent {
    let header = TensorHeader {
        request: version,
        stage: 0,
        direction: Direction::Shared,
        dtype: TransferDtype::F32,
        shape: tensor.shape().iter().map(|&d| d as u32).collect(),
        params: QuantParams::NONE,
        total_bytes: (tensor.len() * 4) as u32,
        onward: None,
        trace: Vec::new(),
        shared: Some(key(owner, name)),
        collective: None,
    };
    let shared = crate::tensor::SharedTensor { request: version, stage: 0, tensor, dtype: TransferDtype::F32 };
    SessionEvent::Tensor(ReceivedTensor { from: owner, direction: Direction::Shared, header, shared, transfer: TransferTiming::default() })
}

/// One frame in which the session's poll brought `events`.
fn poll(app: &mut App, events: Vec<SessionEvent>) {
    app.world_mut().resource_mut::<PolledEvents>().0 = events;
    app.update();
    app.world_mut().resource_mut::<PolledEvents>().0.clear();
}

fn probabilities(first: f32) -> Tensor {
    Tensor::new(vec![1, 4], vec![first, 0.25, 0.125, 1.0 - first - 0.375]).unwrap()
}

fn remote(app: &mut App) -> Vec<RemoteTensor> {
    let mut values: Vec<RemoteTensor> = app.world_mut().query::<&RemoteTensor>().iter(app.world()).cloned().collect();
    values.sort_by(|a, b| a.key.cmp(&b.key));
    values
}

fn problems(app: &mut App) -> Vec<SessionProblem> {
    app.world_mut().resource_mut::<Messages<SessionProblem>>().drain().collect()
}

#[test]
fn another_player_s_values_become_a_component_per_owner_and_name_with_a_trigger_each() {
    let mut app = app(SharedTensorRules::default().with_shape("prediction", vec![1, 4]));
    poll(&mut app, vec![value(B, "prediction", 1, probabilities(0.5)), value(C, "prediction", 1, probabilities(0.25))]);
    poll(&mut app, vec![value(B, "prediction", 2, probabilities(0.375))]);
    let held = remote(&mut app);
    assert_eq!(held.len(), 2, "one entity per (owner, name)");
    assert_eq!((held[0].key.clone(), held[0].version, held[0].tensor.clone()), (key(B, "prediction"), 2, probabilities(0.375)));
    assert_eq!((held[1].key.clone(), held[1].version, held[1].tensor.clone()), (key(C, "prediction"), 1, probabilities(0.25)));
    let changes = &app.world().resource::<Changes>().0;
    assert_eq!(changes, &vec![(key(B, "prediction"), 1), (key(C, "prediction"), 1), (key(B, "prediction"), 2)]);
    assert_eq!(app.world().resource::<SharedTensors>().updates_received, 3);
    assert!(problems(&mut app).is_empty());
}

#[test]
fn a_stale_or_mis_shaped_value_is_refused_naming_the_player_and_nothing_is_applied() {
    let mut app = app(SharedTensorRules::default().with_shape("prediction", vec![1, 4]));
    poll(&mut app, vec![value(B, "prediction", 5, probabilities(0.5))]);
    poll(&mut app, vec![value(B, "prediction", 4, probabilities(0.25)), value(B, "prediction", 6, Tensor::zeros(vec![1, 5]))]);
    assert_eq!(
        problems(&mut app),
        vec![
            SessionProblem::SharedTensorRefused { peer: B, name: "prediction".into(), reason: SharedRefusal::Stale { version: 4, held: 5 } },
            SessionProblem::SharedTensorRefused { peer: B, name: "prediction".into(), reason: SharedRefusal::WrongShape { expected: vec![1, 4], got: vec![1, 5] } },
        ]
    );
    let held = remote(&mut app);
    assert_eq!((held.len(), held[0].version, held[0].tensor.clone()), (1, 5, probabilities(0.5)));
}

#[test]
fn a_player_that_leaves_takes_its_tensors_with_it() {
    let mut app = app(SharedTensorRules::default());
    poll(&mut app, vec![value(B, "prediction", 1, probabilities(0.5)), value(C, "prediction", 1, probabilities(0.5))]);
    poll(&mut app, vec![SessionEvent::PeerLost { peer: B, reason: crate::net::LostReason::Silent }]);
    assert_eq!(remote(&mut app).iter().map(|r| r.key.clone()).collect::<Vec<_>>(), vec![key(C, "prediction")]);
    assert_eq!(app.world().resource::<SharedTensors>().entity(&key(B, "prediction")), None);
}

#[test]
fn a_published_name_longer_than_the_wire_allows_is_reported_and_not_shared() {
    let mut app = app(SharedTensorRules::default());
    let name = "n".repeat(crate::net::MAX_SHARED_NAME + 1);
    app.world_mut().spawn(PublishedTensor { name: name.clone(), tensor: probabilities(0.5), dtype: TransferDtype::F32 });
    app.update();
    assert_eq!(problems(&mut app), vec![SessionProblem::SharedNameTooLong(name)]);
}
