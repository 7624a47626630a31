//! The game page (`?mode=game`): Bevy draws into the page's canvas, a simple scene whose colour
//! follows the latest prediction, with the inspector overlay over it.

use bevy::asset::AssetPlugin;
use bevy::prelude::*;

/// Fashion-MNIST class names, in label order (the overlay's labels).
#[cfg(feature = "canvas")]
const CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Adds the windowed plugins drawing into `#game`, the overlay and the scene; false when this
/// build has no canvas support.
pub fn add_game(app: &mut App, assets: AssetPlugin) -> bool {
    #[cfg(feature = "canvas")]
    {
        let window = Window {
            title: "bevy_p2p_inference".into(),
            canvas: Some("#game".into()),
            fit_canvas_to_parent: true,
            ..default()
        };
        app.add_plugins(DefaultPlugins.set(assets).set(WindowPlugin { primary_window: Some(window), ..default() }))
            .add_plugins(bevy_p2p_inference::InferenceOverlayPlugin { class_names: CLASSES.iter().map(|s| s.to_string()).collect(), ..default() })
            .add_systems(Startup, |mut commands: Commands| {
                commands.spawn(Camera2d);
            })
            .add_observer(tint_by_class);
        true
    }
    #[cfg(not(feature = "canvas"))]
    {
        let _ = (app, assets);
        false
    }
}

/// The scene: the background takes a colour per predicted class.
#[cfg(feature = "canvas")]
fn tint_by_class(ready: On<bevy_p2p_inference::PredictionReady>, mut clear: ResMut<ClearColor>) {
    let class = ready.prediction.top_k.first().map_or(0, |t| t.0);
    clear.0 = Color::hsl(class as f32 * 36.0, 0.35, 0.22);
}
