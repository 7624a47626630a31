//! Helpers for tools and tests that drive an app by hand: a headless plugin set, a loop that
//! updates until a prediction arrives, and (feature `fault-injection`) hooks that break things on
//! purpose.

use bevy::prelude::*;

/// Bevy's default plugins without windowing or input: for servers, tools and tests that only
/// need the renderer (runs the app loop with no frame pacing).
pub fn headless_plugins() -> impl PluginGroup {
    DefaultPlugins.set(WindowPlugin {
        primary_window: None,
        exit_condition: bevy::window::ExitCondition::DontExit,
        ..default()
    })
}

/// Breaks things on purpose, to test that failures are reported (feature `fault-injection`).
/// The inference plugin inserts it.
#[cfg(feature = "fault-injection")]
#[derive(Resource, Clone, Default)]
pub struct FaultInjection {
    pub(crate) panic_submission_thread: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) wrong_served_results: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) served_stage_slowdown: std::sync::Arc<std::sync::atomic::AtomicU32>,
    broken_shader: std::sync::Arc<std::sync::Mutex<Option<crate::gpu::KernelFamily>>>,
}

#[cfg(feature = "fault-injection")]
impl FaultInjection {
    /// Makes the render side's submission thread panic when it takes its next job: that job
    /// fails with [`crate::InferenceError::SubmissionThreadLost`] and later ones are recorded by
    /// the render world.
    pub fn panic_submission_thread(&self) {
        self.panic_submission_thread.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Makes every stage this player runs for a peer from now on return a wrong but
    /// well-formed output (every value shifted by one): a key-holding peer that lies, for the
    /// spot checks to catch.
    pub fn serve_wrong_results(&self) {
        self.wrong_served_results.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Makes this player slow on purpose, for tests and demos of capacity-aware scheduling:
    /// every stage it runs for a peer from now on takes `factor` times as long (its output is
    /// held back for `factor - 1` times its run, and the run it reports includes the wait).
    /// Natively only; 0 or 1 turns it off.
    pub fn slow_served_stages(&self, factor: u32) {
        self.served_stage_slowdown.store(factor, std::sync::atomic::Ordering::Release);
    }

    /// Makes the shader of `family` invalid when the kernel library is built (with the first
    /// request): the device refuses its kernels, and requests that need them fail with
    /// [`crate::gpu::GpuError::Refused`] naming the kernel.
    pub fn break_shader(&self, family: crate::gpu::KernelFamily) {
        *self.broken_shader.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(family);
    }

    pub(crate) fn broken_shader(&self) -> Option<crate::gpu::KernelFamily> {
        *self.broken_shader.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why [`update_until_prediction`] returned without a prediction.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The request failed.
    #[error(transparent)]
    Failed(#[from] crate::InferenceError),
    /// No result arrived in time.
    #[error("no result after {0:?}")]
    Timeout(std::time::Duration),
}

/// Runs `app.update()` until the request on `entity` has a prediction or fails: for command-line
/// tools and tests that drive an app by hand. Returns the prediction and the frames it took.
pub fn update_until_prediction(
    app: &mut App,
    entity: Entity,
    timeout: std::time::Duration,
) -> Result<(crate::Prediction, u32), WaitError> {
    update_until_prediction_with(app, entity, timeout, |_| {})
}

/// [`update_until_prediction`], calling `after_update` after every frame (to report a session's
/// events as they happen, say).
pub fn update_until_prediction_with(
    app: &mut App,
    entity: Entity,
    timeout: std::time::Duration,
    mut after_update: impl FnMut(&mut App),
) -> Result<(crate::Prediction, u32), WaitError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut frames = 0;
    loop {
        if let Some(p) = app.world().get::<crate::Prediction>(entity) {
            return Ok((p.clone(), frames));
        }
        if let Some(f) = app.world().get::<crate::InferenceFailed>(entity) {
            return Err(f.error.clone().into());
        }
        if std::time::Instant::now() > deadline {
            return Err(WaitError::Timeout(timeout));
        }
        app.update();
        after_update(app);
        frames += 1;
    }
}
