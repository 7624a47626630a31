//! [`InferenceOverlayPlugin`]: a debug overlay (bevy_egui) showing recent predictions, the peers
//! of the session, the tensors shared in it and per-stage timings; one key toggles it. The widgets are in [`widgets`].

pub mod widgets;

use bevy::prelude::*;
use bevy_egui::{egui, EguiContexts, EguiPlugin, EguiPrimaryContextPass};

use crate::diagnostics::{InferenceDiagnosticsPlugin, InferenceHistory};
use widgets::{overlay_ui, OverlayView, PeerRow, SharedRow, ThumbnailCache};

/// Adds the inspector overlay (and [`InferenceDiagnosticsPlugin`] and `EguiPlugin` if absent).
#[derive(Clone, Debug)]
pub struct InferenceOverlayPlugin {
    /// The key that shows and hides the overlay.
    pub toggle: KeyCode,
    /// Whether it starts visible.
    pub visible: bool,
    /// Class names for the predictions (index = class); numbers are shown where missing.
    pub class_names: Vec<String>,
    /// Where its window sits.
    pub placement: OverlayPlacement,
}

impl Default for InferenceOverlayPlugin {
    fn default() -> Self {
        Self { toggle: KeyCode::F3, visible: true, class_names: Vec::new(), placement: OverlayPlacement::Floating }
    }
}

/// Where the overlay's window sits on the screen (or the camera's target).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverlayPlacement {
    /// Where egui first puts it (the top left), and wherever the player drags it.
    #[default]
    Floating,
    /// In the top right corner, fixed.
    TopRight,
}

/// The overlay's state: whether it is shown and what it labels classes with.
#[derive(Resource, Clone, Debug)]
pub struct InferenceOverlay {
    /// Shown or hidden.
    pub visible: bool,
    /// The toggle key.
    pub toggle: KeyCode,
    /// Class names.
    pub class_names: Vec<String>,
    /// Where its window sits.
    pub placement: OverlayPlacement,
}

/// The peers table as last built from the session (empty without one).
#[derive(Resource, Default, Clone, Debug)]
pub struct PeerRows(pub Vec<PeerRow>);

/// The shared tensors table as last built from the session's components (empty without one).
#[derive(Resource, Default, Clone, Debug)]
pub struct SharedRows(pub Vec<SharedRow>);

impl Plugin for InferenceOverlayPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<EguiPlugin>() {
            app.add_plugins(EguiPlugin::default());
        }
        if !app.is_plugin_added::<InferenceDiagnosticsPlugin>() {
            app.add_plugins(InferenceDiagnosticsPlugin::default());
        }
        app.insert_resource(InferenceOverlay { visible: self.visible, toggle: self.toggle, class_names: self.class_names.clone(), placement: self.placement })
            .init_resource::<PeerRows>()
            .init_resource::<SharedRows>()
            .add_systems(Update, toggle_overlay)
            .add_systems(EguiPrimaryContextPass, draw_overlay);
        #[cfg(feature = "p2p")]
        app.add_systems(Update, (peers::collect_peer_rows, peers::collect_shared_rows));
    }
}

fn toggle_overlay(keys: Option<Res<ButtonInput<KeyCode>>>, mut overlay: ResMut<InferenceOverlay>) {
    if keys.is_some_and(|k| k.just_pressed(overlay.toggle)) {
        overlay.visible = !overlay.visible;
    }
}

