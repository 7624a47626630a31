//! [`InferenceOverlayPlugin`]: a debug overlay (bevy_egui) showing recent predictions, the peers
//! of the session and per-stage timings; one key toggles it. The widgets are in [`widgets`].

pub mod widgets;

use bevy::prelude::*;
use bevy_egui::{egui, EguiContexts, EguiPlugin, EguiPrimaryContextPass};

use crate::diagnostics::{InferenceDiagnosticsPlugin, InferenceHistory};
use widgets::{overlay_ui, PeerRow, ThumbnailCache};

/// Adds the inspector overlay (and [`InferenceDiagnosticsPlugin`] and `EguiPlugin` if absent).
#[derive(Clone, Debug)]
pub struct InferenceOverlayPlugin {
    /// The key that shows and hides the overlay.
    pub toggle: KeyCode,
    /// Whether it starts visible.
    pub visible: bool,
    /// Class names for the predictions (index = class); numbers are shown where missing.
    pub class_names: Vec<String>,
}

impl Default for InferenceOverlayPlugin {
    fn default() -> Self {
        Self { toggle: KeyCode::F3, visible: true, class_names: Vec::new() }
    }
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
}

/// The peers table as last built from the session (empty without one).
#[derive(Resource, Default, Clone, Debug)]
pub struct PeerRows(pub Vec<PeerRow>);

impl Plugin for InferenceOverlayPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<EguiPlugin>() {
            app.add_plugins(EguiPlugin::default());
        }
        if !app.is_plugin_added::<InferenceDiagnosticsPlugin>() {
            app.add_plugins(InferenceDiagnosticsPlugin::default());
        }
        app.insert_resource(InferenceOverlay { visible: self.visible, toggle: self.toggle, class_names: self.class_names.clone() })
            .init_resource::<PeerRows>()
            .add_systems(Update, toggle_overlay)
            .add_systems(EguiPrimaryContextPass, draw_overlay);
        #[cfg(feature = "p2p")]
        app.add_systems(Update, peers::collect_peer_rows);
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
    mut thumbnails: Local<ThumbnailCache>,
) -> Result {
    if !overlay.visible {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    egui::Window::new("Inference").default_width(460.0).show(ctx, |ui| {
        overlay_ui(ui, &history, &peers.0, &overlay.class_names, &mut thumbnails);
        ui.small(format!("{} predictions so far; {:?} hides this", history.total(), overlay.toggle));
    });
    Ok(())
}

#[cfg(feature = "p2p")]
mod peers {
    use bevy::prelude::*;

    use super::{PeerRow, PeerRows};
    use crate::net::session::PeerSession;
    use crate::net::LinkState;
    use crate::net::Permissions;
    use crate::schedule::distributed::Distributed;
    use crate::schedule::pipeline::Executor;

    /// Rebuilds the peers table from the session and the current stage assignment.
    pub(super) fn collect_peer_rows(session: Option<Res<PeerSession>>, distributed: Option<Res<Distributed>>, mut rows: ResMut<PeerRows>) {
        let Some(session) = session else { return };
        let now = bevy::platform::time::Instant::now();
        let mut table: Vec<PeerRow> = session
            .links()
            .links()
            .map(|(peer, link)| {
                let stages = distributed.as_ref().map_or(Vec::new(), |d| {
                    d.assignment().executors.iter().enumerate().filter(|(_, e)| **e == Executor::Peer(peer)).map(|(s, _)| s).collect()
                });
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                let role = match (link.state, link.permissions()) {
                    (LinkState::Trusted, p) if p.contains(Permissions::SUBMIT_REQUESTS) => "coordinator",
                    (LinkState::Trusted, _) => "worker",
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
                    stages,
                    bytes_in: link.bytes_in,
                    bytes_out: link.bytes_out,
                    auth: match link.state {
                        LinkState::Trusted => "trusted",
                        LinkState::Handshaking => "handshaking",
                        LinkState::Refused => "refused",
                    }
                    .to_string(),
                    rejected: link.rejected,
                }
            })
            .collect();
        table.sort_by(|a, b| a.id.cmp(&b.id));
        rows.0 = table;
    }
}