fn draw_overlay(
    mut contexts: EguiContexts,
    overlay: Res<InferenceOverlay>,
    history: Res<InferenceHistory>,
    peers: Res<PeerRows>,
    shared: Res<SharedRows>,
    mut thumbnails: Local<ThumbnailCache>,
) -> Result {
    if !overlay.visible {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    let mut window = egui::Window::new("Inference").default_width(460.0);
    if overlay.placement == OverlayPlacement::TopRight {
        window = window.anchor(egui::Align2::RIGHT_TOP, [-8.0, 8.0]);
    }
    window.show(ctx, |ui| {
        let view = OverlayView { history: &history, peers: &peers.0, shared: &shared.0, class_names: &overlay.class_names };
        overlay_ui(ui, view, &mut thumbnails);
        ui.small(format!("{} predictions so far; {:?} hides this", history.total(), overlay.toggle));
    });
    Ok(())
}

#[cfg(feature = "p2p")]
mod peers {
    use bevy::prelude::*;

    use super::{PeerRow, PeerRows, SharedRow, SharedRows};
    use crate::session::{PublishedTensor, RemoteTensor};
    use crate::tensor::Tensor;
    use crate::net::session::PeerSession;
    use crate::net::LinkState;
    use crate::net::Permissions;
    use crate::session::Distributed;
    use crate::schedule::stage_record::Executor;

    /// Rebuilds the peers table from the session, the current placement and the measured speeds.
    pub(super) fn collect_peer_rows(session: Option<Res<PeerSession>>, distributed: Option<Res<Distributed>>, mut rows: ResMut<PeerRows>) {
        let Some(session) = session else { return };
        let now = bevy::platform::time::Instant::now();
        let measured = distributed.as_ref().map_or(Vec::new(), |d| d.measured_speeds());
        let checks = distributed.as_ref().map_or(Vec::new(), |d| d.spot_checks());
        let mut table: Vec<PeerRow> = session
            .links()
            .links()
            .map(|(peer, link)| {
                let planned_share = distributed.as_ref().and_then(|d| d.assignment().shares().iter().find(|(p, _)| *p == peer).map(|(_, share)| *share));
                let measured = measured.iter().find(|m| m.executor == Executor::Peer(peer) && m.samples > 0).map(|m| (m.flops_per_s / 1e9, m.share));
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                let role = match (link.state, link.permissions()) {
                    (LinkState::Trusted, p) if p.contains(Permissions::COORDINATOR) => "player",
                    (LinkState::Trusted, p) if p.contains(Permissions::RUN_STAGES) => "server",
                    (LinkState::Trusted, _) => "spectator",
                    _ => "?",
                };
                PeerRow {
                    id: peer.to_string(),
                    role: role.to_string(),
                    adapter: link.hello.as_ref().map_or("-".to_string(), |h| format!("{} ({})", h.capabilities.adapter, h.capabilities.backend)),
                    rtt_ms: match (link.rtt.median(), link.rtt.p95(), link.rtt.jitter()) {
                        (Some(m), Some(p), j) => Some((ms(m), ms(p), j.map_or(0.0, ms))),
                        _ => None,
                    },
                    last_heard_ms: ms(now.saturating_duration_since(link.last_heard)),
                    planned_share,
                    measured,
                    bytes_in: link.bytes_in,
                    bytes_out: link.bytes_out,
                    auth: match link.state {
                        LinkState::Trusted => "trusted",
                        LinkState::Handshaking => "handshaking",
                        LinkState::Refused => "refused",
                    }
                    .to_string(),
                    rejected: link.rejected,
                    spot_checks: checks.iter().find(|(p, _)| *p == peer).map_or((0, 0), |(_, t)| (t.checks, t.failures)),
                }
            })
            .collect();
        table.sort_by(|a, b| a.id.cmp(&b.id));
        rows.0 = table;
    }

    /// Rebuilds the shared tensors table: this player's own, then the others', by owner and name.
    pub(super) fn collect_shared_rows(published: Query<&PublishedTensor>, remote: Query<&RemoteTensor>, mut rows: ResMut<SharedRows>) {
        let top = |t: &Tensor| t.data().iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1));
        let mut own: Vec<SharedRow> = published
            .iter()
            .map(|p| SharedRow { owner: "you".into(), name: p.name.clone(), version: None, shape: p.tensor.shape().to_vec(), top: top(&p.tensor) })
            .collect();
        own.sort_by(|a, b| a.name.cmp(&b.name));
        let mut others: Vec<&RemoteTensor> = remote.iter().collect();
        others.sort_by(|a, b| a.key.cmp(&b.key));
        own.extend(others.into_iter().map(|r| SharedRow {
            owner: r.key.owner.to_string(),
            name: r.key.name.clone(),
            version: Some(r.version),
            shape: r.tensor.shape().to_vec(),
            top: top(&r.tensor),
        }));
        rows.0 = own;
    }
}
